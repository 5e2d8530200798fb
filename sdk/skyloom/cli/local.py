"""``skyloom local``: run Skyloom on this machine.

``up`` keeps a stack in the foreground for any number of clients (and publishes it for
:func:`skyloom.local.discover`; while it starts, a marker makes clients wait for it rather than
start their own); ``run`` wraps one command in a stack's lifetime, which is what
demos and CI want: the stack is up before the command starts and gone when ``run`` returns the
command's exit status.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from skyloom.cli.common import quiet_local_functions
from skyloom.core.config import Settings
from skyloom.local.credentials import ENDPOINT_ENV
from skyloom.local.discovery import (
    LocalState,
    mark_starting,
    publish,
    read_state,
    unmark_starting,
    unpublish,
)
from skyloom.local.provision import provision as provision_resources
from skyloom.local.stack import AWS_ENDPOINT_ENV, LocalStack, default_run_dir

app = typer.Typer(help="Run Skyloom locally: AWS emulated on loopback, functions in-process, worker processes.")

WorkersOption = Annotated[int, typer.Option("--workers", "-w", min=0, help="Worker agent processes.")]
SweepOption = Annotated[float, typer.Option("--sweep-interval", min=0.1, help="Seconds between dispatch sweeps.")]
RunDirOption = Annotated[
    Path | None, typer.Option("--run-dir", help="Where logs go (default: a new dir under $SKYLOOM_HOME/runs).")
]
AwsEndpointOption = Annotated[
    str | None,
    typer.Option(
        "--aws-endpoint",
        envvar=AWS_ENDPOINT_ENV,
        help="Use this AWS endpoint (e.g. LocalStack's http://localhost:4566) instead of starting moto; "
        "resources are created there under SKYLOOM_STACK's names if missing.",
    ),
]

class _Stop(BaseException):
    """Raised in the main thread by SIGTERM; a BaseException so no ``except Exception`` eats it."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def _settings() -> Settings:
    """Settings from the environment (``SKYLOOM_STACK``, ``SKYLOOM_PARTITIONS``, timers, region), so
    a local stack can mirror a deployment's; the AWS endpoint is moto's or ``--aws-endpoint``."""
    return Settings.from_env()


#: The run directory's log of this process: the stack's own messages and the libraries' (boto's
#: INFO lines, Python warnings), which the console does not show.
STACK_LOG = "stack.log"
#: Top-level packages whose messages are the stack's own, shown on the console.
_OWN = ("skyloom", "skyloom_server")


class _ConsoleFilter(logging.Filter):
    """Skyloom's messages at INFO (``verbose``) or WARNING; others' at WARNING; Python warnings never
    (a library's ``UserWarning`` is for its developers: it is in ``stack.log``)."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self._own_level = logging.INFO if verbose else logging.WARNING

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "py.warnings":
            return False
        if record.name.split(".")[0] in _OWN:
            return record.levelno >= self._own_level
        return record.levelno >= logging.WARNING


def _configure_logging(verbose: bool, run_dir: Path) -> None:
    """Everything at INFO to ``run_dir/stack.log``; the console gets what :class:`_ConsoleFilter` keeps."""
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    on_console = logging.StreamHandler(sys.stderr)
    on_console.setFormatter(formatter)
    on_console.addFilter(_ConsoleFilter(verbose))
    run_dir.mkdir(parents=True, exist_ok=True)
    in_file = logging.FileHandler(run_dir / STACK_LOG, encoding="utf-8")
    in_file.setFormatter(formatter)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(on_console)
    root.addHandler(in_file)
    logging.captureWarnings(True)


@app.command()
def up(
    workers: WorkersOption = 2,
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="Endpoint port (0: any).")] = 0,
    sweep_interval: SweepOption = 5.0,
    run_dir: RunDirOption = None,
    aws_endpoint: AwsEndpointOption = None,
) -> None:
    """Start a local stack and keep it up until Ctrl-C or SIGTERM.

    The console shows the stack's own messages; the functions' logs and metrics, the libraries'
    messages and warnings go to files in the run directory (functions.log, stack.log, ...).
    """
    run_dir = run_dir or default_run_dir()
    _configure_logging(True, run_dir)
    other = read_state()
    if other is not None:
        typer.echo(f"note: another local stack (pid {other.pid}, {other.kind}) is up at {other.endpoint}", err=True)
    # Before anything slow: a client connecting meanwhile waits for this stack instead of starting one.
    mark_starting(str(run_dir))
    stack = LocalStack(
        workers=workers,
        settings=_settings(),
        gateway_port=port,
        sweep_interval=sweep_interval,
        run_dir=run_dir,
        # A user's LocalStack: the configured names, so resources its init hook made are used.
        aws_endpoint=aws_endpoint or "",
        unique_names=False,
    )
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        stack.start()
        publish(LocalState.of(stack))
        unmark_starting()  # after publishing: a waiting client sees the stack before the marker goes
        queues = f", SQS {stack.sqs_endpoint}" if stack.sqs_endpoint != stack.aws_endpoint else ""
        typer.echo(f"Skyloom local stack up: {stack.endpoint}  (AWS {stack.emulator} {stack.aws_endpoint}{queues})")
        typer.echo(f"logs: {stack.run_dir}")
        typer.echo(f"export {ENDPOINT_ENV}={stack.endpoint}")
        typer.echo("Ctrl-C to stop.")
        _wait_forever()
    except (KeyboardInterrupt, _Stop):
        typer.echo("stopping...", err=True)
    finally:
        _stop_uninterrupted(stack, unmark_starting, unpublish)
        signal.signal(signal.SIGTERM, previous)


@app.command()
def provision(
    aws_endpoint: Annotated[
        str,
        typer.Option("--aws-endpoint", envvar=AWS_ENDPOINT_ENV, help="The AWS endpoint to create the resources on."),
    ],
) -> None:
    """Create Skyloom's tables, queues and bucket on an AWS endpoint (LocalStack) if missing.

    Names come from the environment (SKYLOOM_STACK, SKYLOOM_PARTITIONS, ...) and shapes from the
    single resource definition, as local mode and the CDK stack use them; what exists is kept.
    LocalStack's init hook (localstack/init/ready.d) runs this.
    """
    settings = replace(_settings(), aws_endpoint=aws_endpoint)
    done = provision_resources(settings)
    typer.echo(f"stack {settings.stack}: tables {', '.join(sorted(done.tables))}; bucket {done.bucket}")
    for url in sorted(done.queues.values()):
        typer.echo(f"queue {url}")


def _stop_uninterrupted(stack: LocalStack, *before: Callable[[], None]) -> None:
    """Stop the stack with Ctrl-C and SIGTERM ignored: a second Ctrl-C while workers drain must not
    leave worker processes (which live in their own sessions) running without their emulator."""
    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        for step in before:
            step()
        stack.stop()
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)


def _wait_forever() -> None:
    forever = threading.Event()
    while not forever.wait(3600):
        pass


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def run(
    command: Annotated[list[str], typer.Argument(help="The command to run, after '--'.")],
    workers: WorkersOption = 2,
    sweep_interval: SweepOption = 5.0,
    run_dir: RunDirOption = None,
    aws_endpoint: AwsEndpointOption = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the stack's progress (all logs are in the run directory).")
    ] = False,
) -> None:
    """Start a local stack, run COMMAND against it, stop the stack, exit with COMMAND's status.

    COMMAND sees SKYLOOM_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION of the
    stack. Example: skyloom local run --workers 2 -- python examples/portfolio.py
    """
    run_dir = run_dir or default_run_dir()
    _configure_logging(verbose, run_dir)
    if not verbose:
        quiet_local_functions()
    stack = LocalStack(
        workers=workers,
        settings=_settings(),
        sweep_interval=sweep_interval,
        run_dir=run_dir,
        aws_endpoint=aws_endpoint or "",
        unique_names=False,
    )
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    code = 1
    try:
        stack.start()
        if verbose:
            typer.echo(f"local stack up at {stack.endpoint}; logs in {stack.run_dir}", err=True)
        status = _run_command(command, {**os.environ, **stack.client_environment()})
        # A command killed by signal N exits 128 + N, as in a shell.
        code = status if status >= 0 else 128 - status
    except (KeyboardInterrupt, _Stop):
        code = 130
    finally:
        _stop_uninterrupted(stack)
        signal.signal(signal.SIGTERM, previous)
    raise typer.Exit(code)


def _run_command(command: list[str], env: dict[str, str]) -> int:
    try:
        child = subprocess.Popen(command, env=env)
    except FileNotFoundError:
        typer.echo(f"skyloom local run: command not found: {command[0]}", err=True)
        return 127
    except PermissionError:
        typer.echo(f"skyloom local run: permission denied: {command[0]}", err=True)
        return 126
    try:
        return child.wait()
    except KeyboardInterrupt:
        # The terminal's SIGINT reached the child too: give it time to exit on its own.
        return _reap(child, signal.SIGINT)
    except _Stop:
        # SIGTERM was sent to us alone: pass it on.
        child.terminate()
        return _reap(child, signal.SIGTERM)


def _reap(child: subprocess.Popen[bytes], sent: signal.Signals, timeout: float = 10.0) -> int:
    """Wait for ``child`` after it was sent ``sent``; SIGKILL it if it is still running after ``timeout``."""
    try:
        return child.wait(timeout)
    except subprocess.TimeoutExpired:
        typer.echo(f"skyloom local run: command ignored {sent.name} for {timeout:.0f} s; killing it", err=True)
        child.kill()
        return child.wait()


@app.command()
def identity(
    name: Annotated[str, typer.Argument(help="Key id of the new identity; its principal is user/NAME.")],
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Run directory of the stack (default: the running one).")
    ] = None,
) -> None:
    """Mint another local identity, to try isolation between users on one laptop.

    Adds NAME with a random secret to the running stack (``skyloom local up``, or --run-dir) and
    prints the shell lines that make the SDK and the CLI sign as it, e.g.
    eval "$(skyloom local identity bob)". Minting an existing NAME prints its secret again.
    """
    from skyloom.local.credentials import local_user_arn, mint_identity

    if run_dir is None:
        state = read_state()
        if state is None:
            typer.echo("skyloom local identity: no local stack is up; start one or pass --run-dir", err=True)
            raise typer.Exit(1)
        run_dir = Path(state.run_dir)
    try:
        key, secret = mint_identity(run_dir, name)
    except ValueError as exc:
        typer.echo(f"skyloom local identity: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"# principal {local_user_arn(key)}")
    typer.echo(f"export SKYLOOM_ACCESS_KEY_ID={key}")
    typer.echo(f"export SKYLOOM_SECRET_ACCESS_KEY={secret}")
