"""The optional parts of Skyloom and the pip extras that install their dependencies.

``pip install skyloom`` is the client, the protocol and the CLI. The Lambda functions and the
worker agent need ``skyloom[server]``; the embedded local stack needs ``skyloom[local]`` (the server
parts plus the AWS emulator). Importing a part without its extra raises :class:`MissingExtra`, which
names the command that fixes it, instead of a ``ModuleNotFoundError`` about a library the user never
chose.
"""

from __future__ import annotations

from importlib.util import find_spec

#: The modules each extra provides (import names), as pyproject.toml's optional dependencies list them.
EXTRAS: dict[str, tuple[str, ...]] = {
    "server": ("pynamodb", "aws_lambda_powertools", "pydantic_settings"),
    "local": ("pynamodb", "aws_lambda_powertools", "pydantic_settings", "moto", "gunicorn"),
}


class MissingExtra(ImportError):
    """An optional part of Skyloom was imported without the extra that installs its dependencies."""

    def __init__(self, extra: str, what: str, missing: list[str]) -> None:
        super().__init__(
            f"{what} needs `pip install 'skyloom[{extra}]'` (not installed: {', '.join(missing)})"
        )
        self.extra = extra
        self.missing = missing


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here."""
    return [name for name in EXTRAS[extra] if find_spec(name) is None]


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` naming ``extra`` if any of its modules is absent.

    Raises:
        MissingExtra: ``what`` cannot work without ``pip install 'skyloom[extra]'``.
    """
    absent = missing(extra)
    if absent:
        raise MissingExtra(extra, what, absent)
