"""The whole of Skyloom on loopback: emulator, resources, the three functions, and worker agents.

:class:`LocalStack` starts, in order: moto (two subprocesses: SQS in one, everything else in the
other) unless given another AWS endpoint (LocalStack, see ``localstack/README.md``), the resources
from the shared definitions, the model binding, then the three functions in this process fed by
their real event sources' shapes (the API gateway, the results-stream poller, the sweep schedule),
and last the worker agents (subprocesses). :meth:`LocalStack.stop` goes in reverse, each step
bounded in time, so it never hangs. The functions build their settings from the environment as they
do in Lambda, so the stack exports its settings and dummy credentials into ``os.environ`` while it
runs, binds the pynamodb models to its tables, and restores both when it stops.

With another AWS endpoint, nothing moto-specific runs, and the stack's resource names get a suffix
unique to this start (unless ``unique_names=False``): that endpoint outlives the stack, and two
stacks (test modules, reruns) sharing it must not see each other's tables, queues or bucket. The
functions still run here, fed by the local stream poller and scheduler: LocalStack cannot run Lambda
code without Docker either.

Environment and model binding are per process, so only one stack at a time may export them; a stack
started with ``export_environment=False`` (tests with stand-in handlers that read neither) can run
beside it.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from skyloom.core import aws, models, wire
from skyloom.core.config import Settings
from skyloom.core.resources import RESOLVE_STREAM_FILTERS
from skyloom.local import console, faults
from skyloom.local.containers import ContainerPool
from skyloom.local.credentials import (
    ENDPOINT_ENV,
    IDENTITIES_FILE,
    LocalCredentialStore,
    aws_environment,
    removed_variables,
    scrubbed,
)
from skyloom.local.discovery import skyloom_home
from skyloom.local.emulator import Emulator
from skyloom.local.faults import FaultConfig
from skyloom.local.gateway import Gateway
from skyloom.local.invoke import Handler, HandlerRef, cold_start, load_handler
from skyloom.local.provision import Provisioned, provision
from skyloom.local.scheduler import Scheduler
from skyloom.local.streams import RecordsAsSent, StreamPoller
from skyloom.local.workers import WorkerPool
from skyloom.runtime.lifeline import PARENT_PID_ENV

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

SUBMIT_HANDLER = "skyloom_server.functions.submit.handler:handler"
RESOLVE_HANDLER = "skyloom_server.functions.resolve.handler:handler"
DISPATCH_HANDLER = "skyloom_server.functions.dispatch.handler:handler"
_exporting_lock = threading.Lock()
#: The stack whose settings this process's environment and models currently describe.
_exporting: LocalStack | None = None
#: The run directory's log of the functions that run in this process (resolve, dispatch).
FUNCTIONS_LOG = "functions.log"
#: Run directories kept under ``$SKYLOOM_HOME/runs`` when none is given; older ones are deleted.
KEEP_RUNS = 10
#: An AWS endpoint (e.g. LocalStack's ``http://127.0.0.1:4566``) that local stacks use instead of
#: starting moto, when they are not given one: how ``make test-localstack`` points every stack the
#: tests start, including the dedicated ones of the fault tests, at LocalStack.
AWS_ENDPOINT_ENV = "SKYLOOM_LOCAL_AWS_ENDPOINT"
#: The workers' upper-level long poll (seconds) unless the environment sets it.
UPPER_POLL_WAIT_ENV = "SKYLOOM_WORKER_UPPER_POLL_WAIT"
LOCAL_UPPER_POLL_WAIT = 2


def default_run_dir() -> Path:
    """A fresh ``$SKYLOOM_HOME/runs/<time>-<pid>``, pruning all but the newest runs."""
    runs = skyloom_home() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for old in sorted(p for p in runs.iterdir() if p.is_dir())[: -(KEEP_RUNS - 1) or None]:
        shutil.rmtree(old, ignore_errors=True)
    path = runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    path.mkdir()
    return path


def unique_settings(base: Settings, endpoint: str, token: str | None = None) -> Settings:
    """``base`` on ``endpoint`` with a random ``token`` appended to the stack prefix and the bucket.

    An endpoint shared by several stacks (one LocalStack for a whole test run) keeps each stack's
    tables, queues and bucket apart; stack names stay within the 40 characters Settings allows.
    """
    token = token or secrets.token_hex(4)
    stack = f"{base.stack[: 40 - len(token) - 1].rstrip('-')}-{token}"
    return replace(base, aws_endpoint=endpoint, sqs_endpoint=None, stack=stack, bucket=f"{base.bucket}-{token}")


class LocalStack:
    """Skyloom on this machine, over real HTTP, with no AWS account and no Docker.

    Args:
        workers: Worker agent processes to start.
        settings: Names and tunables; the AWS endpoint in use replaces ``aws_endpoint``.
        gateway_port: Port of the REST endpoint; 0 picks a free one.
        sweep_interval: Seconds between two scheduled invocations of the dispatch function.
        run_dir: Where logs go; a new directory under ``$SKYLOOM_HOME/runs`` by default.
        submit_handler, resolve_handler, dispatch_handler: The functions, as callables or
            ``"module:attribute"`` paths imported at :meth:`start`.
        worker_env: Extra environment of the workers.
        worker_command: Replaces ``python -m skyloom_server.fargate_worker`` (tests).
        api_concurrency: Execution environments ("containers", processes) of the submit function
            when it is named by path; a callable runs in this process, one request at a time.
        export_environment: Export settings and credentials to ``os.environ`` and bind the models
            (what the real functions need). Only one such stack may run per process.
        aws_endpoint: An AWS endpoint already running (LocalStack) to use instead of starting moto;
            ``$SKYLOOM_LOCAL_AWS_ENDPOINT`` when None; "" forces moto.
        unique_names: With ``aws_endpoint``, suffix the stack prefix and bucket with a random token
            so that this stack's resources are its own. Off to use resources provisioned beforehand
            under the configured names (the LocalStack init hook).
        faults: AWS faults to inject into every process of the stack (:mod:`skyloom.local.faults`):
            this process's functions and gateway, the submit containers and the workers; the
            ``SKYLOOM_FAULTS_*`` environment when None (off unless set). Injection starts once the
            resources exist; counts of the faults fired: :meth:`fault_counts`.
        resolve_filters: The stream mapping's filter criteria; the deployed ones by default
            (``RESOLVE_STREAM_FILTERS``); ``()`` delivers every record (stand-in handlers).

    Example:
        >>> with LocalStack(workers=2) as stack:
        ...     client = skyloom.connect(stack.endpoint)
    """

    #: Serve SQS from an emulator process of its own (``Settings.sqs_endpoint``). moto answers a
    #: process's requests one at a time (one GIL), and at full speed the queues' requests are a sixth
    #: of its work; the tables, streams and objects stay in one process, since transactions span
    #: tables and the streams read the tables' own records. Off where something inside moto must
    #: reach the queues (a CloudFormation deployment into the emulator creates them in its process).
    separate_queues: bool = True

    def __init__(
        self,
        workers: int = 2,
        settings: Settings | None = None,
        gateway_port: int = 0,
        sweep_interval: float = 5.0,
        run_dir: Path | None = None,
        submit_handler: HandlerRef = SUBMIT_HANDLER,
        resolve_handler: HandlerRef = RESOLVE_HANDLER,
        dispatch_handler: HandlerRef = DISPATCH_HANDLER,
        worker_env: Mapping[str, str] | None = None,
        *,
        worker_command: Sequence[str] | None = None,
        api_concurrency: int = 4,
        export_environment: bool = True,
        aws_endpoint: str | None = None,
        unique_names: bool = True,
        faults: FaultConfig | None = None,
        resolve_filters: Sequence[Mapping[str, Any]] = RESOLVE_STREAM_FILTERS,
    ) -> None:
        self._worker_count = workers
        self._base_settings = settings or Settings()
        self._settings = self._base_settings
        self._gateway_port = gateway_port
        self._sweep_interval = sweep_interval
        self._run_dir = run_dir
        self._handlers = {"submit": submit_handler, "resolve": resolve_handler, "dispatch": dispatch_handler}
        self._worker_env = dict(worker_env or {})
        self._worker_command = worker_command
        self._api_concurrency = api_concurrency
        self._export = export_environment
        if aws_endpoint is None:
            aws_endpoint = os.environ.get(AWS_ENDPOINT_ENV, "")
        self._external_endpoint = aws_endpoint.rstrip("/") or None
        self._unique_names = unique_names
        self._resolve_filters = tuple(resolve_filters)
        self._faults = faults if faults is not None else FaultConfig.from_env()
        self._counts_dir: str | None = None
        self._previous_counts_dir: str | None = None
        self._injecting = False
        self._previous_binding: Settings | None = None
        self._emulator: Emulator | None = None
        self._queue_emulator: Emulator | None = None
        self._provisioned: Provisioned | None = None
        self._gateway: Gateway | None = None
        self._containers: ContainerPool | None = None
        self._poller: StreamPoller | None = None
        self._scheduler: Scheduler | None = None
        self._workers: WorkerPool | None = None
        self._functions_log: console.SharedLog | None = None
        self._saved_env: dict[str, str | None] = {}
        self._started = False

    # -- properties ------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """Base URL of the REST API (``http://127.0.0.1:PORT``)."""
        return self._require(self._gateway, "gateway").url

    @property
    def running(self) -> bool:
        """Started and not stopped since: whether :attr:`endpoint` serves."""
        return self._started and self._gateway is not None

    @property
    def aws_endpoint(self) -> str:
        """URL of the emulated AWS (moto, or the endpoint given), for boto3's ``endpoint_url``."""
        if self._external_endpoint is not None:
            return self._external_endpoint
        return self._require(self._emulator, "emulator").url

    @property
    def sqs_endpoint(self) -> str:
        """URL that serves SQS: the queues' own emulator, or :attr:`aws_endpoint`."""
        if self._queue_emulator is not None:
            return self._queue_emulator.url
        return self.aws_endpoint

    @property
    def emulator(self) -> str:
        """Which AWS emulator serves this stack: ``"moto"`` (embedded) or ``"external"``."""
        return "moto" if self._external_endpoint is None else "external"

    @property
    def settings(self) -> Settings:
        """The settings in force (``aws_endpoint`` set to the emulator once started)."""
        return self._settings

    @property
    def faults(self) -> FaultConfig:
        """The AWS faults injected into this stack's processes (disabled: none)."""
        return self._faults

    @property
    def workers(self) -> WorkerPool:
        return self._require(self._workers, "worker pool")

    @property
    def scheduler(self) -> Scheduler:
        return self._require(self._scheduler, "scheduler")

    @property
    def streams(self) -> StreamPoller:
        return self._require(self._poller, "stream poller")

    @property
    def provisioned(self) -> Provisioned:
        return self._require(self._provisioned, "provisioning")

    @property
    def run_dir(self) -> Path:
        if self._run_dir is None:
            raise RuntimeError("the local stack is not started")
        return self._run_dir

    def client_environment(self) -> dict[str, str]:
        """What a client process needs to reach this stack: endpoint, credentials, region."""
        env = aws_environment(self._settings.region)
        env.pop("POWERTOOLS_TRACE_DISABLED")
        env[ENDPOINT_ENV] = self.endpoint
        return env

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> LocalStack:
        """Bring everything up; on any failure, tear down what started and re-raise."""
        if self._started:
            raise RuntimeError("the local stack is already started")
        self._started = True
        try:
            self._claim_process()
            self._start_emulator()
            self._export_environment()
            self._provisioned = provision(self._settings)
            self._bind_models()
            self._start_faults()
            self._start_functions()
            self._start_workers()
        except BaseException:
            self.stop()
            raise
        logger.info("local stack up: endpoint %s, AWS %s, run dir %s", self.endpoint, self.aws_endpoint, self._run_dir)
        return self

    def stop(self) -> None:
        """Stop workers, functions and emulator, in that order; restore the environment."""
        steps: list[tuple[str, Callable[[], None]]] = []
        if self._workers is not None:
            steps.append(("workers", self._workers.stop))
        if self._scheduler is not None:
            steps.append(("scheduler", self._scheduler.stop))
        if self._poller is not None:
            steps.append(("stream poller", self._poller.stop))
        if self._gateway is not None:
            steps.append(("gateway", self._gateway.stop))
        if self._containers is not None:
            steps.append(("submit containers", self._containers.stop))
        if self._emulator is not None:
            steps.append(("emulator", self._emulator.stop))
        if self._queue_emulator is not None:
            steps.append(("queue emulator", self._queue_emulator.stop))
        for name, step in steps:
            try:
                step()
            except Exception:
                logger.exception("stopping the %s failed", name)
        self._stop_faults()
        self._workers = self._scheduler = self._poller = self._gateway = self._emulator = None
        self._queue_emulator = None
        self._containers = None
        if self._functions_log is not None:
            self._functions_log.close()
            self._functions_log = None
        self._restore_environment()
        self._release_process()
        self._started = False

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- steps -----------------------------------------------------------------------------------
    def _claim_process(self) -> None:
        global _exporting
        if not self._export:
            return
        with _exporting_lock:
            if _exporting is not None and _exporting is not self:
                raise RuntimeError(
                    "another LocalStack already exports its environment in this process; stop it first, "
                    "or start this one with export_environment=False"
                )
            _exporting = self

    def _release_process(self) -> None:
        global _exporting
        with _exporting_lock:
            if _exporting is self:
                _exporting = None

    def _bind_models(self) -> None:
        if not self._export:
            return
        try:
            self._previous_binding = models.bound_settings()
        except RuntimeError:
            self._previous_binding = None
        models.bind(self._settings)

    def _start_emulator(self) -> None:
        if self._run_dir is None:
            self._run_dir = default_run_dir()
        self._run_dir.mkdir(parents=True, exist_ok=True)
        if self._external_endpoint is not None:
            self._settings = self._external_settings(self._external_endpoint)
            return
        self._emulator = Emulator(self._run_dir)
        if self.separate_queues:
            self._queue_emulator = Emulator(self._run_dir, name="sqs")
        started = [e for e in (self._emulator, self._queue_emulator) if e is not None]
        for emulator in started:
            emulator.launch()
        for emulator in started:
            emulator.wait_ready()
        self._settings = replace(self._base_settings, aws_endpoint=self._emulator.url,
                                 sqs_endpoint=self._queue_emulator.url if self._queue_emulator else None)

    def _external_settings(self, endpoint: str) -> Settings:
        """Settings on ``endpoint``, with names of this start's own unless told otherwise."""
        if not self._unique_names:
            return replace(self._base_settings, aws_endpoint=endpoint, sqs_endpoint=None)
        return unique_settings(self._base_settings, endpoint)

    def _local_environment(self) -> dict[str, str]:
        env = self._settings.to_env()
        env.update(aws_environment(self._settings.region))
        if self._faults.enabled and self._counts_dir is not None:
            # Every process of the stack injects the same faults and dumps its counts (and, for a
            # blackout, finds the others) in one directory.
            env.update(self._faults.to_env())
            env[aws.COUNT_API_CALLS_ENV] = self._counts_dir
        return env

    def _start_faults(self) -> None:
        """Fault injection, when configured: the counts directory for every process, and this
        process's own injection. After provisioning, so that the resources exist whatever the rates."""
        if not self._faults.enabled:
            return
        self._counts_dir = os.environ.get(aws.COUNT_API_CALLS_ENV) or str(self.run_dir / "calls")
        os.makedirs(self._counts_dir, exist_ok=True)
        self._export_overlay(self._local_environment())
        if self._export:
            self._previous_counts_dir = aws.counting_directory()
            aws.start_counting_api_calls(self._counts_dir)
            faults.activate(self._faults)
            self._injecting = True
        logger.info("injecting AWS faults: %s (counts in %s)", self._faults, self._counts_dir)

    def _stop_faults(self) -> None:
        if self._injecting:
            faults.deactivate()
            aws.dump_api_call_counts()
            if self._previous_counts_dir is not None:
                aws.start_counting_api_calls(self._previous_counts_dir)
            self._injecting = False

    def fault_counts(self) -> dict[str, dict[str, int]]:
        """The faults fired so far by every process of the stack: kind -> ``service.Operation`` ->
        count. Other processes dump every ``aws.DUMP_EVERY_SECONDS`` (and at exit): wait that long
        after the work for their last ones."""
        if self._counts_dir is None:
            return {}
        aws.dump_api_call_counts()
        return aws.collect_counts(self._counts_dir, "faults")

    def _export_environment(self) -> None:
        """Make ``Settings.from_env()`` in this process (the functions) describe this stack."""
        if not self._export:
            return
        for name in removed_variables():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ.pop(name, None)
        self._export_overlay(self._local_environment())

    def _export_overlay(self, overlay: Mapping[str, str]) -> None:
        """Set ``overlay`` in ``os.environ`` (when exporting), remembering what it replaces."""
        if not self._export:
            return
        for name in overlay:
            self._saved_env.setdefault(name, os.environ.get(name))
        os.environ.update(overlay)

    def _restore_environment(self) -> None:
        if self._previous_binding is not None:
            # Back to the stack (or test fixture) this process served before.
            models.bind(self._previous_binding)
            self._previous_binding = None
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()

    def _submit_function(self) -> Handler:
        """The submit function as the gateway calls it: in a pool of containers when it is named by
        path (concurrent requests are isolated as on AWS), in this process when a callable is given."""
        ref = self._handlers["submit"]
        if not isinstance(ref, str) or not self._export:
            return load_handler(ref)
        self._containers = ContainerPool(
            ref, size=self._api_concurrency, env=self._local_environment(), log_path=self.run_dir / "submit.log"
        )
        self._containers.start()
        return self._containers

    def _start_functions(self) -> None:
        region, stack = self._settings.region, self._settings.stack
        # Before the functions' modules are imported: their loggers keep the stream they find.
        console.install()
        log = self._functions_log = console.SharedLog(self.run_dir / FUNCTIONS_LOG)
        submit = self._submit_function()
        if self._containers is None:
            submit = console.logged(submit, log)
        resolve = console.logged(load_handler(self._handlers["resolve"]), log)
        dispatch = console.logged(load_handler(self._handlers["dispatch"]), log)
        if self._export:
            for handler in (submit, resolve, dispatch):
                cold_start(handler)
        self._gateway = Gateway(
            submit,
            region=region,
            function_name=f"{stack}-submit",
            port=self._gateway_port,
            concurrency=self._api_concurrency if self._containers is not None else 1,
            # Identities minted into the run dir (``skyloom local identity``) sign requests too.
            credentials=LocalCredentialStore(self.run_dir / IDENTITIES_FILE),
        )
        self._gateway.start()
        if self._export:
            # Clients in this process (tests, ``local run`` helpers) find the stack like any other.
            self._saved_env.setdefault(ENDPOINT_ENV, os.environ.get(ENDPOINT_ENV))
            os.environ[ENDPOINT_ENV] = self._gateway.url
        streams = aws.client("dynamodbstreams", self._settings)
        wire.install_on(streams, parser=RecordsAsSent)  # only the poller reads streams in this process
        self._poller = StreamPoller(
            streams,
            self.provisioned.results_stream_arn,
            resolve,
            region=region,
            function_name=f"{stack}-resolve",
            filters=self._resolve_filters,
        )
        self._poller.start()
        self._scheduler = Scheduler(
            dispatch,
            interval=self._sweep_interval,
            region=region,
            function_name=f"{stack}-dispatch",
            rule_name=f"{stack}-sweep",
        )
        self._scheduler.start()

    def _start_workers(self) -> None:
        env = scrubbed(os.environ)  # the exported overlay included: PATH, the settings, credentials
        env.update(self._local_environment())
        env[ENDPOINT_ENV] = self.endpoint
        # Workers live in their own sessions; each agent watches this PID to stop with its stack.
        env[PARENT_PID_ENV] = str(os.getpid())
        # A stopping agent waits for its upper-level long polls to return: short ones, so that a
        # local stack stops in a couple of seconds (idle calls cost nothing here).
        env.setdefault(UPPER_POLL_WAIT_ENV, str(LOCAL_UPPER_POLL_WAIT))
        env.update(self._worker_env)
        self._workers = WorkerPool(self._worker_count, env=env, run_dir=self.run_dir, command=self._worker_command)
        self._workers.start()

    @staticmethod
    def _require(value: _T | None, what: str) -> _T:
        if value is None:
            raise RuntimeError(f"the local stack is not started ({what} missing)")
        return value
