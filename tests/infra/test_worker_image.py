"""The worker image's supply-chain and runtime rules, read from ``fargate_worker/Dockerfile``.

There is no Docker engine in CI, so the Dockerfile is parsed rather than built: every base image is
pinned by exact tag and digest, the final stage runs as a fixed numeric non-root user (the one the
ECS task definition sets), nothing at run time needs a shell, and the scratch path the image
declares is the one the task definition mounts.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

import pytest

from tests.infra.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "fargate_worker" / "Dockerfile"
#: ``name:exact.version-variant@sha256:<64 hex>``: a tag a human can read and a digest that cannot move.
PINNED = re.compile(r"^[\w./-]+:\d+\.\d+\.\d+[\w.-]*@sha256:[0-9a-f]{64}$")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """``(KEYWORD, arguments)`` per instruction: comments dropped, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
    return out


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with ``${ARG}`` in FROM lines expanded."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, rest in instructions(text):
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())[1]


def test_every_base_image_is_pinned_by_exact_tag_and_digest(stages: list[Stage]) -> None:
    assert len(stages) >= 2  # a build stage and a runtime stage
    for stage in stages:
        if stage.base in {s.name for s in stages}:
            continue  # FROM an earlier stage
        assert PINNED.match(stage.base), f"FROM {stage.base}: pin an exact tag and its @sha256 digest"


def test_build_and_runtime_share_one_base(stages: list[Stage]) -> None:
    assert len({s.base for s in stages}) == 1


def test_runtime_runs_as_the_fixed_non_root_user_of_the_task_definition(stages: list[Stage]) -> None:
    from infra.cdk.workers import WORKER_UID

    runtime = stages[-1]
    users = runtime.all("USER")
    assert users, "the runtime stage must set USER"
    assert users[-1] == WORKER_UID, f"USER {users[-1]} != the task definition's {WORKER_UID}"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) >= 1000 and int(gid) >= 1000
    # The user exists in the image with that very uid and gid, and cannot log in.
    created = " ".join(runtime.all("RUN"))
    assert f"--uid {uid}" in created and f"--gid {gid}" in created and "nologin" in created
    # Nothing after it switches back to root.
    last = max(i for i, (kw, _) in enumerate(runtime.instructions) if kw == "USER")
    assert all(kw != "USER" for kw, _ in runtime.instructions[last + 1:])


def test_nothing_at_run_time_needs_a_shell(stages: list[Stage]) -> None:
    runtime = stages[-1]
    for keyword in ("ENTRYPOINT", "CMD"):
        for args in runtime.all(keyword):
            assert isinstance(json.loads(args), list), f"{keyword} {args}: use the exec (JSON) form"
    assert runtime.all("ENTRYPOINT") == ['["python", "-m", "skyloom_server.fargate_worker"]']
    for args in runtime.all("HEALTHCHECK"):
        assert args == "NONE" or "CMD [" in args, f"HEALTHCHECK {args}: exec form or NONE"
    assert "SHELL" not in {kw for kw, _ in runtime.instructions}


def test_runtime_writes_only_under_the_mounted_scratch_path(stages: list[Stage]) -> None:
    from infra.cdk.workers import SCRATCH_PATH

    env: dict[str, str] = {}
    for args in stages[-1].all("ENV"):
        env.update(dict(item.split("=", 1) for item in shlex.split(args)))
    assert env["TMPDIR"] == SCRATCH_PATH
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # the root filesystem (site-packages) is read-only


def test_the_parser_reads_what_it_checks() -> None:
    args, stages = parse(
        "# c\nARG BASE=python:3.11.15-slim@sha256:" + "a" * 64 + "\nFROM ${BASE} AS b\nRUN a \\\n  b\n"
        "FROM ${BASE}\nUSER 10001:10001\nENTRYPOINT [\"python\"]\n"
    )
    assert args == {"BASE": "python:3.11.15-slim@sha256:" + "a" * 64}
    assert [s.name for s in stages] == ["b", None]
    assert stages[0].all("RUN") == ["a    b"]
    assert stages[1].all("USER") == ["10001:10001"]
    assert PINNED.match(stages[1].base)
    assert not PINNED.match("python:3.11-slim") and not PINNED.match("python@sha256:" + "a" * 64)
