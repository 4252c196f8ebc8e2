"""The gateway document and the SAM template agree, and both follow the conventions both gateways rely on.

One OpenAPI file drives the managed gateway (through the template's AWS::Include) and the local one, so
a route without a function, a function without a handler or a route that is public by mistake shows up
here, before any gateway starts.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_spec_validator import validate

from gateway.spec import load_gateway_spec, load_yaml

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT_PATH = ROOT / "gateway-config" / "openapi.yaml"
TEMPLATE_PATH = ROOT / "template.yaml"
LAMBDA_MAKEFILE = ROOT / "infrastructure" / "lambda" / "Makefile"
METHOD_KEYS = ("get", "put", "post", "delete", "options", "head", "patch", "x-amazon-apigateway-any-method")
FUNCTION_ARN = re.compile(
    r"^arn:\$\{AWS::Partition\}:apigateway:\$\{AWS::Region\}:lambda:path/2015-03-31/functions/"
    r"\$\{(?P<logical_id>[A-Za-z0-9]+)\.Arn\}/invocations$"
)

PROPOSAL_PREFIXES = [
    "/api/auth",
    "/api/images",
    "/api/containers",
    "/api/load-balancer",
    "/api/service-discovery",
    "/ui",
]
PUBLIC_ROUTES = {
    "POST /api/auth/signup",
    "POST /api/auth/signin",
    "POST /api/auth/refresh",
    "GET /api/auth/.well-known/openid-configuration",
    "GET /api/auth/.well-known/jwks.json",
    # A change of email is confirmed with the token mailed to the new address, from wherever it is read.
    "POST /api/auth/email/confirm",
    "ANY /ui",
    "ANY /ui/{proxy+}",
    # The dashboard's sessions: signing in needs no token, and the other two work from the cookie.
    "POST /ui/session",
    "DELETE /ui/session",
    "POST /ui/session/refresh",
}
EXPECTED_FUNCTIONS = {
    "POST /api/auth/signup": "AuthFunction",
    "POST /api/auth/signin": "AuthFunction",
    "POST /api/auth/refresh": "AuthFunction",
    "POST /api/auth/signout": "AuthFunction",
    "GET /api/auth/me": "AuthFunction",
    "GET /api/auth/.well-known/openid-configuration": "AuthFunction",
    "GET /api/auth/.well-known/jwks.json": "AuthFunction",
    "POST /api/images": "ImagesFunction",
    "GET /api/images": "ImagesFunction",
    "GET /api/images/{image_id}": "ImagesFunction",
    "DELETE /api/images/{image_id}": "ImagesFunction",
    "POST /api/images/{image_id}/complete": "ImagesFunction",
    "POST /api/images/{image_id}/upload": "ImagesFunction",
    "POST /api/containers": "ContainersFunction",
    "GET /api/containers": "ContainersFunction",
    "GET /api/containers/{container_id}": "ContainersFunction",
    "DELETE /api/containers/{container_id}": "ContainersFunction",
    "POST /api/containers/{container_id}/start": "ContainersFunction",
    "POST /api/containers/{container_id}/stop": "ContainersFunction",
    "POST /api/containers/{container_id}/restart": "ContainersFunction",
    "GET /api/containers/{container_id}/events": "ContainersFunction",
    "GET /api/containers/{container_id}/logs": "ContainersFunction",
    "GET /api/containers/{container_id}/stats": "ContainersFunction",
    "POST /api/services": "ServicesFunction",
    "GET /api/services": "ServicesFunction",
    "GET /api/services/{name}": "ServicesFunction",
    "PATCH /api/services/{name}": "ServicesFunction",
    "DELETE /api/services/{name}": "ServicesFunction",
    "POST /api/services/{name}/deploy": "ServicesFunction",
    "POST /api/services/{name}/rollback": "ServicesFunction",
    "GET /api/services/{name}/releases": "ServicesFunction",
    "POST /api/load-balancer/listeners": "LoadBalancerFunction",
    "GET /api/load-balancer/listeners": "LoadBalancerFunction",
    "GET /api/load-balancer/listeners/{listener_id}": "LoadBalancerFunction",
    "PATCH /api/load-balancer/listeners/{listener_id}": "LoadBalancerFunction",
    "DELETE /api/load-balancer/listeners/{listener_id}": "LoadBalancerFunction",
    "GET /api/load-balancer/listeners/{listener_id}/stats": "LoadBalancerFunction",
    "POST /api/load-balancer/certificates": "LoadBalancerFunction",
    "GET /api/load-balancer/certificates": "LoadBalancerFunction",
    "GET /api/load-balancer/certificates/{certificate_id}": "LoadBalancerFunction",
    "DELETE /api/load-balancer/certificates/{certificate_id}": "LoadBalancerFunction",
    "POST /api/load-balancer/hostnames": "LoadBalancerFunction",
    "GET /api/load-balancer/hostnames": "LoadBalancerFunction",
    "GET /api/load-balancer/hostnames/{hostname_id}": "LoadBalancerFunction",
    "PATCH /api/load-balancer/hostnames/{hostname_id}": "LoadBalancerFunction",
    "DELETE /api/load-balancer/hostnames/{hostname_id}": "LoadBalancerFunction",
    "POST /api/load-balancer/hostnames/{hostname_id}/verify": "LoadBalancerFunction",
    "GET /api/service-discovery/namespaces": "ServiceDiscoveryFunction",
    "GET /api/service-discovery/services": "ServiceDiscoveryFunction",
    "GET /api/service-discovery/services/{name}": "ServiceDiscoveryFunction",
    "POST /ui/session": "UiFunction",
    "DELETE /ui/session": "UiFunction",
    "POST /ui/session/refresh": "UiFunction",
    "POST /api/auth/tokens": "AuthFunction",
    "GET /api/auth/tokens": "AuthFunction",
    "DELETE /api/auth/tokens/{token_id}": "AuthFunction",
    "POST /api/auth/password": "AuthFunction",
    "POST /api/auth/email": "AuthFunction",
    "POST /api/auth/email/confirm": "AuthFunction",
    "DELETE /api/auth/me": "AuthFunction",
    "GET /api/admin/users": "AuthFunction",
    "POST /api/admin/users/{user_id}/disable": "AuthFunction",
    "POST /api/admin/users/{user_id}/enable": "AuthFunction",
    "DELETE /api/admin/users/{user_id}": "AuthFunction",
    "GET /api/billing/usage": "BillingFunction",
    "GET /api/billing/invoices": "BillingFunction",
    "GET /api/billing/invoices/{invoice_id}": "BillingFunction",
    "GET /api/billing/plan": "BillingFunction",
    "GET /api/admin/usage": "BillingFunction",
    "GET /api/admin/plans": "BillingFunction",
    "PATCH /api/admin/plans/{name}": "BillingFunction",
    "POST /api/admin/billing/finalize": "BillingFunction",
    "PATCH /api/admin/users/{user_id}": "BillingFunction",
    "POST /api/alerts/webhooks": "AlertsFunction",
    "GET /api/alerts/webhooks": "AlertsFunction",
    "GET /api/alerts/webhooks/{webhook_id}": "AlertsFunction",
    "DELETE /api/alerts/webhooks/{webhook_id}": "AlertsFunction",
    "POST /api/alerts/rules": "AlertsFunction",
    "GET /api/alerts/rules": "AlertsFunction",
    "GET /api/alerts/rules/{rule_id}": "AlertsFunction",
    "DELETE /api/alerts/rules/{rule_id}": "AlertsFunction",
    "GET /api/alerts": "AlertsFunction",
    "GET /api/requests/{request_id}": "AlertsFunction",
    "ANY /ui": "UiFunction",
    "ANY /ui/{proxy+}": "UiFunction",
}
THROTTLED_LIKE_SIGN_IN = ("POST /api/auth/signup", "POST /api/auth/signin", "POST /api/auth/refresh")
THROTTLED_LIKE_SIGN_IN_UI = ("POST /ui/session", "POST /ui/session/refresh")


def _document() -> dict[str, Any]:
    # Plain safe_load on purpose: the file must need no CloudFormation tags to be read.
    with DOCUMENT_PATH.open(encoding="utf-8") as stream:
        return dict(yaml.safe_load(stream))


DOCUMENT = _document()
TEMPLATE: dict[str, Any] = load_yaml(TEMPLATE_PATH)


def _operations() -> dict[str, dict[str, Any]]:
    """Route key ("POST /api/auth/signin", "ANY /ui") -> operation."""
    operations: dict[str, dict[str, Any]] = {}
    for path, item in DOCUMENT["paths"].items():
        for key, operation in item.items():
            if key in METHOD_KEYS:
                method = "ANY" if key == "x-amazon-apigateway-any-method" else key.upper()
                operations[f"{method} {path}"] = operation
    return operations


OPERATIONS = _operations()


def _integration_function(operation: dict[str, Any]) -> str:
    uri = operation["x-amazon-apigateway-integration"]["uri"]
    assert set(uri) == {"Fn::Sub"}, "integration uris use the long-form Fn::Sub"
    match = FUNCTION_ARN.match(uri["Fn::Sub"])
    assert match, f"unexpected integration uri {uri['Fn::Sub']!r}"
    return match.group("logical_id")


def test_document_is_valid_openapi_3() -> None:
    assert DOCUMENT["openapi"] == "3.0.1"
    validate(DOCUMENT)


@pytest.mark.parametrize("prefix", PROPOSAL_PREFIXES)
def test_every_proposal_prefix_has_routes(prefix: str) -> None:
    paths = [path for path in DOCUMENT["paths"] if path == prefix or path.startswith(prefix + "/")]
    assert paths, f"no route under {prefix}"


def test_routes_and_their_functions_are_exactly_the_planned_ones() -> None:
    assert {key: _integration_function(op) for key, op in OPERATIONS.items()} == EXPECTED_FUNCTIONS


@pytest.mark.parametrize("route_key", sorted(EXPECTED_FUNCTIONS))
def test_operation_has_a_lambda_proxy_v2_integration(route_key: str) -> None:
    integration = OPERATIONS[route_key]["x-amazon-apigateway-integration"]

    assert integration["type"] == "aws_proxy"
    assert integration["httpMethod"] == "POST"
    assert integration["payloadFormatVersion"] == "2.0"
    assert integration["timeoutInMillis"] == 29000


@pytest.mark.parametrize("route_key", sorted(EXPECTED_FUNCTIONS))
def test_operation_is_documented(route_key: str) -> None:
    operation = OPERATIONS[route_key]

    assert operation.get("summary")
    assert operation.get("tags")
    assert set(operation["tags"]) <= {tag["name"] for tag in DOCUMENT["tags"]}
    assert operation["responses"], "every operation lists its answers"
    for status, response in operation["responses"].items():
        if int(status) >= 400:
            assert response["$ref"].startswith("#/components/responses/")


def test_operation_ids_are_unique() -> None:
    ids = [op["operationId"] for op in OPERATIONS.values()]
    assert len(ids) == len(set(ids))


def test_error_answers_share_the_error_shape() -> None:
    components = DOCUMENT["components"]
    error = components["schemas"]["Error"]["properties"]["error"]
    assert set(error["required"]) == {"code", "message", "request_id"}
    for name, response in components["responses"].items():
        schema = response["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Error"}, name


def test_every_template_function_serves_routes() -> None:
    functions = {
        logical_id
        for logical_id, resource in TEMPLATE["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    assert functions == set(EXPECTED_FUNCTIONS.values())


def test_ui_session_routes_document_the_cookie_and_the_ui_header() -> None:
    ui_header = {"$ref": "#/components/parameters/BerthUiHeader"}
    for route_key in ("POST /ui/session/refresh", "DELETE /ui/session"):
        operation = OPERATIONS[route_key]
        assert ui_header in operation["parameters"], route_key
        assert operation["responses"]["403"] == {"$ref": "#/components/responses/Forbidden"}
    assert "parameters" not in OPERATIONS["POST /ui/session"], "signing in needs no UI header"
    for route_key in ("POST /ui/session", "POST /ui/session/refresh"):
        ok = OPERATIONS[route_key]["responses"]["200"]
        assert "Set-Cookie" in ok["headers"]
        assert ok["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/UiSession"}
    session = DOCUMENT["components"]["schemas"]["UiSession"]
    assert set(session["required"]) == {"access_token", "expires_in", "user"}
    assert "refresh_token" not in session["properties"], "the refresh token lives in the cookie only"


@pytest.mark.parametrize(
    ("route_key", "schema"),
    [
        ("POST /api/auth/signup", "SignUpRequest"),
        ("POST /api/auth/signin", "Credentials"),
        ("POST /api/auth/refresh", "RefreshRequest"),
    ],
)
def test_auth_request_bodies_are_closed_schemas(route_key: str, schema: str) -> None:
    body = OPERATIONS[route_key]["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{schema}"}
    assert DOCUMENT["components"]["schemas"][schema]["additionalProperties"] is False


@pytest.mark.parametrize(
    ("route_key", "status", "schema", "fields"),
    [
        ("POST /api/auth/signup", "201", "CreatedUser", {"id", "email"}),
        ("POST /api/auth/signin", "200", "TokenPair", {"access_token", "refresh_token", "token_type", "expires_in"}),
        ("POST /api/auth/refresh", "200", "TokenPair", {"access_token", "refresh_token", "token_type", "expires_in"}),
        ("GET /api/auth/me", "200", "CurrentUser", {"id", "email", "role", "plan"}),
    ],
)
def test_auth_answers_have_the_contract_fields(route_key: str, status: str, schema: str, fields: set[str]) -> None:
    content = OPERATIONS[route_key]["responses"][status]["content"]["application/json"]
    assert content["schema"] == {"$ref": f"#/components/schemas/{schema}"}
    assert set(DOCUMENT["components"]["schemas"][schema]["required"]) == fields


def test_exactly_the_public_routes_lack_security() -> None:
    assert "security" not in DOCUMENT, "no root-level security: each protected operation says so"
    public = {key for key, op in OPERATIONS.items() if not op.get("security")}
    assert public == PUBLIC_ROUTES
    for key, operation in OPERATIONS.items():
        if key not in PUBLIC_ROUTES:
            assert operation["security"] == [{"berthJwt": []}], key


def test_jwt_authorizer_reads_the_templates_issuer_and_audience() -> None:
    scheme = DOCUMENT["components"]["securitySchemes"]["berthJwt"]
    authorizer = scheme["x-amazon-apigateway-authorizer"]

    assert scheme["type"] == "oauth2"
    assert authorizer["type"] == "jwt"
    assert authorizer["identitySource"] == "$request.header.Authorization"
    assert authorizer["jwtConfiguration"] == {
        "issuer": {"Fn::Sub": "${JwtIssuer}"},
        "audience": [{"Ref": "JwtAudience"}],
    }
    assert {"JwtIssuer", "JwtAudience"} <= set(TEMPLATE["Parameters"])
    assert TEMPLATE["Parameters"]["JwtAudience"]["Default"] == "berth-api"


def test_throttling_body_limit_and_cors_defaults() -> None:
    assert DOCUMENT["x-berth-throttling"] == {
        "perIp": {"limit": 600, "windowSeconds": 60},
        "perUser": {"limit": 300, "windowSeconds": 60},
    }
    assert DOCUMENT["x-berth-max-body-bytes"] == 1024 * 1024
    for key in THROTTLED_LIKE_SIGN_IN + THROTTLED_LIKE_SIGN_IN_UI:
        assert OPERATIONS[key]["x-berth-throttling"] == {"perIp": {"limit": 30, "windowSeconds": 60}}
    route_settings = TEMPLATE["Resources"]["BerthHttpApi"]["Properties"]["RouteSettings"]
    for key in THROTTLED_LIKE_SIGN_IN_UI:
        assert route_settings[key] == route_settings["POST /api/auth/signin"], key
    cors = DOCUMENT["x-amazon-apigateway-cors"]
    assert cors["allowOrigins"] == ["http://127.0.0.1:8080", "http://localhost:8080"]
    assert cors["maxAge"] == 600
    assert cors["allowCredentials"] is False


@pytest.mark.parametrize("logical_id", sorted(set(EXPECTED_FUNCTIONS.values())))
def test_integrated_function_is_in_the_template_with_an_importable_handler(logical_id: str) -> None:
    resource = TEMPLATE["Resources"][logical_id]
    assert resource["Type"] == "AWS::Serverless::Function"
    assert resource["Metadata"]["BuildMethod"] == "makefile"

    module_name, _, attribute = resource["Properties"]["Handler"].rpartition(".")
    handler = getattr(importlib.import_module(module_name), attribute)

    assert callable(handler)


@pytest.mark.parametrize("logical_id", sorted(set(EXPECTED_FUNCTIONS.values())))
def test_api_may_invoke_the_function_and_sam_can_build_it(logical_id: str) -> None:
    permissions = [
        resource["Properties"]
        for resource in TEMPLATE["Resources"].values()
        if resource["Type"] == "AWS::Lambda::Permission"
        and resource["Properties"]["FunctionName"] == {"Ref": logical_id}
    ]
    assert len(permissions) == 1
    assert permissions[0]["Principal"] == "apigateway.amazonaws.com"
    assert permissions[0]["Action"] == "lambda:InvokeFunction"
    # `make -n` only prints the recipe: it proves the target `sam build` will run exists.
    dry_run = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-n",
            "-f",
            str(LAMBDA_MAKEFILE),
            f"build-{logical_id}",
            "ARTIFACTS_DIR=/nonexistent/artifacts",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert dry_run.returncode == 0, dry_run.stderr


def test_http_api_includes_the_document_instead_of_restating_routes() -> None:
    apis = [r for r in TEMPLATE["Resources"].values() if r["Type"] == "AWS::Serverless::HttpApi"]
    assert len(apis) == 1
    properties = apis[0]["Properties"]

    include = properties["DefinitionBody"]["Fn::Transform"]
    assert include["Name"] == "AWS::Include"
    assert (TEMPLATE_PATH.parent / include["Parameters"]["Location"]).resolve() == DOCUMENT_PATH
    # SAM cannot edit an included body, and routes must live in the document only.
    assert not {"DefinitionUri", "Auth", "CorsConfiguration"} & set(properties)
    assert set(properties.get("RouteSettings", {})) <= set(OPERATIONS), "throttles name existing routes"
    for resource in TEMPLATE["Resources"].values():
        events = (resource.get("Properties") or {}).get("Events") or {}
        assert all(event["Type"] != "HttpApi" for event in events.values())
    assert not {"paths", "openapi", "swagger"} & _all_keys(TEMPLATE)


def _all_keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in _all_keys(item)}
    if isinstance(value, list):
        return {key for item in value for key in _all_keys(item)}
    return set()


def test_local_gateway_reads_the_document_and_template() -> None:
    spec = load_gateway_spec(
        DOCUMENT_PATH, TEMPLATE_PATH, {"JwtIssuer": "http://127.0.0.1:8080/api/auth", "JwtAudience": "berth-api"}
    )

    assert {op.route_key for op in spec.operations} == set(EXPECTED_FUNCTIONS)
    assert {op.route_key for op in spec.operations if not op.protected} == PUBLIC_ROUTES
    assert {name: f.handler for name, f in spec.functions.items()} == {
        "AuthFunction": "functions.auth.app:handler",
        "ImagesFunction": "functions.images.app:handler",
        "ContainersFunction": "functions.containers.app:handler",
        "ServicesFunction": "functions.services.app:handler",
        "LoadBalancerFunction": "functions.load_balancer.app:handler",
        "ServiceDiscoveryFunction": "functions.service_discovery.app:handler",
        "BillingFunction": "functions.billing.app:handler",
        "AlertsFunction": "functions.alerts.app:handler",
        "UiFunction": "functions.ui.app:handler",
    }


def _cfn_lint() -> str:
    beside_python = Path(sys.executable).with_name("cfn-lint")
    found = str(beside_python) if beside_python.exists() else shutil.which("cfn-lint")
    assert found, "cfn-lint is in the dev extra: pip install -e '.[dev]'"
    return found


@pytest.mark.parametrize("template", ["template.yaml", "infrastructure/host-fleet.yaml"])
def test_cfn_lint_passes(template: str) -> None:
    result = subprocess.run([_cfn_lint(), template], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
