"""The Skyloom stack: every construct, wired, with its outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra.cdk.api import Api
from infra.cdk.bucket import AccessLogsBucket, DataBucket
from infra.cdk.context import DeployContext
from infra.cdk.dashboard import Dashboard
from infra.cdk.functions import DataResources, Functions
from infra.cdk.queues import Queues
from infra.cdk.tables import Tables
from infra.cdk.workers import Workers
from skyloom.core.resources import RESULTS

#: The repository root: the functions' sources and the worker image's build context.
REPO_ROOT = Path(__file__).resolve().parents[2]


class SkyloomStack(Stack):
    """Tables, queues, bucket, functions, API, workers, dashboard and alarms of one deployment.

    Args:
        deploy: The validated ``skyloom:*`` context (partitions, KMS key, ...).
        worker_image: A prebuilt worker image (``repo:tag``) instead of building the Dockerfile.
        root: Repository root (tests may point elsewhere).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deploy: DeployContext,
        worker_image: str | None = None,
        root: Path = REPO_ROOT,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        settings = deploy.settings
        # One optional customer-managed key for everything at rest (tables and their streams, queues
        # and DLQs, the data bucket, log groups, Lambda environments, Fargate task storage); without
        # it each service encrypts with its own AWS key. The key's policy must let CloudWatch Logs
        # and Fargate use it: SECURITY.md ("Customer-managed key") has the statements.
        key = kms.Key.from_key_arn(self, "DataKey", deploy.kms_key_arn) if deploy.kms_key_arn else None

        self.tables = Tables(self, "Tables", settings=settings, key=key)
        self.queues = Queues(self, "Queues", settings=settings, key=key)
        # S3 server access logs can only be delivered to an SSE-S3 bucket, so this one never uses the key.
        logs_bucket = AccessLogsBucket(self, "AccessLogs", auto_delete=deploy.auto_delete_data).bucket
        self.bucket = DataBucket(
            self, "Data", key=key, auto_delete=deploy.auto_delete_data, access_logs=logs_bucket
        ).bucket
        data = DataResources(
            tables=self.tables.all,
            results=self.tables.by_logical[RESULTS.logical],
            queues=list(self.queues.queues.values()),
            bucket=self.bucket,
            key=key,
        )
        self.functions = Functions(
            self, "Functions", root=root, settings=settings, data=data, stream_mapping=deploy.stream_mapping
        )
        self.api = Api(self, "Api", submit=self.functions.submit, stack_prefix=settings.stack, key=key)
        by_partition = {p.name: self.queues.of_partition(p.name) for p in settings.partitions}
        self.workers = Workers(
            self,
            "Workers",
            root=root,
            settings=settings,
            data=data,
            queues_by_partition=by_partition,
            image=worker_image,
            packages=deploy.worker_packages,
            ec2_spot=deploy.ec2_spot,
        )
        self.dashboard = Dashboard(
            self,
            "Dashboard",
            stack_prefix=settings.stack,
            functions={"submit": self.functions.submit, "resolve": self.functions.resolve,
                       "dispatch": self.functions.dispatch},
            queues_by_partition=by_partition,
            dead_letter_queues=[*self.queues.dead_letter_queues.values(), self.functions.resolve_failures],
            services=self.workers.services,
            cluster=self.workers.cluster,
            alarm_topic_arn=deploy.alarm_topic_arn,
        )
        self._outputs(deploy)

    def _outputs(self, deploy: DeployContext) -> None:
        settings = deploy.settings
        url = self.api.url
        CfnOutput(self, "ApiUrl", value=url, description="The REST API (SigV4)")
        CfnOutput(self, "Connect", value=f"SKYLOOM_ENDPOINT={url} python your_script.py",
                  description="Run a script against this stack; in code: skyloom.connect(\"<ApiUrl>\")")
        CfnOutput(self, "ConnectPython", value=f'skyloom.connect("{url}")', description="The SDK connect line")
        CfnOutput(self, "BucketName", value=self.bucket.bucket_name)
        CfnOutput(self, "StackPrefix", value=settings.stack)
        for logical, table in self.tables.by_logical.items():
            CfnOutput(self, f"Table{logical.capitalize()}", value=table.table_name)
        for (partition, level), queue in sorted(self.queues.queues.items()):
            CfnOutput(self, f"Queue{_camel(partition)}P{level}", value=queue.queue_url)
        CfnOutput(self, "Cluster", value=self.workers.cluster.cluster_name)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))
