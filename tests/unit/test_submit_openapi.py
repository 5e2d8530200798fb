"""The committed OpenAPI document is exactly what the code generates, and says what the API does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from skyloom.core.protocol import ID_PATTERN
from skyloom.options import METRIC_KEY_PATTERN, METRIC_NAME_PATTERN
from skyloom_server.functions.submit import openapi
from skyloom_server.functions.submit.routes import app

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
REGENERATE = "python -m skyloom_server.functions.submit.openapi > docs/openapi.json"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return openapi.document(app)


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in doc["paths"].items() for method, op in ops.items()]


def test_committed_document_matches_the_code() -> None:
    # The contract is generated, never edited: a change to a route or a protocol model must come
    # with the regenerated file, so clients in other languages see it in the same commit.
    assert DOCUMENT.exists(), f"docs/openapi.json is missing; run: {REGENERATE}"
    assert DOCUMENT.read_text(encoding="utf-8") == openapi.render(app), f"docs/openapi.json is stale; run: {REGENERATE}"


def test_rendering_is_deterministic() -> None:
    assert openapi.render(app) == openapi.render(app)


def test_metadata(doc: dict[str, Any]) -> None:
    assert doc["info"]["title"] == "Skyloom API"
    assert doc["info"]["version"] == openapi.api_version()
    assert doc["security"] == [{"sigv4": []}]
    assert doc["components"]["securitySchemes"]["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"


def test_every_route_is_documented(doc: dict[str, Any]) -> None:
    documented = {(m.upper(), p) for m, p, _ in operations(doc)}
    assert documented >= {
        ("POST", "/sessions"),
        ("GET", "/sessions/{session_id}"),
        ("POST", "/sessions/{session_id}/close"),
        ("POST", "/sessions/{session_id}/results"),
        ("POST", "/sessions/{session_id}/results/complete"),
        ("POST", "/sessions/{session_id}/results/get"),
        ("GET", "/sessions/{session_id}/results/{result_id}"),
        ("POST", "/sessions/{session_id}/results/wait"),
        ("GET", "/sessions/{session_id}/results/{result_id}/data"),
        ("POST", "/sessions/{session_id}/tasks"),
        ("POST", "/sessions/{session_id}/tasks/get"),
        ("GET", "/sessions/{session_id}/tasks/{task_id}"),
        ("GET", "/sessions/{session_id}/tasks/{task_id}/logs"),
        ("POST", "/sessions/{session_id}/cancel"),
        ("POST", "/sessions/{session_id}/pause"),
        ("POST", "/sessions/{session_id}/resume"),
        ("POST", "/sessions/{session_id}/purge"),
        ("DELETE", "/sessions/{session_id}"),
        ("POST", "/sessions/{session_id}/tasks/cancel"),
    }
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids))


def test_errors_are_error_bodies_and_never_422(doc: dict[str, Any]) -> None:
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for method, path, op in operations(doc):
        codes = set(op["responses"])
        assert "422" not in codes, (method, path)
        assert {"400", "401", "500"} <= codes, (method, path)
        for code, response in op["responses"].items():
            if int(code) >= 400:
                assert response["content"]["application/json"]["schema"] == error_ref, (method, path, code)
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert "ResponseValidationError" not in doc["components"]["schemas"]


def test_creations_answer_201_with_their_model(doc: dict[str, Any]) -> None:
    created = {p for m, p, op in operations(doc) if "201" in op["responses"]}
    assert created == {"/sessions", "/sessions/{session_id}/results", "/sessions/{session_id}/tasks"}
    schema = doc["paths"]["/sessions/{session_id}/tasks"]["post"]["responses"]["201"]["content"]
    assert schema["application/json"]["schema"] == {"$ref": "#/components/schemas/SubmitTasksResponse"}


def test_path_ids_carry_the_id_pattern(doc: dict[str, Any]) -> None:
    # Measurements are addressed by business key and name, each with its own pattern (skyloom.options).
    own = {"key": METRIC_KEY_PATTERN, "name": METRIC_NAME_PATTERN}
    for method, path, op in operations(doc):
        for param in op.get("parameters", []):
            if param["in"] == "path":
                expected = own[param["name"]] if path.startswith("/metrics/") else ID_PATTERN
                assert param["schema"]["pattern"] == expected, (method, path, param["name"])


def test_document_is_json_serializable(doc: dict[str, Any]) -> None:
    assert json.loads(json.dumps(doc)) == doc
