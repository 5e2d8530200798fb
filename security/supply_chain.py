"""``make sbom`` and ``make audit``: what the project's Python environment contains, and whether any
of it has a known vulnerability.

Both describe the project virtualenv (``.venv``: the runtime dependencies plus the local, infra and
dev extras, a superset of what the worker image and the Lambda bundle ship), pinned exactly as CI
tests them. The tools run from their own virtualenv (``build/security-tools``, pins in
``security/tools.txt``) so that they do not describe themselves.

- ``sbom``: a CycloneDX 1.6 JSON SBOM at ``build/sbom/skyloom-python.cdx.json`` (``cyclonedx-py
  environment``, reproducible output, validated against the schema).
- ``audit``: ``pip-audit`` against the exact versions installed (``pip freeze``, no resolution),
  using PyPI's vulnerability data. The outcome is one of three, said plainly on the last line:
  ``SKIPPED`` (exit 0) when the vulnerability data cannot be reached or serves nothing for the
  installed releases (a mirror without PyPI's per-release JSON), so an offline build does not fail
  for a reason that is not the code's; ``FAILED`` (exit 1) listing every vulnerability not
  accepted in ``security/audit-ignore.toml``; ``PASSED`` (exit 0). A tool or configuration error
  exits 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PYTHON = ROOT / ".venv" / "bin" / "python"
TOOLS_FILE = ROOT / "security" / "tools.txt"
IGNORE_FILE = ROOT / "security" / "audit-ignore.toml"
TOOLS_VENV = ROOT / "build" / "security-tools"
SBOM_FILE = ROOT / "build" / "sbom" / "skyloom-python.cdx.json"
AUDIT_DIR = ROOT / "build" / "audit"
#: pip-audit's default vulnerability service ("pypi") reads PyPI's per-release JSON; probe that very
#: endpoint with a release that exists. A mirror or proxy may serve packages and the project JSON yet
#: answer 404 here, and pip-audit would then report every package "not found" and nothing audited.
VULNERABILITY_DATA = "https://pypi.org/pypi/pip/24.0/json"
PROBE_TIMEOUT = 10.0
#: What pip-audit says when it cannot reach the service mid-run (requests / urllib3 wording).
NETWORK_ERRORS = ("ConnectionError", "Max retries exceeded", "Temporary failure in name resolution",
                  "Name or service not known", "timed out", "Network is unreachable", "ConnectTimeout")


class SetupError(RuntimeError):
    """The tools could not be installed or run (exit 2)."""


@dataclass(frozen=True)
class Accepted:
    """One entry of the ignore file."""

    id: str
    package: str
    reason: str
    review_by: dt.date

    def covers(self, package: str, ids: set[str]) -> bool:
        return self.package.lower() == package.lower() and self.id in ids


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    id: str
    aliases: tuple[str, ...]
    fix_versions: tuple[str, ...]
    description: str

    @property
    def ids(self) -> set[str]:
        return {self.id, *self.aliases}

    def line(self) -> str:
        aliases = f" ({', '.join(self.aliases)})" if self.aliases else ""
        fix = f"fixed in {', '.join(self.fix_versions)}" if self.fix_versions else "no fixed version yet"
        summary = " ".join(self.description.split())[:160]
        return f"  {self.package} {self.version}: {self.id}{aliases}; {fix}. {summary}"


def load_ignores(path: Path = IGNORE_FILE, today: dt.date | None = None) -> tuple[list[Accepted], list[str]]:
    """The accepted findings still in force, and one message per expired entry.

    Raises:
        SetupError: an entry lacks ``id``, ``package``, ``reason`` or ``review_by`` (a TOML date).
    """
    today = today or dt.date.today()
    if not path.exists():
        return [], []
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SetupError(f"{path}: {exc}") from exc
    active: list[Accepted] = []
    expired: list[str] = []
    for i, entry in enumerate(raw.get("ignore", [])):
        missing = [k for k in ("id", "package", "reason", "review_by") if not entry.get(k)]
        if missing or not isinstance(entry.get("review_by"), dt.date):
            raise SetupError(f"{path}: entry {i + 1} needs id, package, reason and review_by (a date); "
                             f"missing or invalid: {missing or ['review_by']}")
        accepted = Accepted(str(entry["id"]), str(entry["package"]), str(entry["reason"]), entry["review_by"])
        if accepted.review_by < today:
            expired.append(f"  {accepted.package} {accepted.id}: review date {accepted.review_by} has passed; "
                           "the finding is reported again until the entry is reviewed")
        else:
            active.append(accepted)
    return active, expired


def parse_findings(report: dict[str, Any]) -> list[Finding]:
    """pip-audit's JSON report -> one finding per (package, advisory)."""
    findings = []
    for dep in report.get("dependencies", []):
        for vuln in dep.get("vulns", []):
            findings.append(Finding(
                package=dep["name"], version=dep["version"], id=vuln["id"],
                aliases=tuple(vuln.get("aliases", [])), fix_versions=tuple(vuln.get("fix_versions", [])),
                description=vuln.get("description") or "",
            ))
    return findings


def judge(
    findings: Sequence[Finding], accepted: Sequence[Accepted]
) -> tuple[list[Finding], list[tuple[Finding, Accepted]], list[Accepted]]:
    """Split findings into open and accepted ones; also return ignore entries that matched nothing."""
    open_: list[Finding] = []
    ok: list[tuple[Finding, Accepted]] = []
    used: set[int] = set()
    for f in findings:
        match = next((i for i, a in enumerate(accepted) if a.covers(f.package, f.ids)), None)
        if match is None:
            open_.append(f)
        else:
            ok.append((f, accepted[match]))
            used.add(match)
    stale = [a for i, a in enumerate(accepted) if i not in used]
    return open_, ok, stale


def reachable(url: str = VULNERABILITY_DATA, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None if ``url`` serves its JSON; otherwise why not (for the SKIPPED line)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            json.loads(response.read())
            return None
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}: the index answers but serves no per-release vulnerability data"
    except (urllib.error.URLError, OSError) as exc:
        return f"unreachable: {getattr(exc, 'reason', exc)}"
    except ValueError:
        return "the answer is not the JSON API (a proxy or captive portal?)"


def tools_python() -> Path:
    """The tools' interpreter, (re)installing them when ``tools.txt`` changed since the last install."""
    python = TOOLS_VENV / "bin" / "python"
    stamp = TOOLS_VENV / ".tools-sha256"
    wanted = hashlib.sha256(TOOLS_FILE.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if not python.exists():
        run([sys.executable, "-m", "venv", str(TOOLS_VENV)], "create the tools virtualenv")
    run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(TOOLS_FILE)],
        f"install {TOOLS_FILE.name}")
    stamp.write_text(wanted)
    return python


def run(cmd: Sequence[str], what: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SetupError(f"could not {what} (exit {result.returncode}):\n{result.stderr.strip() or result.stdout}")
    return result


def installed_requirements() -> Path:
    """``pip freeze`` of the project's .venv (without skyloom itself, installed editable)."""
    if not PROJECT_PYTHON.exists():
        raise SetupError(f"{PROJECT_PYTHON} is missing: run `make venv` first")
    frozen = run([str(PROJECT_PYTHON), "-m", "pip", "freeze", "--exclude-editable", "--disable-pip-version-check"],
                 "list the installed packages").stdout
    AUDIT_DIR.mkdir(parents=True, exist_ok=True)
    path = AUDIT_DIR / "requirements.txt"
    path.write_text(frozen)
    return path


def sbom() -> int:
    python = tools_python()
    SBOM_FILE.parent.mkdir(parents=True, exist_ok=True)
    run([str(python), "-m", "cyclonedx_py", "environment", "--pyproject", str(ROOT / "pyproject.toml"),
         "--mc-type", "application", "--spec-version", "1.6", "--output-format", "JSON",
         "--output-reproducible", "--output-file", str(SBOM_FILE), str(PROJECT_PYTHON)], "generate the SBOM")
    document = json.loads(SBOM_FILE.read_text())
    components = document.get("components", [])
    print(f"SBOM: {SBOM_FILE.relative_to(ROOT)} (CycloneDX {document.get('specVersion')}, "
          f"{len(components)} components)")
    return 0


def audit() -> int:
    accepted, expired = load_ignores()
    why = reachable()
    if why is not None:
        print(f"SKIPPED: dependency audit: no vulnerability data from {VULNERABILITY_DATA} ({why}). "
              "Nothing was checked.")
        return 0
    python = tools_python()
    requirements = installed_requirements()
    report_file = AUDIT_DIR / "pip-audit.json"
    result = subprocess.run(
        [str(python), "-m", "pip_audit", "--requirement", str(requirements), "--no-deps", "--disable-pip",
         "--progress-spinner", "off", "--format", "json", "--output", str(report_file)],
        capture_output=True, text=True, check=False,
    )
    # pip-audit exits 1 both for "vulnerabilities found" and for errors; the report tells them apart.
    if result.returncode not in (0, 1) or not report_file.exists() or not report_file.read_text().strip():
        if any(marker in result.stderr for marker in NETWORK_ERRORS):
            print(f"SKIPPED: dependency audit: the vulnerability data became unreachable mid-run:\n"
                  f"{result.stderr.strip()[-600:]}")
            return 0
        print(f"ERROR: pip-audit failed (exit {result.returncode}):\n{result.stderr.strip()}", file=sys.stderr)
        return 2
    report = json.loads(report_file.read_text())
    audited = len(report.get("dependencies", []))
    skipped = [d for d in report.get("dependencies", []) if d.get("skip_reason")]
    open_, ok, stale = judge(parse_findings(report), accepted)
    for f, a in ok:
        print(f"accepted: {f.package} {f.version} {f.id} (review by {a.review_by}): {a.reason}")
    for line in expired:
        print(f"expired ignore entry:\n{line}")
    for a in stale:
        print(f"stale ignore entry (no longer reported, remove it): {a.package} {a.id}")
    if skipped and len(skipped) == audited:
        print(f"SKIPPED: dependency audit: pip-audit could audit none of the {audited} packages "
              f"(first reason: {skipped[0]['skip_reason']}). Nothing was checked.")
        return 0
    if skipped:
        print(f"not audited ({len(skipped)}, e.g. not on PyPI): " + ", ".join(
            f"{d['name']} ({d['skip_reason']})" for d in skipped))
    coverage = f"{audited - len(skipped)} of {audited} packages audited"
    if open_:
        print(f"FAILED: dependency audit: {len(open_)} known vulnerabilit{'y' if len(open_) == 1 else 'ies'} in "
              f"{len({f.package for f in open_})} packages; {coverage} (report: {report_file.relative_to(ROOT)}):")
        for f in open_:
            print(f.line())
        print(f"Upgrade the package, or accept the finding with a reason in {IGNORE_FILE.relative_to(ROOT)}.")
        return 1
    print(f"PASSED: dependency audit: no known vulnerability; {coverage}"
          f"{f'; {len(ok)} accepted' if ok else ''}.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("command", choices=["sbom", "audit"])
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    try:
        return sbom() if args.command == "sbom" else audit()
    except SetupError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
