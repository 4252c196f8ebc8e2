"""Reading the gateway document and the SAM template: routes, functions, policies, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.spec import (
    GatewaySpec,
    SpecError,
    Throttle,
    apply_operator_overrides,
    load_gateway_spec,
    load_yaml,
    resolve_intrinsic,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "gateway"
PARAMETERS = {
    "JwtIssuer": "http://127.0.0.1:9/api/auth",
    "JwtAudience": "berth-api",
    "AWS::Region": "us-east-1",
    "AWS::Partition": "aws",
    "AWS::AccountId": "000000000000",
}


def _fixture_spec() -> GatewaySpec:
    return load_gateway_spec(FIXTURES / "openapi.yaml", FIXTURES / "template.yaml", PARAMETERS)


def test_operations_name_their_function_authorizer_and_policies() -> None:
    spec = _fixture_spec()
    by_route = {op.route_key: op for op in spec.operations}
    private = by_route["ANY /probe/private/{proxy+}"]
    assert private.function == "EchoFunction"
    assert private.authorizer == "berthJwt"
    assert private.timeout_ms == 29000
    assert by_route["ANY /probe/public/{proxy+}"].authorizer is None
    limited = by_route["GET /probe/limited"]
    # an operation's override replaces the key it names and gets a bucket of its own
    assert limited.throttling.per_ip == Throttle(3, 60, "GET /probe/limited")
    assert limited.throttling.per_user == Throttle(100000, 60, "*")
    assert by_route["POST /probe/small"].max_body_bytes == 16
    assert by_route["GET /probe/items/{id}"].max_body_bytes == 4096


def test_functions_come_from_the_template_with_short_tags_and_globals() -> None:
    spec = _fixture_spec()
    echo, keys = spec.functions["EchoFunction"], spec.functions["KeysFunction"]
    assert echo.handler == "gateway_probe:echo"
    assert echo.code_dir == FIXTURES
    assert echo.memory_mb == 256  # from Globals
    assert keys.memory_mb == 128  # the function's own
    assert echo.timeout_seconds == 29
    assert set(spec.functions) == {"EchoFunction", "KeysFunction"}


def test_the_jwt_authorizer_resolves_issuer_and_audience() -> None:
    authorizer = _fixture_spec().authorizers["berthJwt"]
    assert authorizer.issuer == "http://127.0.0.1:9/api/auth"
    assert authorizer.audiences == ("berth-api",)
    assert authorizer.identity_header == "authorization"


def test_cors_is_read_from_the_document() -> None:
    cors = _fixture_spec().cors
    assert cors is not None
    assert cors.allow_origins == ("https://app.example.com",)
    assert cors.allow_headers == ("authorization", "content-type")
    assert cors.max_age == 600


def test_operator_overrides_replace_every_limit_and_fill_the_body_limit() -> None:
    spec = apply_operator_overrides(
        _fixture_spec(), per_ip=5, per_user=None, window_seconds=10, default_max_body_bytes=999
    )
    by_route = {op.route_key: op for op in spec.operations}
    assert by_route["GET /probe/limited"].throttling.per_ip == Throttle(5, 10, "GET /probe/limited")
    assert by_route["GET /probe/items/{id}"].throttling.per_ip == Throttle(5, 10, "*")
    assert by_route["ANY /probe/private/{proxy+}"].throttling.per_user == Throttle(100000, 10, "*")
    # per-user limits apply to authenticated routes only
    assert by_route["GET /probe/items/{id}"].throttling.per_user is None
    assert by_route["POST /probe/small"].max_body_bytes == 16


def test_intrinsics_resolve_locally_and_unknown_ones_are_refused() -> None:
    assert resolve_intrinsic({"Fn::Sub": "${JwtIssuer}/x"}, PARAMETERS, "here") == "http://127.0.0.1:9/api/auth/x"
    assert resolve_intrinsic([{"Ref": "JwtAudience"}], PARAMETERS, "here") == ["berth-api"]
    assert resolve_intrinsic({"Fn::Sub": ["${A}-${JwtAudience}", {"A": "a"}]}, PARAMETERS, "here") == "a-berth-api"
    with pytest.raises(SpecError, match="Nope"):
        resolve_intrinsic({"Ref": "Nope"}, PARAMETERS, "here")
    with pytest.raises(SpecError, match="Fn::ImportValue"):
        resolve_intrinsic({"Fn::ImportValue": "x"}, PARAMETERS, "here")


def test_short_tags_load_as_long_forms(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("a: !Ref X\nb: !GetAtt R.Arn\nc: !Sub '${X}'\nd: !Select [0, [a]]\n")
    assert load_yaml(path) == {
        "a": {"Ref": "X"},
        "b": {"Fn::GetAtt": ["R", "Arn"]},
        "c": {"Fn::Sub": "${X}"},
        "d": {"Fn::Select": [0, ["a"]]},
    }


def _write(tmp_path: Path, document: dict[str, object], template: dict[str, object]) -> tuple[Path, Path]:
    spec_path, template_path = tmp_path / "openapi.yaml", tmp_path / "template.yaml"
    spec_path.write_text(yaml.safe_dump(document))
    template_path.write_text(yaml.safe_dump(template))
    return spec_path, template_path


INTEGRATION = {
    "type": "aws_proxy",
    "httpMethod": "POST",
    "payloadFormatVersion": "2.0",
    "uri": {"Fn::Sub": "arn:aws:apigateway:x:lambda:path/functions/${OneFunction.Arn}/invocations"},
}
TEMPLATE = {"Resources": {"OneFunction": {"Type": "AWS::Serverless::Function", "Properties": {"Handler": "m.handler"}}}}


@pytest.mark.parametrize(
    ("document", "template", "message"),
    [
        ({"paths": {"/a": {"get": {}}}}, TEMPLATE, "no x-amazon-apigateway-integration"),
        (
            {"paths": {"/a": {"get": {"x-amazon-apigateway-integration": {**INTEGRATION, "type": "http_proxy"}}}}},
            TEMPLATE,
            "aws_proxy",
        ),
        (
            {
                "paths": {
                    "/a": {"get": {"x-amazon-apigateway-integration": {**INTEGRATION, "payloadFormatVersion": "1.0"}}}
                }
            },
            TEMPLATE,
            "2.0",
        ),
        (
            {"paths": {"/a": {"get": {"x-amazon-apigateway-integration": INTEGRATION}}}},
            {"Resources": {}},
            "does not define",
        ),
        (
            {"paths": {"/a": {"get": {"x-amazon-apigateway-integration": INTEGRATION, "security": [{"nobody": []}]}}}},
            TEMPLATE,
            "no JWT authorizer",
        ),
        (
            {
                "paths": {
                    "/a": {
                        "get": {
                            "x-amazon-apigateway-integration": INTEGRATION,
                            "x-berth-throttling": {"perIp": {"limit": 0}},
                        }
                    }
                }
            },
            TEMPLATE,
            "positive integer",
        ),
        ({"paths": {}}, TEMPLATE, "no operations"),
    ],
)
def test_a_document_the_gateway_cannot_honour_is_refused_at_start(
    tmp_path: Path, document: dict[str, object], template: dict[str, object], message: str
) -> None:
    spec_path, template_path = _write(tmp_path, document, template)
    with pytest.raises(SpecError, match=message):
        load_gateway_spec(spec_path, template_path, PARAMETERS)
