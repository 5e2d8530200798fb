"""The CDK app entry point (``cdk.json``: ``"app": ".venv/bin/python -m infra.cdk.app"``).

Context (``cdk.json`` or ``-c``): ``skyloom:partitions`` (the one place partitions are declared),
``skyloom:stackPrefix``, ``skyloom:kmsKeyArn``, ``skyloom:autoDeleteData``, ``skyloom:alarmTopicArn``,
``skyloom:ec2Spot``, ``skyloom:workerImage`` (a prebuilt image instead of the Dockerfile) and
``skyloom:nag`` (false to skip the cdk-nag AwsSolutions checks).
"""

from __future__ import annotations

from aws_cdk import App, Aspects

from infra.cdk import context
from infra.cdk.nag import apply_nag
from infra.cdk.stack import SkyloomStack


def build(app: App) -> SkyloomStack:
    """The stack, named after the prefix (``Skyloom`` for the default prefix), env-agnostic."""
    deploy = context.read(app.node)
    prefix = deploy.settings.stack
    stack_id = "Skyloom" if prefix == "skyloom" else "Skyloom-" + prefix
    stack = SkyloomStack(
        app,
        stack_id,
        deploy=deploy,
        worker_image=app.node.try_get_context("skyloom:workerImage") or None,
        description="Skyloom: serverless task-graph orchestrator (API, functions, tables, queues, workers)",
    )
    if app.node.try_get_context("skyloom:nag") not in (False, "false"):
        apply_nag(stack, Aspects.of(app))
    return stack


def main() -> None:
    app = App()
    build(app)
    app.synth()


if __name__ == "__main__":
    main()
