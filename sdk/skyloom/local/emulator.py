"""The embedded AWS: moto in server mode, in its own process, on a loopback port.

moto runs behind gunicorn rather than ``moto_server`` because moto's own server answers
``Connection: close`` on every request, and keep-alive makes every boto3 call ~1.5x faster. The
served app is :mod:`skyloom.local.moto_app`: the only place Skyloom patches moto (and only in this
process), seven changes listed with why and the test that pins each in EMULATORS.md at the
repository root. It is a subprocess so that the control plane threads and moto's request handling do
not share one GIL, and so that worker processes reach it over real HTTP exactly as they would reach
AWS. Exactly one gunicorn worker serves it, because moto keeps all state in that process's memory;
a local stack runs two of these, one for SQS and one for the rest (:mod:`skyloom.local.stack`).

The listening socket is bound here and handed to gunicorn (``--bind fd://N``), so the port is known
before the child starts and no other process can take it in between.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from skyloom.core.aws import FAULTS_ENV_PREFIX
from skyloom.local.credentials import LOCAL_ACCOUNT_ID, scrubbed
from skyloom.runtime.lifeline import PARENT_PID_ENV

#: gunicorn's worker class and its threads: enough concurrent requests for 16 SQS long-polls
#: (worker agents) while the control plane keeps working.
GUNICORN_THREADS = 16
KEEP_ALIVE_SECONDS = 30


class EmulatorError(RuntimeError):
    """The emulator process did not start or died."""


class Emulator:
    """moto served by one gunicorn worker on ``127.0.0.1``.

    Args:
        run_dir: Where ``emulator.log`` (the process's stdout and stderr) is written.
        port: Port to listen on; 0 picks a free one.
        threads: gunicorn threads, i.e. requests served at the same time.
        name: What it serves, in its log file's name (``emulator-NAME.log``); "" for ``emulator.log``.

    Example:
        >>> emu = Emulator(Path("/tmp/run"))
        >>> emu.start()
        >>> boto3.client("sqs", endpoint_url=emu.url, ...)
        >>> emu.stop()
    """

    def __init__(self, run_dir: Path, *, port: int = 0, threads: int = GUNICORN_THREADS, name: str = "") -> None:
        self._run_dir = run_dir
        self._name = name
        self._requested_port = port
        self._threads = threads
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._port: int | None = None

    # -- public ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Endpoint URL for boto3 (``http://127.0.0.1:PORT``)."""
        if self._port is None:
            raise EmulatorError("the emulator is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path:
        return self._run_dir / (f"emulator-{self._name}.log" if self._name else "emulator.log")

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """Start the process and return once it answers HTTP.

        Raises:
            EmulatorError: the process exited, or did not answer within ``timeout`` seconds.
        """
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process without waiting for it (several emulators then start side by side:
        :meth:`wait_ready` each); the port is known on return."""
        if self._process is not None:
            raise EmulatorError("the emulator is already started")
        self._run_dir.mkdir(parents=True, exist_ok=True)
        sock = self._bind()
        try:
            self._port = sock.getsockname()[1]
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
            self._process = subprocess.Popen(
                self._command(sock.fileno()),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=self._environment(),
                pass_fds=(sock.fileno(),),
                # Own session: Ctrl-C in a terminal must not kill AWS before the workers drain.
                start_new_session=True,
            )
        finally:
            # The child holds its own copy of the socket now.
            sock.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Return once the launched process answers HTTP; stop it if it does not.

        Raises:
            EmulatorError: the process exited, or did not answer within ``timeout`` seconds.
        """
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after ``timeout``); safe to call twice."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- steps -----------------------------------------------------------------------------------
    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._requested_port))
        sock.listen(128)
        sock.set_inheritable(True)
        return sock

    def _command(self, fd: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            "1",
            "--worker-class",
            "gthread",
            "--threads",
            str(self._threads),
            "--keep-alive",
            str(KEEP_ALIVE_SECONDS),
            # SQS long-polls last up to 20 s; a shutdown must not wait for them.
            "--graceful-timeout",
            "2",
            # A request is never killed for being slow: moto's SQS can be slow on deep queues.
            "--timeout",
            "0",
            "--bind",
            f"fd://{fd}",
            "--log-level",
            "warning",
            "skyloom.local.moto_app:app",
        ]

    def _environment(self) -> dict[str, str]:
        # moto calls boto3 internally: a developer's AWS_PROFILE that names no local profile
        # would make every request fail with ProfileNotFound. The emulator stands for AWS itself:
        # faults are injected into the stack's calls to it, never into moto's own.
        env = {k: v for k, v in scrubbed(os.environ).items() if not k.startswith(FAULTS_ENV_PREFIX)}
        env.update(
            {
                PARENT_PID_ENV: str(os.getpid()),
                # One account everywhere: the ARNs moto returns match the local identities.
                "MOTO_ACCOUNT_ID": LOCAL_ACCOUNT_ID,
                "MOTO_PORT": str(self._port),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        probe = f"{self.url}/moto-api/"
        while True:
            if self._process is None or self._process.poll() is not None:
                raise EmulatorError(f"the emulator exited during start-up; see {self.log_path}")
            try:
                with urllib.request.urlopen(probe, timeout=2.0) as response:
                    response.read()
                return
            except urllib.error.HTTPError:
                return  # any HTTP answer means moto is serving
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise EmulatorError(f"the emulator did not answer within {timeout:.0f} s; see {self.log_path}")
            time.sleep(0.05)
