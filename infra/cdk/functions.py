"""The three control-plane functions, their roles, the dispatch schedule and the stream mapping.

Least privilege, each function only what it uses:

- submit: tables read/write, bucket read/write (presigned URLs are signed with its role; purge
  deletes), send to every task queue.
- resolve: tables read/write, send to every task queue, read the results stream (by the mapping),
  send to its on-failure queue.
- dispatch: tables read/write, send to every task queue.

Environment: :meth:`Settings.to_env` (minus the region variables, which Lambda reserves and sets
itself) with ``SKYLOOM_BUCKET`` set to the deployed bucket, and Powertools configured by variables.
Names and tunables only, never a secret: the functions get their credentials from their roles.

With a customer-managed key, the log groups, the environment variables (Lambda encrypts them at
rest) and resolve's on-failure queue use it too. Each role's KMS grant comes with its data grants
(tables, queues, bucket, stream), on that one key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.cdk.bundling import ARCHITECTURE, RUNTIME, function_code
from skyloom.core.config import Settings
from skyloom.core.protocol import WAIT_MAX_SECONDS
from skyloom.core.resources import RESOLVE_STREAM_FILTERS

#: API Gateway's integration timeout is 29 s; a wait request long-polls up to WAIT_MAX_SECONDS (20 s).
SUBMIT_TIMEOUT = Duration.seconds(28)
assert WAIT_MAX_SECONDS + 5 < 28, "the submit timeout must stay above the long-poll plus a margin"
RESOLVE_TIMEOUT = Duration.seconds(60)
#: Below the schedule period, so that two sweeps never overlap for long.
DISPATCH_TIMEOUT = Duration.seconds(55)
LOG_RETENTION = logs.RetentionDays.ONE_MONTH
LOG_LEVEL = "INFO"
#: Lambda reserves these; its runtime sets them to the function's region.
_RESERVED = ("AWS_REGION", "AWS_DEFAULT_REGION")


def lambda_environment(settings: Settings, *, bucket_name: str, service: str) -> dict[str, str]:
    """The functions' environment: the :meth:`Settings.to_env` contract plus Powertools' switches."""
    env = {k: v for k, v in settings.to_env().items() if k not in _RESERVED}
    env["SKYLOOM_BUCKET"] = bucket_name
    env.update(
        POWERTOOLS_SERVICE_NAME=service,
        POWERTOOLS_METRICS_NAMESPACE="Skyloom",
        LOG_LEVEL=LOG_LEVEL,
    )
    return env


@dataclass(frozen=True)
class DataResources:
    """What the functions and workers are granted access to."""

    tables: list[dynamodb.Table]
    results: dynamodb.Table
    queues: list[sqs.Queue]
    bucket: s3.Bucket
    key: kms.IKey | None


class Functions(Construct):
    """``submit``, ``resolve`` and ``dispatch``, wired to their triggers (except the API, in api.py)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        root: Path,
        settings: Settings,
        data: DataResources,
        stream_mapping: bool = True,
    ) -> None:
        super().__init__(scope, construct_id)
        code = function_code(root)

        def make(name: str, handler: str, timeout: Duration, memory: int) -> lambda_.Function:
            service = f"skyloom-{name}"
            log_group = logs.LogGroup(
                self,
                f"{name.capitalize()}Logs",
                retention=LOG_RETENTION,
                removal_policy=RemovalPolicy.DESTROY,
                encryption_key=data.key,
            )
            return lambda_.Function(
                self,
                name.capitalize(),
                description=f"Skyloom {name} ({handler})",
                runtime=RUNTIME,
                architecture=ARCHITECTURE,
                code=code,
                handler=handler,
                timeout=timeout,
                memory_size=memory,
                environment=lambda_environment(settings, bucket_name=data.bucket.bucket_name, service=service),
                environment_encryption=data.key,
                tracing=lambda_.Tracing.ACTIVE,
                log_group=log_group,
            )

        self.submit = make("submit", "skyloom_server.functions.submit.handler.handler", SUBMIT_TIMEOUT, 1024)
        self.resolve = make("resolve", "skyloom_server.functions.resolve.handler.handler", RESOLVE_TIMEOUT, 512)
        self.dispatch = make("dispatch", "skyloom_server.functions.dispatch.handler.handler", DISPATCH_TIMEOUT, 512)

        for fn in (self.submit, self.resolve, self.dispatch):
            for table in data.tables:
                table.grant_read_write_data(fn)
            for queue in data.queues:
                queue.grant_send_messages(fn)
        data.bucket.grant_read_write(self.submit)

        # Stream -> resolve. Partial batch responses report only failed records; a batch that keeps
        # failing is halved until the poison record is alone; after the retries it goes to the
        # on-failure queue (its metadata, for a replay by hand) and the shard moves on.
        self.resolve_failures = sqs.Queue(
            self,
            "ResolveFailures",
            queue_name=f"{settings.stack}-resolve-failures",
            retention_period=Duration.days(14),
            encryption=sqs.QueueEncryption.KMS if data.key else sqs.QueueEncryption.SQS_MANAGED,
            encryption_master_key=data.key,
            enforce_ssl=True,
        )
        if stream_mapping:
            self._map_stream(data)

        # The sweeper: every minute (EventBridge's finest rate).
        self.schedule = events.Rule(
            self,
            "DispatchSchedule",
            description="Skyloom dispatch sweeper: lost messages, expired leases, retries due",
            schedule=events.Schedule.rate(Duration.minutes(1)),
            targets=[targets.LambdaFunction(self.dispatch, retry_attempts=0)],
        )

    def _map_stream(self, data: DataResources) -> None:
        self.resolve.add_event_source(
            sources.DynamoEventSource(
                data.results,
                starting_position=lambda_.StartingPosition.TRIM_HORIZON,
                batch_size=100,
                max_batching_window=Duration.seconds(1),
                report_batch_item_failures=True,
                bisect_batch_on_error=True,
                retry_attempts=10,
                max_record_age=Duration.hours(6),
                parallelization_factor=2,
                on_failure=sources.SqsDlq(self.resolve_failures),
                filters=[lambda_.FilterCriteria.filter(pattern) for pattern in RESOLVE_STREAM_FILTERS],
            )
        )

    @property
    def all(self) -> list[lambda_.Function]:
        return [self.submit, self.resolve, self.dispatch]
