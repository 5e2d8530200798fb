"""Package the control-plane code for Lambda without Docker.

:class:`PipBundling` is a CDK ``ILocalBundling``: it copies the ``skyloom`` package and the functions
(as ``skyloom_server.functions``, their name once installed) into the asset directory and installs
the project's runtime dependencies (``[project] dependencies`` and the ``server`` extra) next to them with
``pip install --platform manylinux2014_<arch> --only-binary=:all:``, i.e. Lambda-compatible wheels
from PyPI and nothing else (no compiler, no container). The Docker image named in the bundling options
is never pulled: local bundling always succeeds or raises.

The asset hash is computed here from the sources and ``pyproject.toml``, so the asset changes exactly
when the code or the dependency list does, and CDK reuses ``cdk.out/asset.<hash>`` between syntheses
instead of running pip again.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

#: What is shipped in the function asset: repository path -> path in the asset (= import name).
PACKAGES = {
    "sdk/skyloom": "skyloom",
    "sdk/skyloom_server/__init__.py": "skyloom_server/__init__.py",
    "functions": "skyloom_server/functions",
}
#: The extra of pyproject.toml whose dependencies the functions need besides the client's.
SERVER_EXTRA = "server"
PYTHON_VERSION = "3.13"
RUNTIME = lambda_.Runtime.PYTHON_3_13
ARCHITECTURE = lambda_.Architecture.ARM_64
_PIP_PLATFORM = {"arm64": "manylinux2014_aarch64", "x86_64": "manylinux2014_x86_64"}


def runtime_requirements(root: Path) -> list[str]:
    """The ``[project] dependencies`` and the ``server`` extra of pyproject.toml: what the functions
    import at run time."""
    with (root / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    deps: list[str] = [*project["dependencies"], *project["optional-dependencies"][SERVER_EXTRA]]
    return deps


def source_hash(root: Path) -> str:
    """A hash of every file that goes into the asset, and of the dependency list."""
    digest = hashlib.sha256()
    digest.update((root / "pyproject.toml").read_bytes())
    digest.update(PYTHON_VERSION.encode() + ARCHITECTURE.name.encode())
    for rel in sorted(PACKAGES):
        source = root / rel
        for path in sorted(source.rglob("*.py")) if source.is_dir() else [source]:
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


@jsii.implements(ILocalBundling)
class PipBundling:
    """Bundles the functions' code and dependencies into ``output_dir`` with pip (no Docker)."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def try_bundle(self, output_dir: str, *_args: Any, **_kwargs: Any) -> bool:
        out = Path(output_dir)
        for rel, name in PACKAGES.items():
            source, target = self._root / rel, out / name
            if source.is_dir():
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
        subprocess.run(
            [
                sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                "--target", str(out),
                "--platform", _PIP_PLATFORM[ARCHITECTURE.name],
                "--implementation", "cp",
                "--python-version", PYTHON_VERSION,
                "--only-binary=:all:",
                "--no-compile",
                "--no-warn-conflicts",  # pip compares with the running venv, not the target dir
                *runtime_requirements(self._root),
            ],
            check=True,
        )
        return True


def function_code(root: Path) -> lambda_.Code:
    """One asset for the three functions (they differ only by handler)."""
    return lambda_.Code.from_asset(
        str(root / "functions"),
        asset_hash_type=AssetHashType.CUSTOM,
        asset_hash=source_hash(root),
        bundling=BundlingOptions(
            # Never used: PipBundling always bundles locally. Named because CDK requires an image.
            image=DockerImage.from_registry("public.ecr.aws/sam/build-python3.13"),
            local=PipBundling(root),
        ),
    )
