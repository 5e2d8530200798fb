"""Synthesize the CDK app once per test module (synthesis costs seconds; every test reads the result).

The app is built from the repository's ``cdk.json`` context, as ``cdk synth`` builds it, with Lambda
bundling skipped (``aws:cdk:bundling-stacks``: []): bundling runs pip, which ``make synth`` covers.
Tests skip when aws-cdk-lib (the ``skyloom[infra]`` extra) or Node is missing.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
# jsii's runtime argument checks double synthesis time; the template is what the tests check.
os.environ.setdefault("CDK_VALIDATION", "false")

pytest.importorskip("aws_cdk", reason="needs the skyloom[infra] extra")
if shutil.which("node") is None:  # pragma: no cover - every dev machine and CI has Node
    pytest.skip("the CDK needs Node.js", allow_module_level=True)


def cdk_context(**overrides: Any) -> dict[str, Any]:
    """``cdk.json``'s context, bundling off, with ``overrides`` applied."""
    context: dict[str, Any] = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    context["aws:cdk:bundling-stacks"] = []
    context.update(overrides)
    return context
