"""The document's request bodies and the functions' pydantic models state the same constraints.

For every operation with a JSON body, the body schema in gateway-config/openapi.yaml and the model's
``model_json_schema()`` are reduced to the keywords that decide what a server accepts (types, required
fields, enums, bounds, patterns, item and property limits, additionalProperties, nullability, defaults)
and compared whole. What a model checks in a validator is stated in its JSON schema through
``json_schema_extra`` (patterns, x-berth-property-names), so a validator that changes without its schema
shows up in tests/e2e/test_api_contract.py, and a schema that changes without the document shows up here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from functions.alerts.models import CreateRule, CreateWebhook
from functions.auth.models import RefreshRequest, SignInRequest, SignUpRequest
from functions.containers.models import CreateContainer
from functions.images.models import CreateImage
from functions.load_balancer.models import (
    CreateCertificate,
    CreateHostname,
    CreateListener,
    UpdateHostname,
    UpdateListener,
    VerifyHostname,
)
from functions.services.models import CreateService, DeleteService, DeployService, RollbackService, UpdateService

DOCUMENT_PATH = Path(__file__).resolve().parents[2] / "gateway-config" / "openapi.yaml"
DOCUMENT: dict[str, Any] = yaml.safe_load(DOCUMENT_PATH.read_text())

BODY_MODELS: dict[str, type[BaseModel]] = {
    "signUp": SignUpRequest,
    "signIn": SignInRequest,
    "refreshTokens": RefreshRequest,
    "uiSignIn": SignInRequest,
    "createImage": CreateImage,
    "createContainer": CreateContainer,
    "createListener": CreateListener,
    "updateListener": UpdateListener,
    "uploadCertificate": CreateCertificate,
    "claimHostname": CreateHostname,
    "updateHostname": UpdateHostname,
    "verifyHostname": VerifyHostname,
    "createService": CreateService,
    "updateService": UpdateService,
    "deleteService": DeleteService,
    "deployService": DeployService,
    "rollbackService": RollbackService,
    "createAlertWebhook": CreateWebhook,
    "createAlertRule": CreateRule,
}
# PATCH: a field left out stays as it is, and the service refuses null (422) for all but health_check,
# where null removes the check. The model types them Optional only to tell "left out" from a value.
NULL_REFUSED_BY_SERVICE = {
    *(("updateListener", field) for field in ("port", "protocol", "algorithm", "weights")),
    *(("updateService", field) for field in ("replicas", "update_policy")),
    *(
        ("deployService", field)
        for field in ("image_id", "env", "secret_env", "ports", "cpu", "memory_mb", "restart_policy")
    ),
}
COMPARED = (
    "type",
    "enum",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "maxProperties",
    "default",
)
# Formats that only annotate (OpenAPI's `password` changes no validation).
ANNOTATION_FORMATS = {"password"}


def _operations() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for item in DOCUMENT["paths"].values():
        for operation in item.values():
            if isinstance(operation, dict) and "operationId" in operation:
                found[operation["operationId"]] = operation
    return found


OPERATIONS = _operations()


def _resolve(schema: dict[str, Any], definitions: dict[str, Any], prefix: str) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].removeprefix(prefix)
        schema = {**definitions[name], **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _normalise(schema: dict[str, Any], definitions: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The keywords that decide acceptance, with `$ref`, single-`allOf` and `anyOf [X, null]` unwrapped."""
    schema = _resolve(schema, definitions, prefix)
    nullable = bool(schema.get("nullable"))
    if "allOf" in schema and len(schema["allOf"]) == 1:
        inner = _resolve(schema["allOf"][0], definitions, prefix)
        schema = {**inner, **{k: v for k, v in schema.items() if k != "allOf"}}
    if "anyOf" in schema:
        branches = [branch for branch in schema["anyOf"] if branch != {"type": "null"}]
        if len(branches) < len(schema["anyOf"]):
            nullable = True
        if len(branches) == 1:
            rest = {k: v for k, v in schema.items() if k != "anyOf"}
            schema = {**_resolve(branches[0], definitions, prefix), **rest}
    result: dict[str, Any] = {key: schema[key] for key in COMPARED if key in schema}
    if "const" in schema:
        result["enum"] = [schema["const"]]
    if result.get("default", 0) is None:
        del result["default"]  # "left out" in either spelling
    if schema.get("format") and schema["format"] not in ANNOTATION_FORMATS:
        result["format"] = schema["format"]
    if nullable:
        result["nullable"] = True
    if "x-berth-property-names" in schema:
        result["propertyNames"] = schema["x-berth-property-names"]
    if "items" in schema:
        result["items"] = _normalise(schema["items"], definitions, prefix)
    if schema.get("type") == "object" or "properties" in schema:
        result["type"] = "object"
        result["required"] = sorted(schema.get("required", []))
        result["properties"] = {
            name: _normalise(sub, definitions, prefix) for name, sub in schema.get("properties", {}).items()
        }
        extra = schema.get("additionalProperties", True)
        result["additionalProperties"] = (
            _normalise(extra, definitions, prefix) if isinstance(extra, dict) else bool(extra)
        )
    return result


def _document_body(operation_id: str) -> dict[str, Any]:
    schema = OPERATIONS[operation_id]["requestBody"]["content"]["application/json"]["schema"]
    normalised = _normalise(schema, DOCUMENT["components"]["schemas"], "#/components/schemas/")
    for owner, field in NULL_REFUSED_BY_SERVICE:
        if owner == operation_id:
            normalised["properties"][field]["nullable"] = True  # the model's spelling, see above
    return normalised


def _model_body(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    return _normalise(schema, schema.get("$defs", {}), "#/$defs/")


def test_every_mapped_operation_is_in_the_document_with_a_json_body() -> None:
    for operation_id in BODY_MODELS:
        assert operation_id in OPERATIONS, operation_id
        assert "application/json" in OPERATIONS[operation_id]["requestBody"]["content"], operation_id


@pytest.mark.parametrize("operation_id", sorted(BODY_MODELS))
def test_the_document_and_the_model_declare_the_same_body(operation_id: str) -> None:
    assert _document_body(operation_id) == _model_body(BODY_MODELS[operation_id])


def test_the_comparison_sees_a_drift() -> None:
    # GIVEN the document's container body with one bound changed
    drifted = _document_body("createContainer")
    drifted["properties"]["memory_mb"]["maximum"] = 4096
    # THEN it no longer matches the model
    assert drifted != _model_body(CreateContainer)
