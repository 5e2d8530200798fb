"""Wiring: ``cdk bootstrap`` + ``cdk deploy --method=direct`` into moto, then a graph through the SDK.

GIVEN the CDK app synthesized from ``cdk.json`` (Lambda bundling off, a registry worker image: a
Docker image asset cannot deploy without Docker) and the pinned CDK CLI
WHEN it is bootstrapped and deployed into moto in server mode (the local emulator)
THEN CloudFormation created the tables, queues and bucket that Settings names, and a small graph runs
through the SDK against exactly those resources, with the three functions fed by the local runner
(moto cannot run Lambda code) and local worker agents standing in for the Fargate service.

What moto 5.2.5 skips (logged as "No Moto CloudFormation support", otherwise silent), measured:
AWS::ApiGateway::Stage, AWS::ApiGateway::Account, AWS::ApplicationAutoScaling::ScalableTarget and
ScalingPolicy, AWS::CloudWatch::Alarm, AWS::ECS::ClusterCapacityProviderAssociations,
AWS::S3::BucketPolicy and AWS::SQS::QueuePolicy. It creates the tables (streams included),
queues with redrive, buckets, functions, roles, the REST API, the ECS cluster/service/task
definition, the VPC and the event rule. The stream event-source mapping is left out of this one
deployment (``skyloom:streamMapping`` false; why at ``MOTO_CONTEXT``); ``test_template`` checks it.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest

import skyloom
from skyloom.core.resources import TABLES, queue_specs
from skyloom.local import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY, LocalStack
from tests.infra.conftest import REPO_ROOT, cdk_context

pytestmark = pytest.mark.slow

CDK = REPO_ROOT / "node_modules" / ".bin" / "cdk"
#: Any image reference: moto records the task definition and runs nothing.
WORKER_IMAGE = "public.ecr.aws/docker/library/python:3.11-slim"
STACK = "Skyloom"
MOTO_CONTEXT = {
    "skyloom:nag": False,
    "skyloom:workerImage": WORKER_IMAGE,
    # moto "runs" a DynamoDB stream mapping inside the write: it JSON-serializes every new record for
    # a Lambda invoke, so writing a binary attribute fails the write itself ("bytes is not JSON
    # serializable", a cancelled transaction), and a mapping deleted afterwards stays attached to the
    # table. The local runner's stream poller plays the mapping's role instead.
    "skyloom:streamMapping": False,
}


@skyloom.task
def square(x: int) -> int:
    return x * x


@skyloom.task
def total(*xs: int) -> int:
    return sum(xs)


def _synth(outdir: Path) -> None:
    from aws_cdk import App

    from infra.cdk.app import build

    app = App(outdir=str(outdir), context=cdk_context(**MOTO_CONTEXT))
    build(app)
    app.synth()


def _cli_env(endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ENDPOINT_URL=endpoint.replace("127.0.0.1", "localhost"),  # the CLI's S3 client needs a host name
        AWS_ACCESS_KEY_ID=LOCAL_ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY=LOCAL_SECRET_ACCESS_KEY,
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
        JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20",
        CDK_DISABLE_VERSION_CHECK="1",
    )
    return env


def _cdk(args: list[str], env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run([str(CDK), *args, "--no-notices"], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=240, check=False)
    assert done.returncode == 0, f"cdk {args[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


class DeployedStack(LocalStack):
    """The local runner on top of what ``cdk deploy`` created in its emulator.

    ``LocalStack`` starts the emulator and then provisions; here the CDK deploys in between, and the
    settings take the deployed bucket's name. Provisioning then only finds what exists (it is
    idempotent), which :meth:`_start_emulator` checks before it can create anything.
    """

    separate_queues = False  # CloudFormation creates the queues inside the one emulator

    def __init__(self, assembly: Path, workdir: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._assembly = assembly
        self._workdir = workdir
        self.outputs: dict[str, str] = {}
        self.created: dict[str, list[str]] = {}

    def _start_emulator(self) -> None:
        super()._start_emulator()
        env = _cli_env(self.aws_endpoint)
        account = _client("sts", env).get_caller_identity()["Account"]
        _cdk(["bootstrap", f"aws://{account}/us-east-1"], env, self._workdir)
        outputs = self._workdir / "outputs.json"
        _cdk(["deploy", "--app", str(self._assembly), "--method=direct", "--require-approval", "never",
              "--outputs-file", str(outputs)], env, self._workdir)
        self.outputs = json.loads(outputs.read_text())[STACK]
        self.created = {
            "tables": _client("dynamodb", env).list_tables()["TableNames"],
            "queues": [u.rsplit("/", 1)[1] for u in _client("sqs", env).list_queues()["QueueUrls"]],
            "buckets": [b["Name"] for b in _client("s3", env).list_buckets()["Buckets"]],
        }
        self._settings = replace(self._settings, bucket=self.outputs["BucketName"])


def _client(service: str, env: dict[str, str]) -> Any:
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.mark.skipif(not CDK.exists(), reason="run `make synth` (npm ci) first: needs the pinned CDK CLI")
@pytest.mark.timeout(600)
def test_deploy_into_moto_then_run_a_graph(tmp_path: Path) -> None:
    # GIVEN the synthesized app
    assembly = tmp_path / "cdk.out"
    _synth(assembly)
    stack = DeployedStack(assembly, tmp_path, workers=1, sweep_interval=1.0, run_dir=tmp_path / "run")
    with stack:
        # THEN CloudFormation created every data resource that Settings names, before provisioning ran
        settings = stack.settings
        assert sorted(settings.table_name(t) for t in TABLES) == sorted(stack.created["tables"])
        for q in queue_specs(settings.partitions, settings.visibility_timeout):
            assert settings.queue_name(q.partition, q.level) in stack.created["queues"]
            assert settings.dlq_name(q.partition, q.level) in stack.created["queues"]
        assert stack.outputs["BucketName"] in stack.created["buckets"]
        assert "SKYLOOM_ENDPOINT=" in stack.outputs["Connect"]

        # WHEN a small graph runs through the SDK
        with skyloom.connect(stack.endpoint, credentials=(LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY)) as client:
            with client.session() as _session:
                out = total.submit(*[square.submit(i) for i in range(4)])
            # THEN it completes
            assert out.result(timeout=120) == 0 + 1 + 4 + 9
