"""Worker images: built for the workers' platform whatever machine deploys, one per package set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import VARIANT_CONTEXT, _build

pytest.importorskip("aws_cdk")
from aws_cdk import Stage
from aws_cdk.assertions import Template

#: The variant's two partitions, the GPU one with its own third-party packages.
PACKAGES = {"gpu": ["numpy==2.1.3", "scipy==1.14.1"]}


@pytest.fixture(scope="module")
def synthesized() -> tuple[Template, list[dict[str, Any]]]:
    stack = _build(**VARIANT_CONTEXT, **{"skyloom:workerPackages": PACKAGES})
    assembly = Stage.of(stack).synth()  # type: ignore[union-attr]
    manifest = json.loads(next(Path(assembly.directory).glob(f"{stack.stack_name}.assets.json")).read_text())
    return Template.from_stack(stack), list(manifest["dockerImages"].values())


def test_every_worker_image_is_built_for_linux_amd64(synthesized: tuple[Template, list[dict[str, Any]]]) -> None:
    _, images = synthesized
    assert images and all(image["source"].get("platform") == "linux/amd64" for image in images)


def test_a_partition_with_packages_gets_its_own_image(synthesized: tuple[Template, list[dict[str, Any]]]) -> None:
    template, images = synthesized
    args = sorted(json.dumps(image["source"].get("dockerBuildArgs") or {}) for image in images)
    assert args == sorted(["{}", json.dumps({"PACKAGES": "numpy==2.1.3 scipy==1.14.1"})])
    definitions = template.find_resources("AWS::ECS::TaskDefinition")
    uris = {json.dumps(d["Properties"]["ContainerDefinitions"][0]["Image"], sort_keys=True)
            for d in definitions.values()}
    assert len(uris) == 2  # default and gpu run different images
