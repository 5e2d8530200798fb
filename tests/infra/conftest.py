"""Synthesize the CDK app once per variant for the whole session (each synthesis costs ~10 s; every
test module reads the same two stacks: ``default_stack``, from ``cdk.json`` as is, and
``variant_stack``, with a customer-managed KMS key and an EC2 Spot GPU partition).

The app is built from the repository's ``cdk.json`` context, as ``cdk synth`` builds it, with Lambda
bundling skipped (``aws:cdk:bundling-stacks``: []): bundling runs pip, which ``make synth`` covers.
Tests skip when aws-cdk-lib (the ``skyloom[infra]`` extra) or Node is missing.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from aws_cdk.assertions import Template

    from infra.cdk.stack import SkyloomStack

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


#: The customer-managed key of the variant (any well-formed ARN: synthesis never calls KMS).
KEY_ARN = "arn:aws:kms:us-east-1:111111111111:key/00000000-0000-0000-0000-000000000000"
#: The variant's context: the customer-managed key, and a GPU partition on EC2 Spot beside Fargate.
VARIANT_CONTEXT: dict[str, Any] = {
    "skyloom:partitions": [
        {"name": "default", "minWorkers": 1},
        {"name": "gpu", "cpu": 4096, "memory": 15000, "maxWorkers": 4},
    ],
    "skyloom:ec2Spot": {"instanceTypes": ["g4dn.xlarge", "g5.xlarge"], "partitions": ["gpu"], "gpu": True},
    "skyloom:kmsKeyArn": KEY_ARN,
}


def _build(**overrides: Any) -> SkyloomStack:
    from aws_cdk import App

    from infra.cdk.app import build

    return build(App(context=cdk_context(**overrides)))


@pytest.fixture(scope="session")
def default_stack() -> SkyloomStack:
    """The stack ``cdk synth`` builds from ``cdk.json``: AWS-owned keys, one Fargate partition."""
    return _build()


@pytest.fixture(scope="session")
def default_template(default_stack: SkyloomStack) -> Template:
    from aws_cdk.assertions import Template

    return Template.from_stack(default_stack)


@pytest.fixture(scope="session")
def variant_stack() -> SkyloomStack:
    """The stack with :data:`VARIANT_CONTEXT`: customer-managed key, EC2 Spot GPU partition."""
    return _build(**VARIANT_CONTEXT)


@pytest.fixture(scope="session")
def variant_template(variant_stack: SkyloomStack) -> Template:
    from aws_cdk.assertions import Template

    return Template.from_stack(variant_stack)
