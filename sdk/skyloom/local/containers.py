"""Lambda execution environments for local mode: a pool of processes, each one "container".

On AWS every concurrent request to a function runs in its own execution environment, and handler
code relies on that (Powertools' resolver keeps the current event in class attributes). Running the
submit function in threads of one interpreter would let two requests see each other's event, so the
gateway hands each request to one of these processes instead; a long-polling wait then occupies one
container, as on AWS, and never delays the other callers.

Containers are plain ``python -m skyloom.local.containers`` subprocesses speaking JSON lines on a
private pipe (not ``multiprocessing``, which would re-import the user's ``__main__`` script when a
program starts an embedded stack without an ``if __name__ == "__main__"`` guard). Their stdout and
stderr, where the function logs, go to a log file in the stack's run directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from skyloom.core import heap
from skyloom.local.invoke import LambdaContext


class ContainerError(RuntimeError):
    """A container died or answered nonsense; the request fails like a Lambda runtime error."""


class _Container:
    def __init__(self, ref: str, env: Mapping[str, str], log: IO[bytes]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "skyloom.local.containers", ref],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env={**os.environ, **env},
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.to_child: IO[bytes] = self.proc.stdin
        self.from_child: IO[bytes] = self.proc.stdout

    def call(self, message: dict[str, Any]) -> Any:
        try:
            self.to_child.write(json.dumps(message).encode() + b"\n")
            self.to_child.flush()
            line = self.from_child.readline()
        except (BrokenPipeError, OSError) as exc:
            raise ContainerError(f"submit container died: {exc}") from exc
        if not line:
            raise ContainerError(f"submit container exited with code {self.proc.poll()}")
        reply = json.loads(line)
        if "error" in reply:
            raise ContainerError(reply["error"])
        return reply["response"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)
        for pipe in (self.to_child, self.from_child):
            pipe.close()


class ContainerPool:
    """``size`` containers serving ``ref`` (``"package.module:function"``), started warm.

    Calling the pool invokes the function in an idle container; a container that dies is replaced.
    """

    def __init__(self, ref: str, *, size: int, env: Mapping[str, str], log_path: Path | None = None) -> None:
        if size < 1:
            raise ValueError("a container pool needs at least one container")
        self._ref, self._size, self._env = ref, size, dict(env)
        self._log: IO[bytes] = open(log_path, "ab") if log_path else open(os.devnull, "wb")  # noqa: SIM115
        self._idle: queue.Queue[_Container] = queue.Queue()
        self._all: list[_Container] = []
        self._lock = threading.Lock()

    def _spawn(self) -> _Container:
        c = _Container(self._ref, self._env, self._log)
        with self._lock:
            self._all.append(c)
        return c

    def start(self) -> None:
        """Boot every container and wait until each has imported the function."""
        booting = [self._spawn() for _ in range(self._size)]
        for c in booting:
            c.call({"ping": True})
            self._idle.put(c)

    def __call__(self, event: dict[str, Any], context: LambdaContext) -> Any:
        c = self._idle.get()
        try:
            response = c.call({
                "event": event,
                "function_name": context.function_name,
                "region": context.region,
                "timeout": context.timeout_seconds,
                "request_id": context.aws_request_id,
            })
        except ContainerError:
            c.stop()
            self._idle.put(self._spawn())
            raise
        self._idle.put(c)
        return response

    def stop(self) -> None:
        with self._lock:
            containers, self._all = self._all, []
        for c in containers:
            with contextlib.suppress(Exception):
                c.stop()
        self._log.close()


def _serve(ref: str) -> None:
    """The container's loop: import the function once (cold start), then one request at a time."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything the function prints goes to the log, never into the protocol
    sys.stdout = os.fdopen(1, "w", buffering=1)
    from skyloom.local.invoke import init, load_handler

    handler = load_handler(ref)
    init(handler)  # before the pool's ping is answered: the container is warm once it is up
    heap.settle()  # as the function's module does at init on Lambda
    for line in sys.stdin:
        message = json.loads(line)
        if message.get("ping"):
            proto.write(json.dumps({"response": "pong"}) + "\n")
            continue
        context = LambdaContext(
            function_name=message["function_name"],
            region=message["region"],
            timeout_seconds=message["timeout"],
            aws_request_id=message["request_id"],
        )
        try:
            reply: dict[str, Any] = {"response": handler(message["event"], context)}
        except Exception as exc:
            import traceback

            traceback.print_exc()
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        proto.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    _serve(sys.argv[1])
