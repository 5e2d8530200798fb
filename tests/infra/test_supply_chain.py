"""``security/supply_chain.py``: how audit findings, accepted findings and offline runs are judged.

The audit itself needs the network and the real vulnerability data (``make audit``); these tests
pin down the decisions that turn pip-audit's report into PASSED, FAILED or SKIPPED.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.infra.conftest import REPO_ROOT


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("supply_chain", REPO_ROOT / "security" / "supply_chain.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


sc = _load()
TODAY = dt.date(2026, 1, 15)
REPORT: dict[str, Any] = {"dependencies": [
    {"name": "good", "version": "1.0", "vulns": []},
    {"name": "bad", "version": "2.0", "vulns": [
        {"id": "PYSEC-2026-1", "aliases": ["CVE-2026-0001", "GHSA-aaaa-bbbb-cccc"], "fix_versions": ["2.1"],
         "description": "Remote code execution\nin the parser."}]},
    {"name": "private-pkg", "skip_reason": "Dependency not found on PyPI and could not be audited"},
]}


def _ignore_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "ignore.toml"
    path.write_text(body)
    return path


def test_the_shipped_ignore_file_is_valid() -> None:
    accepted, expired = sc.load_ignores()
    assert expired == [] and all(a.reason for a in accepted)


def test_a_finding_fails_unless_accepted_by_id_or_alias(tmp_path: Path) -> None:
    findings = sc.parse_findings(REPORT)
    assert [(f.package, f.id) for f in findings] == [("bad", "PYSEC-2026-1")]
    assert "fixed in 2.1" in findings[0].line() and "Remote code execution in the parser" in findings[0].line()
    open_, ok, stale = sc.judge(findings, [])
    assert open_ == findings and ok == [] and stale == []

    path = _ignore_file(tmp_path, '[[ignore]]\nid = "GHSA-aaaa-bbbb-cccc"\npackage = "Bad"\n'
                                  'reason = "the parser is never given untrusted input"\nreview_by = 2026-06-30\n'
                                  '[[ignore]]\nid = "PYSEC-2020-9"\npackage = "gone"\nreason = "fixed upstream"\n'
                                  'review_by = 2026-06-30\n')
    accepted, expired = sc.load_ignores(path, today=TODAY)
    assert expired == []
    open_, ok, stale = sc.judge(findings, accepted)
    assert open_ == [] and [a.package for _, a in ok] == ["Bad"] and [a.package for a in stale] == ["gone"]


def test_an_accepted_finding_comes_back_after_its_review_date(tmp_path: Path) -> None:
    path = _ignore_file(tmp_path, '[[ignore]]\nid = "PYSEC-2026-1"\npackage = "bad"\nreason = "accepted for now"\n'
                                  'review_by = 2026-01-01\n')
    accepted, expired = sc.load_ignores(path, today=TODAY)
    assert accepted == [] and "2026-01-01" in expired[0]


@pytest.mark.parametrize("entry", [
    'id = "X"\npackage = "p"\nreview_by = 2026-06-30',             # no reason
    'id = "X"\npackage = "p"\nreason = "r"',                        # no review date
    'id = "X"\npackage = "p"\nreason = "r"\nreview_by = "soon"',    # not a date
])
def test_an_ignore_entry_needs_a_reason_and_a_review_date(tmp_path: Path, entry: str) -> None:
    with pytest.raises(sc.SetupError, match="needs id, package, reason and review_by"):
        sc.load_ignores(_ignore_file(tmp_path, f"[[ignore]]\n{entry}\n"), today=TODAY)


def test_no_vulnerability_data_is_a_plain_skip(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sc, "reachable", lambda: "unreachable: [Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(sc, "tools_python", lambda: pytest.fail("nothing may be installed when offline"))
    assert sc.audit() == 0
    out = capsys.readouterr().out
    assert out.startswith("SKIPPED: dependency audit:") and "Nothing was checked" in out


def _fake_pip_audit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, report: dict[str, Any]) -> None:
    """audit() up to pip-audit's report: the tools, the freeze and pip-audit's run are stand-ins."""
    monkeypatch.setattr(sc, "reachable", lambda: None)
    monkeypatch.setattr(sc, "tools_python", lambda: Path(sys.executable))
    monkeypatch.setattr(sc, "installed_requirements", lambda: tmp_path / "requirements.txt")
    monkeypatch.setattr(sc, "AUDIT_DIR", tmp_path)
    monkeypatch.setattr(sc, "ROOT", tmp_path.parent)
    monkeypatch.setattr(sc, "IGNORE_FILE", tmp_path / "none.toml")

    def run(cmd: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        Path(cmd[cmd.index("--output") + 1]).write_text(json.dumps(report))
        return subprocess.CompletedProcess(cmd, 1 if "vulns" in json.dumps(report) else 0, "", "")

    monkeypatch.setattr(sc.subprocess, "run", run)


def test_known_vulnerabilities_fail_and_are_listed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    _fake_pip_audit(monkeypatch, tmp_path, REPORT)
    assert sc.audit() == 1
    out = capsys.readouterr().out
    assert "FAILED: dependency audit: 1 known vulnerability in 1 packages; 2 of 3 packages audited" in out
    assert "bad 2.0: PYSEC-2026-1 (CVE-2026-0001, GHSA-aaaa-bbbb-cccc); fixed in 2.1." in out
    assert "not audited (1" in out and "private-pkg" in out


def test_a_report_that_audited_nothing_is_a_skip_not_a_pass(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    nothing = {"dependencies": [{"name": n, "skip_reason": "Dependency not found on PyPI"} for n in ("a", "b")]}
    _fake_pip_audit(monkeypatch, tmp_path, nothing)
    assert sc.audit() == 0
    assert capsys.readouterr().out.startswith("SKIPPED: dependency audit: pip-audit could audit none of the 2")
