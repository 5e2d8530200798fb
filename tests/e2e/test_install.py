"""``pip install skyloom`` from the built wheel, into a fresh venv: the light client works alone.

GIVEN the wheel built from a copy of the sources (so the checkout gets no build/ or egg-info),
installed without extras into a new venv (no system site-packages: nothing of this environment
leaks in; dependencies come from PyPI through pip's cache),
THEN the client imports and ``skyloom --help`` works without pynamodb, Powertools or moto, the
server and local parts say which extra they need, and site-packages gains no generic top-level name.
Slow (it downloads the client's dependencies on a cold cache) and needs PyPI: skipped offline.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "sdk", "functions", "fargate_worker")


def _run(*args: str | Path, timeout: float = 600, check: bool = True, cwd: Path | None = None,
         ) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "SKYLOOM_HOME": str(cwd or Path.cwd())}
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=check,
                          env=env, cwd=cwd)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed without extras; returns its bin directory."""
    work = tmp_path_factory.mktemp("install")
    src = work / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(REPO / name, src / name)
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", work / "dist", src, check=False)
    if built.returncode != 0 and "NewConnectionError" in built.stdout + built.stderr:
        pytest.skip("PyPI is unreachable: the build backend cannot be installed")
    assert built.returncode == 0, built.stderr
    [wheel] = (work / "dist").glob("skyloom-*.whl")
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(work / "venv")
    bin_dir = work / "venv" / "bin"
    pip = _run(bin_dir / "python", "-m", "pip", "install", "--quiet", wheel, check=False)
    if pip.returncode != 0 and "NewConnectionError" in pip.stdout + pip.stderr:
        pytest.skip("PyPI is unreachable: the client's dependencies cannot be installed")
    assert pip.returncode == 0, pip.stderr
    return bin_dir


def _python(bin_dir: Path, code: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(bin_dir / "python", "-c", code, check=check, cwd=bin_dir.parent.parent, timeout=120)


def test_the_client_imports_without_the_server_dependencies(installed: Path) -> None:
    server = ("pynamodb", "aws_lambda_powertools", "pydantic_settings", "moto", "gunicorn")
    out = _python(installed, "import importlib.util as u, skyloom; skyloom.connect; skyloom.task; "
                  f"print([m for m in {server!r} if u.find_spec(m)])")
    assert out.stdout.strip() == "[]"


def test_the_cli_works_and_says_what_skyloom_local_needs(installed: Path) -> None:
    help_text = _run(installed / "skyloom", "--help", timeout=120).stdout
    for command in ("local", "sessions", "tasks", "watch"):
        assert command in help_text
    local = _run(installed / "skyloom", "local", "up", check=False, timeout=120)
    assert local.returncode == 1
    assert "pip install 'skyloom[local]'" in local.stderr
    assert "Traceback" not in local.stderr


def test_the_server_and_local_parts_name_their_extra(installed: Path) -> None:
    for module, extra in (("skyloom.local", "local"), ("skyloom_server", "server"),
                          ("skyloom_server.fargate_worker", "server")):
        out = _python(installed, f"import {module}", check=False)
        assert out.returncode == 1
        assert "MissingExtra: " in out.stderr and f"pip install 'skyloom[{extra}]'" in out.stderr, out.stderr


def test_connect_without_an_endpoint_names_the_local_extra(installed: Path) -> None:
    out = _python(installed, "import skyloom\ntry:\n    skyloom.connect()\nexcept skyloom.ConnectionFailed as e:\n"
                  "    print(e)", check=True)
    assert "SKYLOOM_ENDPOINT" in out.stdout and "pip install 'skyloom[local]'" in out.stdout


def test_nothing_generic_is_installed_at_the_top_level(installed: Path) -> None:
    out = _python(installed, "import skyloom, pathlib; print(pathlib.Path(skyloom.__file__).parent.parent)")
    site = Path(out.stdout.strip())
    assert not (site / "functions").exists() and not (site / "fargate_worker").exists()
    assert (site / "skyloom_server" / "functions" / "submit" / "handler.py").is_file()
