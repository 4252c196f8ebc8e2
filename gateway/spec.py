"""The gateway's configuration, read from the OpenAPI document and the SAM template it points into.

``load_gateway_spec`` turns ``gateway-config/openapi.yaml`` (API Gateway HTTP API extensions) and
``template.yaml`` (which function each integration's ``${<LogicalId>.Arn}`` names, and that function's
``Handler``) into one immutable ``GatewaySpec``. Anything the local gateway cannot honour faithfully is a
``SpecError`` at start, naming the file and the operation, never a surprise on the first request.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

LOCAL_ACCOUNT_ID = "000000000000"
LOCAL_API_ID = "local"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
ANY_METHOD_KEY = "x-amazon-apigateway-any-method"
FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")
# API Gateway HTTP API's own ceiling on an integration's timeout.
MAX_INTEGRATION_TIMEOUT_MS = 30_000
DEFAULT_WINDOW_SECONDS = 60

_ARN_REFERENCE = re.compile(r"\$\{([A-Za-z0-9]+)\.Arn\}")
_SUB_VARIABLE = re.compile(r"\$\{([^}!]+)\}")


class SpecError(Exception):
    """The OpenAPI document or the template cannot drive the gateway; the message says where and why."""


@dataclass(frozen=True)
class Throttle:
    """At most ``limit`` requests per ``window_seconds``, counted in one bucket per ``scope``."""

    limit: int
    window_seconds: int
    # "*" for the document-wide policy (one bucket shared by every route using it), else the route key
    # of the operation that overrides it (a bucket of that route's own).
    scope: str = "*"

    @property
    def policy(self) -> str:
        """This limit in the ``RateLimit-Policy`` header's syntax."""
        return f"{self.limit};w={self.window_seconds}"


@dataclass(frozen=True)
class Throttling:
    per_ip: Throttle | None = None
    per_user: Throttle | None = None


@dataclass(frozen=True)
class CorsPolicy:
    """API Gateway HTTP API's ``x-amazon-apigateway-cors`` block."""

    allow_origins: tuple[str, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int | None = None
    allow_credentials: bool = False


@dataclass(frozen=True)
class JwtAuthorizerSpec:
    name: str
    issuer: str
    audiences: tuple[str, ...]
    identity_header: str = "authorization"


@dataclass(frozen=True)
class FunctionSpec:
    """A Lambda function of the template, as the gateway starts its instances."""

    logical_id: str
    handler: str
    code_dir: Path | None
    function_name: str
    memory_mb: int = 128
    timeout_seconds: float | None = None


@dataclass(frozen=True)
class Operation:
    """One route of the document: method and path, the function behind it, and its policies."""

    method: str  # upper case, or "ANY"
    path: str
    function: str  # the logical id of the function in the template
    authorizer: str | None = None
    timeout_ms: int = MAX_INTEGRATION_TIMEOUT_MS
    throttling: Throttling = Throttling()
    max_body_bytes: int | None = None

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def protected(self) -> bool:
        return self.authorizer is not None


@dataclass(frozen=True)
class GatewaySpec:
    operations: tuple[Operation, ...]
    functions: Mapping[str, FunctionSpec]
    authorizers: Mapping[str, JwtAuthorizerSpec]
    cors: CorsPolicy | None = None
    max_body_bytes: int | None = None


class _TolerantLoader(yaml.SafeLoader):
    """A SafeLoader that reads CloudFormation short tags (!Ref, !Sub, !GetAtt...) as plain mappings."""


def _construct_tagged(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    name = tag_suffix if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if name == "Fn::GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {name: value}


_TolerantLoader.add_multi_constructor("!", _construct_tagged)


def load_yaml(path: Path) -> Any:
    """A YAML file as plain data; CloudFormation short tags become their long forms."""
    try:
        with path.open(encoding="utf-8") as stream:
            return yaml.load(stream, Loader=_TolerantLoader)  # noqa: S506 - a SafeLoader subclass
    except FileNotFoundError as exc:
        raise SpecError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc


def resolve_intrinsic(value: Any, parameters: Mapping[str, str], where: str) -> Any:
    """``value`` with ``Ref`` and ``Fn::Sub`` replaced by ``parameters``; other intrinsics refused."""
    if isinstance(value, list):
        return [resolve_intrinsic(item, parameters, where) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((name, argument),) = value.items()
        if name == "Ref":
            if argument not in parameters:
                raise SpecError(f"{where}: Ref {argument!r} names no known parameter")
            return parameters[argument]
        if name == "Fn::Sub":
            template, variables = (argument, {}) if isinstance(argument, str) else (argument[0], argument[1])
            scope = {
                **parameters,
                **{k: str(resolve_intrinsic(v, parameters, where)) for k, v in dict(variables).items()},
            }

            def substitute(match: re.Match[str]) -> str:
                if match.group(1) not in scope:
                    raise SpecError(f"{where}: Fn::Sub variable ${{{match.group(1)}}} is not known locally")
                return scope[match.group(1)]

            return _SUB_VARIABLE.sub(substitute, str(template))
        if name.startswith("Fn::"):
            raise SpecError(f"{where}: the intrinsic {name} is not supported by the local gateway")
    return {key: resolve_intrinsic(item, parameters, where) for key, item in value.items()}


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"{where}: expected a positive integer, got {value!r}")
    return value


def _read_throttle(block: Any, where: str, scope: str) -> Throttle | None:
    if block is None:
        return None
    if not isinstance(block, dict):
        raise SpecError(f"{where}: expected {{limit, windowSeconds}}")
    return Throttle(
        limit=_positive_int(block.get("limit"), f"{where}.limit"),
        window_seconds=_positive_int(block.get("windowSeconds", DEFAULT_WINDOW_SECONDS), f"{where}.windowSeconds"),
        scope=scope,
    )


def _read_throttling(block: Any, where: str, scope: str, inherited: Throttling) -> Throttling:
    if block is None:
        return inherited
    if not isinstance(block, dict):
        raise SpecError(f"{where}: x-berth-throttling must be a mapping with perIp and/or perUser")
    per_ip = _read_throttle(block.get("perIp"), f"{where}.perIp", scope)
    per_user = _read_throttle(block.get("perUser"), f"{where}.perUser", scope)
    return Throttling(per_ip=per_ip or inherited.per_ip, per_user=per_user or inherited.per_user)


def _read_cors(block: Any, where: str) -> CorsPolicy | None:
    if block is None:
        return None
    if not isinstance(block, dict):
        raise SpecError(f"{where}: x-amazon-apigateway-cors must be a mapping")

    def strings(key: str) -> tuple[str, ...]:
        values = block.get(key) or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise SpecError(f"{where}.{key}: expected a list of strings")
        return tuple(values)

    max_age = block.get("maxAge")
    return CorsPolicy(
        allow_origins=strings("allowOrigins"),
        allow_methods=tuple(m.upper() for m in strings("allowMethods")),
        allow_headers=tuple(h.lower() for h in strings("allowHeaders")),
        expose_headers=tuple(h.lower() for h in strings("exposeHeaders")),
        max_age=None if max_age is None else int(max_age),
        allow_credentials=bool(block.get("allowCredentials", False)),
    )


def _read_authorizers(
    document: dict[str, Any], parameters: Mapping[str, str], where: str
) -> dict[str, JwtAuthorizerSpec]:
    schemes = ((document.get("components") or {}).get("securitySchemes")) or {}
    authorizers: dict[str, JwtAuthorizerSpec] = {}
    for name, scheme in schemes.items():
        block = (scheme or {}).get("x-amazon-apigateway-authorizer")
        if not block:
            continue
        here = f"{where}: securitySchemes.{name}"
        if block.get("type") != "jwt":
            raise SpecError(f"{here}: only JWT authorizers are supported locally")
        config = resolve_intrinsic(block.get("jwtConfiguration") or {}, parameters, here)
        issuer = config.get("issuer")
        audiences = config.get("audience") or []
        if isinstance(audiences, str):
            audiences = [audiences]
        if not isinstance(issuer, str) or not issuer or not audiences:
            raise SpecError(f"{here}: jwtConfiguration needs an issuer and an audience")
        source = str(block.get("identitySource") or "$request.header.Authorization")
        prefix = "$request.header."
        if not source.startswith(prefix):
            raise SpecError(f"{here}: identitySource must be a request header, got {source!r}")
        authorizers[name] = JwtAuthorizerSpec(
            name=name,
            issuer=issuer,
            audiences=tuple(str(a) for a in audiences),
            identity_header=source[len(prefix) :].lower(),
        )
    return authorizers


def _operation_authorizer(security: Any, authorizers: Mapping[str, JwtAuthorizerSpec], where: str) -> str | None:
    if not security:
        return None
    names = [name for requirement in security for name in (requirement or {})]
    unknown = [name for name in names if name not in authorizers]
    if unknown:
        raise SpecError(f"{where}: security names {unknown}, which is no JWT authorizer of the document")
    if len(set(names)) > 1:
        raise SpecError(f"{where}: one authorizer per operation, got {names}")
    return names[0] if names else None


def _integration_function(operation: dict[str, Any], where: str) -> tuple[str, int]:
    integration = operation.get("x-amazon-apigateway-integration")
    if not isinstance(integration, dict):
        raise SpecError(f"{where}: no x-amazon-apigateway-integration")
    if integration.get("type", "").lower() != "aws_proxy":
        raise SpecError(f"{where}: only aws_proxy (Lambda proxy) integrations are supported")
    if str(integration.get("payloadFormatVersion", "")) != "2.0":
        raise SpecError(f'{where}: payloadFormatVersion must be "2.0"')
    uri = integration.get("uri")
    text = uri.get("Fn::Sub") if isinstance(uri, dict) else uri
    if isinstance(text, list):
        text = text[0]
    match = _ARN_REFERENCE.search(str(text or ""))
    if not match:
        raise SpecError(f"{where}: the integration uri names no function as ${{<LogicalId>.Arn}}")
    timeout_ms = integration.get("timeoutInMillis", MAX_INTEGRATION_TIMEOUT_MS)
    timeout_ms = min(_positive_int(timeout_ms, f"{where}.timeoutInMillis"), MAX_INTEGRATION_TIMEOUT_MS)
    return match.group(1), timeout_ms


def _read_functions(template: Any, template_path: Path, wanted: set[str]) -> dict[str, FunctionSpec]:
    if not isinstance(template, dict) or not isinstance(template.get("Resources"), dict):
        raise SpecError(f"{template_path}: no Resources")
    defaults = ((template.get("Globals") or {}).get("Function")) or {}
    functions: dict[str, FunctionSpec] = {}
    for logical_id in sorted(wanted):
        resource = template["Resources"].get(logical_id)
        where = f"{template_path}: Resources.{logical_id}"
        if not isinstance(resource, dict):
            raise SpecError(
                f"{where}: the OpenAPI document integrates {logical_id}, which the template does not define"
            )
        if resource.get("Type") not in FUNCTION_TYPES:
            raise SpecError(f"{where}: is a {resource.get('Type')}, not a Lambda function")
        properties = {**defaults, **(resource.get("Properties") or {})}
        handler = properties.get("Handler")
        if not isinstance(handler, str) or "." not in handler:
            raise SpecError(f"{where}: Properties.Handler must be 'module.attr'")
        module, _, attribute = handler.rpartition(".")
        code_uri = properties.get("CodeUri")
        code_dir = (
            (template_path.parent / code_uri).resolve() if isinstance(code_uri, str) else template_path.parent.resolve()
        )
        name = properties.get("FunctionName")
        timeout = properties.get("Timeout")
        functions[logical_id] = FunctionSpec(
            logical_id=logical_id,
            handler=f"{module}:{attribute}",
            code_dir=code_dir if code_dir.is_dir() else None,
            function_name=name if isinstance(name, str) else logical_id,
            memory_mb=int(properties.get("MemorySize") or 128),
            timeout_seconds=float(timeout) if isinstance(timeout, int | float) else None,
        )
    return functions


def load_gateway_spec(spec_path: Path, template_path: Path, parameters: Mapping[str, str]) -> GatewaySpec:
    """Read the OpenAPI document and the template; ``parameters`` resolve ``Ref``/``Fn::Sub``."""
    document = load_yaml(spec_path)
    if not isinstance(document, dict) or not isinstance(document.get("paths"), dict):
        raise SpecError(f"{spec_path}: not an OpenAPI document with paths")
    where = str(spec_path)
    authorizers = _read_authorizers(document, parameters, where)
    root_throttling = _read_throttling(
        document.get("x-berth-throttling"), f"{where}: x-berth-throttling", "*", Throttling()
    )
    root_max_body = document.get("x-berth-max-body-bytes")
    if root_max_body is not None:
        root_max_body = _positive_int(root_max_body, f"{where}: x-berth-max-body-bytes")
    root_security = document.get("security")

    operations: list[Operation] = []
    for path, item in document["paths"].items():
        if not isinstance(path, str) or not path.startswith("/") or not isinstance(item, dict):
            raise SpecError(f"{where}: path {path!r} must start with '/' and hold operations")
        for key, operation in item.items():
            if key == ANY_METHOD_KEY:
                method = "ANY"
            elif key in HTTP_METHODS:
                method = key.upper()
            else:
                continue
            route_key = f"{method} {path}"
            here = f"{where}: {route_key}"
            if not isinstance(operation, dict):
                raise SpecError(f"{here}: the operation must be a mapping")
            function, timeout_ms = _integration_function(operation, here)
            max_body = operation.get("x-berth-max-body-bytes", root_max_body)
            operations.append(
                Operation(
                    method=method,
                    path=path,
                    function=function,
                    authorizer=_operation_authorizer(operation.get("security", root_security), authorizers, here),
                    timeout_ms=timeout_ms,
                    throttling=_read_throttling(
                        operation.get("x-berth-throttling"), f"{here}: x-berth-throttling", route_key, root_throttling
                    ),
                    max_body_bytes=None if max_body is None else _positive_int(max_body, f"{here}: max body"),
                )
            )
    if not operations:
        raise SpecError(f"{where}: the document has no operations")
    template = load_yaml(template_path)
    functions = _read_functions(template, template_path, {op.function for op in operations})
    return GatewaySpec(
        operations=tuple(operations),
        functions=functions,
        authorizers=authorizers,
        cors=_read_cors(document.get("x-amazon-apigateway-cors"), f"{where}: x-amazon-apigateway-cors"),
        max_body_bytes=root_max_body,
    )


def _override_throttle(throttle: Throttle | None, limit: int | None, window: int | None) -> Throttle | None:
    if limit is None and window is None:
        return throttle
    if throttle is None:
        if limit is None:
            return None
        return Throttle(limit=limit, window_seconds=window or DEFAULT_WINDOW_SECONDS)
    return dataclasses.replace(
        throttle, limit=limit or throttle.limit, window_seconds=window or throttle.window_seconds
    )


def apply_operator_overrides(
    spec: GatewaySpec,
    *,
    per_ip: int | None,
    per_user: int | None,
    window_seconds: int | None,
    default_max_body_bytes: int,
) -> GatewaySpec:
    """The spec with the operator's settings applied: rate limits that override every route's, and
    the body limit for operations the document gives none."""
    operations = tuple(
        dataclasses.replace(
            op,
            throttling=Throttling(
                per_ip=_override_throttle(op.throttling.per_ip, per_ip, window_seconds),
                per_user=_override_throttle(op.throttling.per_user, per_user, window_seconds) if op.protected else None,
            ),
            max_body_bytes=op.max_body_bytes or default_max_body_bytes,
        )
        for op in spec.operations
    )
    return dataclasses.replace(spec, operations=operations)
