"""The OpenAPI document of the REST API, generated from the routes and the protocol models.

``docs/openapi.json`` is the public contract that lets any language be a client. It is generated,
never edited: ``python -m skyloom_server.functions.submit.openapi > docs/openapi.json``, and a unit test fails when
the committed file differs from what the code generates, so the contract cannot drift.

Powertools documents what its defaults would do; two of them are not what this API does, so the
document is adjusted here, in one place:

- with validation on, every operation gets a 422 "Validation Error": we answer 400 with
  ``ErrorBody`` instead (see ``errors.py``), so the 422s and their schemas are removed;
- IAM authorization is declared as API Gateway's SigV4 security scheme.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver

TITLE = "Skyloom API"
DESCRIPTION = (
    "Control plane of Skyloom, a serverless task-graph orchestrator: sessions, results (data nodes) "
    "and tasks (compute nodes). Every request is signed with AWS SigV4 (IAM authorization); the "
    "signing principal owns what it creates and sees nothing else. Errors are JSON `ErrorBody` "
    "objects whose `error` code is stable and whose `field` names the offending input."
)
SECURITY_SCHEME = "sigv4"

_POWERTOOLS_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError", "ResponseValidationError")


def api_version() -> str:
    """The installed ``skyloom`` package version; the API is versioned with the code."""
    try:
        return version("skyloom")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


def document(app: APIGatewayRestResolver) -> dict[str, Any]:
    """The OpenAPI document of ``app`` as a JSON-ready dict."""
    doc: dict[str, Any] = json.loads(
        app.get_openapi_json_schema(title=TITLE, version=api_version(), description=DESCRIPTION)
    )
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("422", None)
    schemas = doc.get("components", {}).get("schemas", {})
    text = json.dumps(doc["paths"])
    for name in _POWERTOOLS_VALIDATION_SCHEMAS:
        if f"#/components/schemas/{name}" not in text:
            schemas.pop(name, None)
    doc.setdefault("components", {})["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "apiKey",
            "name": "Authorization",
            "in": "header",
            "description": "AWS Signature Version 4 (API Gateway IAM authorization).",
            "x-amazon-apigateway-authtype": "awsSigv4",
        }
    }
    doc["security"] = [{SECURITY_SCHEME: []}]
    return doc


def render(app: APIGatewayRestResolver) -> str:
    """The document as committed: stable key order and indentation, so diffs are readable."""
    return json.dumps(document(app), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    # ``python -m skyloom_server.functions.submit.openapi > docs/openapi.json``. Run so, this file is the module
    # ``__main__``: the routes import the module ``skyloom_server.functions.submit.openapi``, a different one.
    from skyloom_server.functions.submit.routes import app

    sys.stdout.write(render(app))
