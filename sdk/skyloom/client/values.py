"""Reading the values (and errors) of settled futures that an answer left out.

A wait's answer carries values and errors up to the server's byte budget; the rest, and large
values (presigned S3 URLs), are read here: a wait with timeout 0 answers at once with as many as
fit, so N missing values cost about N x size / budget requests, and URLs are downloaded several at a
time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from skyloom.client.futures import Future, is_final, run_callbacks
from skyloom.core.protocol import MAX_IDS_PER_REQUEST
from skyloom.errors import SkyloomError

if TYPE_CHECKING:
    from skyloom.client.lowlevel import Client

#: Parallel downloads of presigned URLs when many large values are read at once.
DOWNLOAD_THREADS = 8


def load(client: Client, session_id: str, futures: Sequence[Future[Any]]) -> None:
    """Bring the values (or errors) of settled ``futures`` into memory: as few requests as the
    answer budget allows, then the downloads of large values.

    Raises:
        SkyloomError: a download failed twice (the second time with a fresh URL).
    """
    retried = False
    while True:
        for chunk in _chunks([f for f in futures if f._needs_detail()], MAX_IDS_PER_REQUEST):
            _fill(client, session_id, chunk)
        failed = _download(client, [f for f in futures if f._needs_download()])
        if not failed:
            return
        if retried:
            raise failed[0][1]
        # A URL can expire before its turn (the server's presign lifetime may be short): ask again.
        for f, _ in failed:
            f._forget_url()
        retried = True


def _fill(client: Client, session_id: str, futures: list[Future[Any]]) -> None:
    """Ask for the values or errors of settled futures (a wait with timeout 0 answers at once)."""
    ids = list(dict.fromkeys(f.id for f in futures))
    while ids:
        answer = client.wait_once(session_id, ids, timeout=0.0, values=True)
        by_id = {v.result_id: v for v in answer.values}
        infos = {i.result_id: i for i in answer.results}
        cut = set(answer.incomplete)
        for f in futures:
            info = infos.get(f.id)
            if info is not None and is_final(info.status):
                run_callbacks(f, f._settle(info, by_id.get(f.id), f.id in cut))
        left = [i for i in ids if i in cut]
        if len(left) == len(ids):
            raise SkyloomError(f"the server answered none of the values of results {', '.join(ids[:5])}")
        ids = left


def _download(client: Client, futures: list[Future[Any]]) -> list[tuple[Future[Any], SkyloomError]]:
    """Download the values behind presigned URLs, several at once; returns the failed ones."""

    def one(f: Future[Any]) -> tuple[Future[Any], SkyloomError] | None:
        url = f._url
        if url is None:
            return None
        try:
            f._set_data(client.download_url(url[0]))
        except SkyloomError as exc:
            return f, exc
        return None

    if len(futures) <= 1:
        outcomes = [one(f) for f in futures]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(DOWNLOAD_THREADS, len(futures))) as pool:
            outcomes = list(pool.map(one, futures))
    return [o for o in outcomes if o is not None]


def _chunks(items: Sequence[Future[Any]], size: int) -> Iterator[list[Future[Any]]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])
