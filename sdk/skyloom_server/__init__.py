"""Skyloom's server side: the Lambda functions (``skyloom_server.functions``) and the worker agent
(``skyloom_server.fargate_worker``), under one name of our own so that installing Skyloom puts
nothing called ``functions`` or ``fargate_worker`` into site-packages, where a user's own
``functions.py`` would shadow it.

The design places the two folders at the repository root (``functions/``, ``fargate_worker/``).
Installed, setuptools copies them into this package (pyproject.toml, ``package-dir``); in a source
checkout (``PYTHONPATH=sdk:.``) this package extends its path to the repository root instead, so the
same import names work in both. Their dependencies come with ``pip install 'skyloom[server]'``.
"""

from __future__ import annotations

from pathlib import Path

from skyloom.extras import require

_here = Path(__file__).resolve().parent
_checkout = _here.parent.parent  # sdk/skyloom_server -> the repository root
if not (_here / "functions").is_dir() and (_checkout / "functions" / "__init__.py").is_file():
    __path__.append(str(_checkout))

require("server", "Skyloom's Lambda functions and worker agent (skyloom_server)")
