"""No payload bytes and no credentials in any log a real run writes.

Bank security reviews ask two questions of the logs: can an operator with log access read task
data, and can they lift a credential from them? This test answers both for the local stack by
running a small graph whose arguments, results and uploaded blobs all carry a unique marker, then
reading every log of the stack: the files in its run directory (emulator, the submit function's
containers, every worker agent, with its child processes) and everything this process wrote to its
file descriptors meanwhile (the gateway and the in-process resolve and dispatch functions log
there). Small values travel inline through DynamoDB, large ones through presigned S3 URLs, so both
paths are covered, and so is a request the API refuses (its validation error names the bad input).

What counts as a leak: the marker (raw, or base64 as it travels in JSON bodies), the secret access
key, and anything that looks like a SigV4 ``Authorization`` header, a presigned URL's signature or
a session token. Against a deployment (``SKYLOOM_TEST_ENDPOINT``) there is no run directory to read,
so the test skips; CloudWatch holds those logs.
"""

from __future__ import annotations

import base64
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

import skyloom
from skyloom.local import LOCAL_SECRET_ACCESS_KEY
from skyloom.local.credentials import IDENTITIES_FILE

pytestmark = pytest.mark.slow

TIMEOUT = 120.0
#: Unique per run, so that nothing but this test can have written it.
MARKER = f"SKYLOOM-LOG-CANARY-{uuid.uuid4().hex}"
#: Above ``Settings.inline_max_bytes`` (32 KiB): these go through S3 and presigned URLs.
LARGE = 64 * 1024

#: Shapes of credentials on the wire; none of them may reach a log.
CREDENTIAL_PATTERNS = {
    "SigV4 Authorization header": re.compile(r"AWS4-HMAC-SHA256\s+Credential=", re.IGNORECASE),
    "Authorization header": re.compile(r"""['"]?authorization['"]?\s*[:=]\s*['"]?\S""", re.IGNORECASE),
    "presigned URL signature": re.compile(r"X-Amz-Signature=", re.IGNORECASE),
    "request signature": re.compile(r"Signature=[0-9a-f]{64}", re.IGNORECASE),
    "session token": re.compile(r"X-Amz-Security-Token", re.IGNORECASE),
}


@skyloom.task
def seal(secret: str) -> str:
    """A small result that carries the argument's marker (stored inline)."""
    return f"sealed:{secret}"


@skyloom.task
def pad(secret: str, size: int) -> bytes:
    """A large result that carries the marker (stored in S3)."""
    unit = secret.encode()
    return (unit * (size // len(unit) + 1))[:size]


@skyloom.task
def combine(small: str, large: bytes) -> str:
    """A task whose inputs are both data dependencies: the worker downloads them."""
    return f"{small}|{len(large)}|{large[: len(MARKER)].decode()}"


def base64_needles(text: str) -> list[str]:
    """The part of ``text``'s base64 encoding that is the same at any of the 3 byte alignments.

    A marker inside a larger value is base64-encoded together with its neighbours; its middle
    characters only depend on where it starts modulo 3. The edge characters also depend on the
    neighbours, so they are dropped.
    """
    raw = text.encode()
    needles = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        start = -(-offset * 4 // 3) + 1
        needles.append(encoded[start:-4])
    return needles


def find_leaks(name: str, text: str) -> list[str]:
    """Every leak in one log's text, as ``"name: what (excerpt)"`` lines."""
    leaks = []
    for needle, what in [(MARKER, "payload marker"), (LOCAL_SECRET_ACCESS_KEY, "secret access key"),
                         *[(n, "payload marker (base64)") for n in base64_needles(MARKER)]]:
        at = text.find(needle)
        if at >= 0:
            leaks.append(f"{name}: {what}: ...{text[max(0, at - 120):at + 80]!r}...")
    for what, pattern in CREDENTIAL_PATTERNS.items():
        match = pattern.search(text)
        if match:
            leaks.append(f"{name}: {what}: ...{text[max(0, match.start() - 120):match.end() + 80]!r}...")
    return leaks


def test_the_finder_sees_what_it_looks_for() -> None:
    """The scan would catch each kind of leak (so a clean scan means something)."""
    wrapped = f"prefix {MARKER} suffix"
    for offset in range(3):
        assert find_leaks("x", base64.b64encode(b"ab"[:offset] + wrapped.encode()).decode())
    assert find_leaks("x", f"password {LOCAL_SECRET_ACCESS_KEY}")
    assert find_leaks("x", "headers={'Authorization': 'AWS4-HMAC-SHA256 Credential=AKIA/2024'}")
    assert find_leaks("x", "GET /bucket/key?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=ab12")
    assert find_leaks("x", "plain log line: task 1234 done in 0.2 s") == []


def test_no_payload_or_credential_reaches_any_log(
    local_stack: Any, client: skyloom.Client, capfd: pytest.CaptureFixture[str]
) -> None:
    run_dir = getattr(local_stack, "run_dir", None)
    if run_dir is None:
        pytest.skip("a deployment's logs are in CloudWatch, not in a run directory")
    blob = (MARKER.encode() * (LARGE // len(MARKER) + 1))[:LARGE]
    with client.session() as session:
        small = seal.submit(MARKER)
        large = pad.submit(MARKER, LARGE)
        both = combine.submit(small, large)
        uploaded = session.upload(blob)
        assert both.result(timeout=TIMEOUT) == f"sealed:{MARKER}|{LARGE}|{MARKER}"
        assert large.result(timeout=TIMEOUT) == blob
        assert session.download(uploaded) == blob
    # A request the API refuses: pydantic's error carries the offending input, which must stay out
    # of the submit function's log (and out of the answer).
    with pytest.raises(skyloom.SkyloomError) as refused:
        client._t.request("POST", "/sessions", {"priority": MARKER, "name": MARKER})
    assert MARKER not in str(refused.value)

    leaks: list[str] = []
    out, err = capfd.readouterr()
    leaks += find_leaks("this process (gateway, resolve, dispatch) stdout", out)
    leaks += find_leaks("this process (gateway, resolve, dispatch) stderr", err)
    # Every file of the run directory but the local credential store (minted identities' secrets
    # live there by design, mode 0600, like ~/.aws/credentials; it is not a log).
    logs = sorted(p for p in Path(run_dir).rglob("*") if p.is_file() and IDENTITIES_FILE not in p.name)
    assert any(p.name.startswith("worker-") for p in logs), f"no worker logs in {run_dir}: {logs}"
    for path in logs:
        leaks += find_leaks(str(path.relative_to(run_dir)), path.read_bytes().decode("utf-8", "replace"))
    assert leaks == [], "\n".join(leaks)
