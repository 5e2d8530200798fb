"""Task checkpoints on in-process moto: the store's rules (latest kept, a stale attempt cannot
overwrite a newer one, inline or S3), the in-task API over it, the drop on completion, the purge,
and getTaskCheckpoints for the owner only."""

from __future__ import annotations

import pickle

import boto3
import pytest

from skyloom.core import checkpoints, sessions
from skyloom.core.checkpoints import CheckpointSuperseded
from skyloom.core.config import Settings
from skyloom.core.models import CheckpointModel
from skyloom.runtime import checkpointing, store
from skyloom.runtime.context import TaskContext
from skyloom.runtime.outcome import TaskInput
from tests.functional.conftest import IDENTITY_B, ApiClient
from tests.functional.test_resolution import submit


@pytest.fixture(autouse=True)
def _fresh_state(aws_stack: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    sessions._status_cache.clear()
    monkeypatch.setattr(store, "_settings", aws_stack)


def _objects(settings: Settings, prefix: str) -> list[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=settings.bucket, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


def _in_task(task_id: str, session_id: str, attempt: int) -> TaskContext:
    return TaskContext(TaskInput(task_id, session_id, "h", b"", {}, ["o"], {}, attempt=attempt))


def test_the_latest_is_kept_small_inline_large_in_s3_and_the_replaced_object_goes(aws_stack: Settings) -> None:
    # GIVEN a task that checkpoints a small state, then two large ones (over the 1 KiB inline limit)
    checkpoints.save(aws_stack, "s1", "t1", 1, 1, b"small")
    first = checkpoints.save(aws_stack, "s1", "t1", 1, 2, b"a" * 5000)
    second = checkpoints.save(aws_stack, "s1", "t1", 1, 3, b"b" * 5000, replaces=first)
    # THEN only the latest is kept, in S3 under the session's prefix; the one it replaced is gone
    stored, seq = checkpoints.load(aws_stack, "t1")
    assert stored is not None and (stored.seq, seq, stored.data) == (3, 3, b"b" * 5000)
    assert second is not None and _objects(aws_stack, "sessions/s1/checkpoints/") == [second]
    item = CheckpointModel.get(checkpoints.item_key("t1"))
    assert (item.taken, item.total_bytes, item.size, item.inline) == (3, 10_005, 5000, None)


def test_a_stale_attempt_cannot_overwrite_a_newer_attempts_checkpoint(aws_stack: Settings) -> None:
    # GIVEN attempt 2 has checkpointed (attempt 1's worker was presumed dead)
    checkpoints.save(aws_stack, "s1", "t1", 1, 1, b"one")
    checkpoints.save(aws_stack, "s1", "t1", 2, 2, b"two")
    # WHEN attempt 1, still running somewhere, checkpoints again, even with a higher number
    with pytest.raises(CheckpointSuperseded) as caught:
        checkpoints.save(aws_stack, "s1", "t1", 1, 9, b"stale" * 1000)
    # THEN it is refused, nothing of it is kept (not even its S3 object), and a replay is refused too
    assert caught.value.field == "seq"
    with pytest.raises(CheckpointSuperseded):
        checkpoints.save(aws_stack, "s1", "t1", 2, 2, b"two")
    stored, _ = checkpoints.load(aws_stack, "t1")
    assert stored is not None and (stored.attempt, stored.seq, stored.data) == (2, 2, b"two")
    assert _objects(aws_stack, "sessions/s1/checkpoints/") == []


def test_in_a_task_restore_returns_an_earlier_attempts_state_and_records_the_resume(aws_stack: Settings) -> None:
    # GIVEN attempt 1 of a task checkpointed twice
    with _in_task("t1", "s1", 1).active() as ctx:
        import skyloom

        assert skyloom.restore(default="none") == "none"
        assert skyloom.checkpoint({"step": 1}) == 1
        assert skyloom.checkpoint({"step": 2}) == 2
        ctx.send_result("o", b"done")
        assert ctx.outcome().checkpointed
    # WHEN attempt 2 restores, and checkpoints on
    with _in_task("t1", "s1", 2).active():
        assert skyloom.restore() == {"step": 2}
        assert skyloom.restore() == {"step": 2}  # asking again records nothing more
        assert skyloom.checkpoint({"step": 3}) == 3
    # THEN the item says attempt 2 resumed from attempt 1's checkpoint 2
    item = CheckpointModel.get(checkpoints.item_key("t1"))
    assert [(r["attempt"], r["from_attempt"], r["seq"]) for r in item.resumes] == [(2, 1, 2)]
    assert pickle.loads(item.inline) == {"step": 3}


def test_the_preemption_hook_runs_once_and_outside_a_task_the_api_says_where_it_works(aws_stack: Settings) -> None:
    import skyloom

    with _in_task("t1", "s1", 1).active():
        calls: list[int] = []
        skyloom.on_preempt(lambda: calls.append(skyloom.checkpoint("last")))
        checkpointing.preempt_running()
        checkpointing.preempt_running()
        assert calls == [1]
        with pytest.raises(TypeError, match="picklable"):
            skyloom.checkpoint(lambda: None)
    for call in (lambda: skyloom.checkpoint(1), skyloom.restore, lambda: skyloom.on_preempt(print)):
        with pytest.raises(RuntimeError, match="only available inside a running task"):
            call()


def test_completion_drops_the_value_keeps_the_counters_and_the_purge_deletes_the_item(
    api: ApiClient, aws_stack: Settings
) -> None:
    # GIVEN a task of a session with a large checkpoint
    sid = api.session()
    submit(api, sid, [{"id": "t", "handler": "h", "expected_outputs": ["o"]}], [{"id": "o"}])
    checkpoints.save(aws_stack, sid, "t", 1, 1, b"c" * 5000)
    # WHEN the task completes and its checkpoint is dropped (twice: a replay)
    assert checkpoints.drop(aws_stack, "t") and not checkpoints.drop(aws_stack, "t")
    # THEN no attempt gets it back, its object is gone, the counters stay for the task's view
    assert checkpoints.load(aws_stack, "t")[0] is None
    assert _objects(aws_stack, f"sessions/{sid}/checkpoints/") == []
    with pytest.raises(CheckpointSuperseded):  # and no late attempt writes one again
        checkpoints.save(aws_stack, sid, "t", 1, 2, b"late")
    resp = api.call("GET", f"/sessions/{sid}/tasks/t/checkpoints")
    assert resp.status == 200
    assert resp.json["taken"] == 1 and resp.json["dropped"] is True and resp.json["latest_size"] == 5000
    # and another identity sees no such task
    other = api.call("GET", f"/sessions/{sid}/tasks/t/checkpoints", identity=IDENTITY_B)
    assert other.status == 404
    assert api.call("GET", f"/sessions/{sid}/tasks/nope/checkpoints").field == "task_id"
    # WHEN the session is purged, the item goes
    assert api.call("POST", f"/sessions/{sid}/cancel").status == 200
    assert api.call("POST", f"/sessions/{sid}/purge").status == 200
    assert api.call("GET", f"/sessions/{sid}/tasks/t/checkpoints").json["taken"] == 0
