"""The S3 adapter for result values too large to sit inline in DynamoDB.

Keys are ``sessions/<session>/results/<result>/<writer>``: the writer part (an attempt token or
``upload``) means two attempts racing on one result never overwrite each other's object; the result
item records which one won, so readers only ever see one value (invariant 3).

Isolation: the session part is a uuid4 the server generates (never client-chosen), so knowing every
key of one session says nothing about another session's keys, even where result ids are
client-chosen. Objects are reached only through the control plane: the bucket is private, and a
presigned URL is signed for one key and one method and expires after ``Settings.presign_seconds``
(``SKYLOOM_PRESIGN_SECONDS``, 300 s by default, at most an hour; S3 checks the expiry when a transfer
starts, so a long upload begun in time completes).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError

from skyloom.core.aws import client
from skyloom.core.config import Settings

_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="skyloom-blobs")


def result_key(session_id: str, result_id: str, writer: str) -> str:
    return f"sessions/{session_id}/results/{result_id}/{writer}"


def log_key(session_id: str, task_id: str, writer: str) -> str:
    """Where an attempt's log goes when it is too large for its attempt record: under the session's
    prefix, so that purging the session deletes it with the values."""
    return f"sessions/{session_id}/logs/{task_id}/{writer}"


def checkpoint_key(session_id: str, task_id: str, writer: str) -> str:
    """Where a task's checkpoint goes when it is too large to sit inline: under the session's prefix,
    so that purging the session deletes it with the values."""
    return f"sessions/{session_id}/checkpoints/{task_id}/{writer}"


def delete(settings: Settings, key: str) -> None:
    """Delete one object (nothing happens if it is already gone)."""
    client("s3", settings).delete_object(Bucket=settings.bucket, Key=key)


def session_prefix(session_id: str) -> str:
    return f"sessions/{session_id}/"


def put(settings: Settings, key: str, data: bytes) -> None:
    client("s3", settings).put_object(Bucket=settings.bucket, Key=key, Body=data)


def get(settings: Settings, key: str) -> bytes:
    body: Any = client("s3", settings).get_object(Bucket=settings.bucket, Key=key)["Body"]
    data: bytes = body.read()
    return data


def get_many(settings: Settings, keys: dict[str, str]) -> dict[str, bytes]:
    """Download several objects concurrently: ``{name: key}`` -> ``{name: bytes}``."""
    if not keys:
        return {}
    if len(keys) == 1:
        ((name, key),) = keys.items()
        return {name: get(settings, key)}
    futures = {name: _pool.submit(get, settings, key) for name, key in keys.items()}
    return {name: f.result() for name, f in futures.items()}


def put_many(settings: Settings, objects: dict[str, bytes]) -> None:
    """Upload ``{key: bytes}`` concurrently."""
    if len(objects) <= 1:
        for key, data in objects.items():
            put(settings, key, data)
        return
    for f in [_pool.submit(put, settings, key, data) for key, data in objects.items()]:
        f.result()


def size(settings: Settings, key: str) -> int | None:
    """The object's size, or None if it does not exist (an upload that never happened)."""
    try:
        head = client("s3", settings).head_object(Bucket=settings.bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return int(head["ContentLength"])


def presign_put(settings: Settings, key: str) -> str:
    url: str = client("s3", settings).generate_presigned_url(
        "put_object", Params={"Bucket": settings.bucket, "Key": key}, ExpiresIn=settings.presign_seconds
    )
    return url


def presign_get(settings: Settings, key: str) -> str:
    url: str = client("s3", settings).generate_presigned_url(
        "get_object", Params={"Bucket": settings.bucket, "Key": key}, ExpiresIn=settings.presign_seconds
    )
    return url
