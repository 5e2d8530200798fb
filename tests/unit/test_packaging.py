"""pyproject.toml ships every package under its own name, and the extras match skyloom.extras.

The wheel itself is built and installed into a fresh venv by ``tests/e2e/test_install.py``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from skyloom.extras import EXTRAS

REPO = Path(__file__).resolve().parents[2]


def _project() -> dict[str, object]:
    with (REPO / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def test_every_package_folder_is_listed_under_its_installed_name() -> None:
    setuptools = _project()["tool"]["setuptools"]  # type: ignore[index]
    mapping: dict[str, str] = setuptools["package-dir"]
    listed = set(setuptools["packages"])
    found = set()
    for init in (REPO / "sdk").rglob("__init__.py"):
        found.add(".".join(init.parent.relative_to(REPO / "sdk").parts))
    for name, folder in mapping.items():
        if name:
            found |= {".".join([name, *i.parent.relative_to(REPO / folder).parts])
                      for i in (REPO / folder).rglob("__init__.py")}
    assert listed == found
    # Nothing generic at the top level of site-packages.
    assert {p.split(".")[0] for p in listed} == {"skyloom", "skyloom_server"}


def test_the_extras_bring_the_modules_skyloom_extras_checks() -> None:
    extras: dict[str, list[str]] = _project()["project"]["optional-dependencies"]  # type: ignore[index]
    import_name = {"pynamodb": "pynamodb", "aws-lambda-powertools": "aws_lambda_powertools", "moto": "moto",
                   "gunicorn": "gunicorn", "pydantic-settings": "pydantic_settings"}

    def modules(extra: str) -> set[str]:
        out: set[str] = set()
        for requirement in extras[extra]:
            dist = re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0]
            if dist == "skyloom":
                for included in re.findall(r"\[(.*)\]", requirement)[0].split(","):
                    out |= modules(included.strip())
            else:
                out.add(import_name[dist])
        return out

    for extra, names in EXTRAS.items():
        assert modules(extra) == set(names), extra
    client = {re.split(r"[\[<>=!~ ]", r, maxsplit=1)[0] for r in _project()["project"]["dependencies"]}  # type: ignore[index]
    assert not client & set(import_name), "a server or local dependency is in the client's"


def test_the_server_folders_import_under_skyloom_server_beside_a_users_functions_py(tmp_path: Path) -> None:
    # A user's own functions.py / fargate_worker.py beside their script used to shadow ours.
    (tmp_path / "functions.py").write_text("MINE = True\n")
    (tmp_path / "fargate_worker.py").write_text("MINE = True\n")
    code = ("import functions, fargate_worker, skyloom_server.functions.submit.handler as h, "
            "skyloom_server.fargate_worker.agent as a; assert functions.MINE and fargate_worker.MINE; "
            "print(h.__name__, a.__name__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["skyloom_server.functions.submit.handler", "skyloom_server.fargate_worker.agent"]
