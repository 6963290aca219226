"""drf-spectacular post-processing: document the error answers every operation can give, so clients (and the
schemathesis fuzzer) know them: 401 without credentials, 403 without permission, 404 for an unknown id, 400 and 429
on writes. drf-spectacular documents only the success answers by itself."""
from __future__ import annotations

from typing import Any

DETAIL = {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}
FIELD_ERRORS = {"type": "object", "description": "Field name (or non_field_errors) to its error messages.",
                "additionalProperties": {}}
WRITES = ("post", "put", "patch", "delete")


def _response(description: str, schema_ref: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}}


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("ErrorDetail", DETAIL)
    schemas.setdefault("FieldErrors", FIELD_ERRORS)
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.setdefault("401", _response("Not signed in.", "ErrorDetail"))
            responses.setdefault("403", _response("Signed in, but not allowed.", "ErrorDetail"))
            if "{" in path:
                responses.setdefault("404", _response("No such object (or not yours).", "ErrorDetail"))
            if method in WRITES:
                responses.setdefault("400", _response("Invalid input; nothing was stored.", "FieldErrors"))
                responses.setdefault("405", _response("Method not allowed here.", "ErrorDetail"))
                responses.setdefault("429", _response("Too many writes: retry after the Retry-After header's seconds.", "ErrorDetail"))
    return result
