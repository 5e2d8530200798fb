"""The authorization matrix: identity B against identity A's objects, on every route and CLI command.

Invariant 6 (nothing in a session is readable or writable by another identity), end to end: real
HTTP, real SigV4 verified by the gateway, two real identities (B is minted into the local stack's
run directory, as ``skyloom local identity`` does). A builds one small session (inline, uploaded
and task-produced results, a completed task) plus a closed one; then B tries every operation of the
REST API on A's sessions, and on its own session with A's result and task ids, and every CLI
command. Every attempt must be refused with 403 or 404 without a word about A's objects, and a
before/after snapshot (through A's own API view, and for the local stack the raw DynamoDB items
and S3 objects) proves nothing changed.

Two tests keep the matrix honest: every operation in the OpenAPI document and every CLI command
must appear in it, so a new route or command cannot ship untested. Against an external deployment
(``SKYLOOM_TEST_ENDPOINT``) give B's credentials as ``SKYLOOM_TEST_SECOND_IDENTITY=key:secret``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import typer
import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from typer.testing import CliRunner

import skyloom
from skyloom.cli import app as cli_app
from skyloom.client.specs import TaskRequest
from skyloom.core.protocol import ResultSpec
from skyloom.core.resources import TABLES
from skyloom.local import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY, LocalStack
from skyloom.local.credentials import mint_identity

pytestmark = pytest.mark.slow

TIMEOUT = 120.0
SECOND_IDENTITY_ENV = "SKYLOOM_TEST_SECOND_IDENTITY"
#: Operations that do not act on an existing object, so there is nothing of A's to attack.
#: GET /environment names no object: the workers' Python and cloudpickle versions, the same for every
#: identity (tests/functional/test_worker_environment.py checks it needs one).
#: GET /pricing is the stack's price sheet, the same for everyone. The measurement routes name no
#: object either: every identity reads its own measurements under any key, never another's
#: (tests/e2e/test_metrics.py checks that B reading A's key finds nothing).
NOT_OBJECT_ROUTES = {("POST", "/sessions"), ("GET", "/sessions"), ("GET", "/environment"), ("GET", "/pricing"),
                     ("POST", "/metrics/latest"), ("GET", "/metrics/{key}"), ("GET", "/metrics/{key}/{name}"),
                     ("GET", "/durations")}
#: CLI commands that never touch an existing session: they start a stack or make their own session,
#: or read the caller's own measurements (``metrics``, as the routes above).
NOT_OBJECT_COMMANDS = {"local", "bench", "metrics"}
#: How the CLI says "nothing of yours by that id" (a 404, or no session of the caller holds the id).
REFUSALS = ("not found", "in any of your sessions", "unknown task id", "unknown result id")


class Signed:
    """A minimal SigV4 client that returns the raw status and body (the SDK would raise)."""

    def __init__(self, endpoint: str, key: str, secret: str) -> None:
        self.endpoint, self.creds = endpoint, Credentials(key, secret)
        self.http = urllib3.PoolManager()

    def __call__(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else b""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        req = AWSRequest(method=method, url=self.endpoint + path, data=data, headers=headers)
        SigV4Auth(self.creds, "execute-api", "us-east-1").add_auth(req)
        resp = self.http.request(method, self.endpoint + path, body=data or None, headers=dict(req.headers.items()))
        try:
            return resp.status, json.loads(resp.data) if resp.data else None
        except ValueError:
            return resp.status, resp.data.decode("utf-8", "replace")


@dataclass(frozen=True)
class World:
    endpoint: str
    a: Signed
    b: Signed
    b_key: str
    b_secret: str
    a_owner: str
    sid: str  # A's running session
    ended: str  # A's closed session (purge/delete would succeed for A)
    b_sid: str  # B's own session
    inline: str  # A's result uploaded inline
    big: str  # A's result uploaded through a presigned URL
    awaited: str  # A's result that nothing produces yet
    out: str  # A's result produced by a task
    tid: str  # the task that produced it
    a_list_token: str | None
    a_events_cursor: str | None
    stack: Any


def _second_identity(stack: Any) -> tuple[str, str]:
    if isinstance(stack, LocalStack):
        return mint_identity(stack.run_dir, "authz-bob")
    raw = os.environ.get(SECOND_IDENTITY_ENV, "")
    key, _, secret = raw.partition(":")
    if not key or not secret:
        pytest.skip(f"an external stack needs a second identity in {SECOND_IDENTITY_ENV}=key:secret")
    return key, secret


@pytest.fixture(scope="module")
def world(local_stack: Any) -> Iterator[World]:
    endpoint = local_stack.endpoint
    b_key, b_secret = _second_identity(local_stack)
    client = skyloom.connect(endpoint, credentials=(LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY))
    try:
        s = client.create_session(name="authz-a")
        inline = client.upload(s.session_id, b"inline value")
        big = client.upload(s.session_id, os.urandom(client.inline_limit + 4096))
        awaited, out = (r.result_id for r in client.create_results(s.session_id, [ResultSpec(), ResultSpec()]))
        sub = client.submit_tasks(
            s.session_id, [TaskRequest("e2e.reverse", expected_outputs=[out], data_dependencies=[inline], payload=b"p")]
        )
        client.wait_results(s.session_id, [out], timeout=TIMEOUT)
        ended = client.create_session(name="authz-a-ended").session_id
        client.close_session(ended)
        token = client.list_sessions(limit=1).next
        cursor = client.events(s.session_id).cursor
    finally:
        client.close()
    a = Signed(endpoint, LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY)
    b = Signed(endpoint, b_key, b_secret)
    status, b_session = b("POST", "/sessions", {"name": "authz-b"})
    assert status == 201, b_session
    assert b_session["owner"] != s.owner, "B must be a different principal"
    yield World(endpoint, a, b, b_key, b_secret, s.owner, s.session_id, ended, b_session["session_id"], inline, big,
                awaited, out, sub.tasks[0].task_id, token, cursor, local_stack)


# ------------------------------------------------------------------------------------ snapshots
def _api_view(w: World) -> dict[str, Any]:
    """Everything A can see of its two sessions, values included (downloaded, not URLs)."""
    view: dict[str, Any] = {}
    for sid in (w.sid, w.ended):
        for what in ("", "/tasks?limit=1000", "/results?limit=1000", "/events?limit=1000"):
            status, body = w.a("GET", f"/sessions/{sid}{what}")
            assert status == 200, body
            if what.startswith("/events"):
                # The feed moves changes from ``recent`` to the settled page (and its cursor on) as
                # time passes its settle horizon, with no write at all: compare the changes only.
                body = sorted(map(repr, [*body.get("events", []), *body.get("recent", [])]))
            view[f"{sid}{what}"] = body
    for rid in (w.inline, w.big, w.out):
        status, body = w.a("GET", f"/sessions/{w.sid}/results/{rid}/data")
        assert status == 200, body
        if body.get("download_url"):
            body["download_url"] = hashlib.sha256(urllib3.request("GET", body["download_url"]).data).hexdigest()
        view[f"data/{rid}"] = body
    return view


def _raw_view(w: World) -> dict[str, Any]:
    """For the local stack: every item of A's sessions in every table, B's sessions, A's S3 objects."""
    stack = w.stack
    if not isinstance(stack, LocalStack):
        return {}
    kwargs = {"endpoint_url": stack.aws_endpoint, "region_name": stack.settings.region,
              "aws_access_key_id": LOCAL_ACCESS_KEY_ID, "aws_secret_access_key": LOCAL_SECRET_ACCESS_KEY}
    ddb, s3 = boto3.client("dynamodb", **kwargs), boto3.client("s3", **kwargs)
    ours = {w.sid, w.ended, w.b_sid}
    view: dict[str, Any] = {}
    for spec in TABLES:
        items = []
        for page in ddb.get_paginator("scan").paginate(TableName=stack.settings.table_name(spec), ConsistentRead=True):
            items.extend(page["Items"])
        if spec.logical == "edges":
            result_ids = {i["result_id"]["S"] for i in view.get("results", [])}
            kept = [i for i in items if i["result_id"]["S"] in result_ids]
        else:
            kept = [i for i in items if i.get("session_id", {}).get("S") in ours
                    or i.get("owner", {}).get("S") not in (None, w.a_owner)]  # anything B (or others) own
        view[spec.logical] = sorted(kept, key=lambda i: repr(sorted(i.items())))
    objects = []
    for sid in (w.sid, w.ended):
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=stack.settings.bucket, Prefix=f"sessions/{sid}/")
        for page in pages:
            objects.extend((o["Key"], o["ETag"], o["Size"]) for o in page.get("Contents", []))
    view["s3"] = sorted(objects)
    return view


def snapshot(w: World) -> dict[str, Any]:
    return {"api": _api_view(w), "raw": _raw_view(w)}


# --------------------------------------------------------------------------------------- matrix
def route_attempts(w: World) -> list[tuple[str, str, Any]]:
    """(method, path, body) of every operation, as B, on A's objects; bodies are valid requests."""
    s, e, b = f"/sessions/{w.sid}", f"/sessions/{w.ended}", f"/sessions/{w.b_sid}"
    return [
        # A's sessions, addressed directly
        ("GET", s, None),
        ("POST", f"{s}/close", None),
        ("POST", f"{s}/cancel", None),
        ("POST", f"{s}/pause", None),
        ("POST", f"{s}/resume", None),
        ("POST", f"{e}/purge", None),
        ("DELETE", e, None),
        ("POST", f"{s}/results", {"results": [{"name": "planted", "data": "eA=="}]}),
        ("POST", f"{s}/results/complete", {"ids": [w.big]}),
        ("POST", f"{s}/results/get", {"ids": [w.out]}),
        ("POST", f"{s}/results/wait", {"ids": [w.out], "timeout": 0}),
        ("GET", f"{s}/results/{w.out}", None),
        ("GET", f"{s}/results/{w.out}/data", None),
        ("GET", f"{s}/results/{w.big}/data", None),
        ("GET", f"{s}/results", None),
        ("POST", f"{s}/tasks", {"results": [{"id": "planted"}],
                                "tasks": [{"handler": "e2e.reverse", "expected_outputs": ["planted"]}]}),
        ("POST", f"{s}/tasks/get", {"ids": [w.tid]}),
        ("GET", f"{s}/tasks/{w.tid}", None),
        ("GET", f"{s}/tasks/{w.tid}/logs", None),
        ("GET", f"{s}/tasks/{w.tid}/checkpoints", None),
        ("GET", f"{s}/tasks", None),
        ("POST", f"{s}/tasks/cancel", {"ids": [w.tid]}),
        ("GET", f"{s}/events", None),
        # B's own session, naming A's results and tasks
        ("GET", f"{b}/results/{w.out}", None),
        ("GET", f"{b}/results/{w.out}/data", None),
        ("GET", f"{b}/results/{w.big}/data", None),
        ("POST", f"{b}/results/get", {"ids": [w.inline]}),
        ("POST", f"{b}/results/wait", {"ids": [w.out], "timeout": 0}),
        ("POST", f"{b}/results/complete", {"ids": [w.big]}),
        ("GET", f"{b}/tasks/{w.tid}", None),
        ("GET", f"{b}/tasks/{w.tid}/logs", None),
        ("GET", f"{b}/tasks/{w.tid}/checkpoints", None),
        ("POST", f"{b}/tasks/get", {"ids": [w.tid]}),
        ("POST", f"{b}/tasks/cancel", {"ids": [w.tid]}),
        ("POST", f"{b}/tasks", {"results": [{"id": "mine-1"}],  # depend on A's value
                                "tasks": [{"handler": "e2e.reverse", "expected_outputs": ["mine-1"],
                                           "data_dependencies": [w.inline]}]}),
        ("POST", f"{b}/tasks", {"tasks": [{"handler": "e2e.reverse", "expected_outputs": [w.awaited]}]}),
        ("POST", f"{b}/tasks", {"results": [{"id": "mine-2"}],  # A's blob as payload
                                "tasks": [{"handler": "e2e.reverse", "expected_outputs": ["mine-2"],
                                           "payload_result": w.big}]}),
    ]


def _template(path: str, w: World) -> str:
    """The OpenAPI path of a concrete path (ids replaced by their parameter names)."""
    path = urlsplit(path).path
    for value, name in ((w.sid, "session_id"), (w.ended, "session_id"), (w.b_sid, "session_id"),
                        (w.out, "result_id"), (w.big, "result_id"), (w.tid, "task_id")):
        path = path.replace(f"/{value}", "/{" + name + "}")
    return path


def test_every_route_refuses_identity_b_and_changes_nothing(world: World) -> None:
    w = world
    before = snapshot(w)
    attempts = route_attempts(w)
    failures = []
    for method, path, body in attempts:
        status, answer = w.b(method, path, body)
        text = json.dumps(answer)
        if status not in (403, 404):
            failures.append(f"{method} {path} -> {status} {text[:300]}")
        elif w.a_owner in text or "authz-a" in text:
            failures.append(f"{method} {path} -> {status} mentions A's objects: {text[:300]}")
    assert not failures, "identity B was not refused:\n" + "\n".join(failures)

    # Listings: B sees none of A's sessions, and A's pagination token and events cursor open nothing.
    status, page = w.b("GET", "/sessions?limit=100")
    assert status == 200 and {x["session_id"] for x in page["sessions"]} == {w.b_sid}, page
    if w.a_list_token:
        status, page = w.b("GET", f"/sessions?next={w.a_list_token}")
        assert status == 400 and "another listing" in page["message"], page
    if w.a_events_cursor:
        status, page = w.b("GET", f"/sessions/{w.b_sid}/events?after={w.a_events_cursor}")
        assert status in (200, 400), page
        assert w.sid not in json.dumps(page)
    status, page = w.b("GET", f"/sessions/{w.b_sid}/tasks?parent={w.tid}")
    assert status == 200 and page["tasks"] == [], page

    # A client-chosen id that another tenant already uses answers exactly like any taken id: 409,
    # naming neither the session nor the owner that holds it (docs/security-model.md).
    status, answer = w.b("POST", f"/sessions/{w.b_sid}/results", {"results": [{"id": w.out}]})
    assert status == 409 and w.sid not in json.dumps(answer) and w.a_owner not in json.dumps(answer), answer

    assert snapshot(w) == before, "a refused request changed A's session"

    # The same requests as A are accepted (the matrix tests ownership, not malformed requests).
    assert w.a("GET", f"/sessions/{w.sid}/tasks/{w.tid}")[0] == 200
    assert w.a("POST", f"/sessions/{w.sid}/results/get", {"ids": [w.out]})[0] == 200


def test_the_matrix_covers_every_operation(world: World) -> None:
    document = json.loads((Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text())
    operations = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    covered = {(m, _template(p, world)) for m, p, _ in route_attempts(world)}
    missing = operations - covered - NOT_OBJECT_ROUTES
    assert not missing, f"routes without an authorization check: {sorted(missing)}"


# ------------------------------------------------------------------------------------------ CLI
def cli_attempts(w: World, tmp: Path) -> list[list[str]]:
    s, e = w.sid, w.ended
    return [
        ["sessions", "show", s],
        ["sessions", "cancel", s], ["sessions", "pause", s], ["sessions", "resume", s], ["sessions", "close", s],
        ["sessions", "purge", e], ["sessions", "delete", e, "--yes"],
        ["tasks", "list", s],
        ["tasks", "show", w.tid], ["tasks", "show", w.tid, "--session", s],
        ["tasks", "logs", w.tid], ["tasks", "logs", w.tid, "--session", s, "--attempt", "1"],
        ["tasks", "cancel", s, w.tid], ["tasks", "cancel", w.b_sid, w.tid],
        ["results", "list", s],
        ["results", "show", w.out], ["results", "show", w.out, "--session", s],
        ["results", "download", w.out, "--session", s, "-o", str(tmp / "stolen")],
        ["results", "download", w.big, "-o", str(tmp / "stolen")],
        ["watch", s, "--timeout", "5"],
        ["graph", s],
        ["stats", s],
    ]


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every leaf command's path (typer may vendor its own click, hence the duck typing)."""
    found: set[tuple[str, ...]] = set()
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            found |= _commands(cmd, (*prefix, name))
        else:
            found.add((*prefix, name))
    return found


def test_every_cli_command_refuses_identity_b_and_changes_nothing(world: World, tmp_path: Path) -> None:
    w = world
    env = {"SKYLOOM_ENDPOINT": w.endpoint, "SKYLOOM_ACCESS_KEY_ID": w.b_key, "SKYLOOM_SECRET_ACCESS_KEY": w.b_secret}
    runner = CliRunner()
    before = snapshot(w)
    failures = []
    for args in cli_attempts(w, tmp_path):
        r = runner.invoke(cli_app, args, env=env)
        out = r.output + (r.stderr if r.stderr_bytes is not None else "")
        if r.exit_code != 1 or not any(m in out for m in REFUSALS):
            failures.append(f"skyloom {' '.join(args)} -> exit {r.exit_code}: {out[-300:]}")
        elif w.a_owner in out:
            failures.append(f"skyloom {' '.join(args)} mentions A: {out[-300:]}")
    assert not failures, "the CLI as identity B was not refused:\n" + "\n".join(failures)
    assert not (tmp_path / "stolen").exists()
    listing = runner.invoke(cli_app, ["sessions", "list", "--json"], env=env)
    assert listing.exit_code == 0 and w.sid not in listing.output and w.ended not in listing.output
    assert snapshot(w) == before, "a refused CLI command changed A's session"

    covered = {("sessions", "list")}
    for args in cli_attempts(w, tmp_path):
        covered |= {tuple(args[:1]), tuple(args[:2])}
    commands = {c for c in _commands(typer.main.get_command(cli_app)) if c[0] not in NOT_OBJECT_COMMANDS}
    missing = commands - covered
    assert not missing, f"CLI commands without an authorization check: {sorted(missing)}"
