"""cdk-nag AwsSolutions checks, and the reason for each finding we accept.

Every suppression names the rule and says why; ``tests/infra`` asserts that no unsuppressed
AwsSolutions error or warning remains.
"""

from __future__ import annotations

from aws_cdk import Aspects, Stack
from cdk_nag import AwsSolutionsChecks, NagPackSuppression, NagSuppressions

SUPPRESSIONS: list[tuple[str, str]] = [
    ("AwsSolutions-IAM4", "The functions' roles use AWSLambdaBasicExecutionRole (logs only), API Gateway's "
     "CloudWatch role uses AmazonAPIGatewayPushToCloudWatchLogs: AWS-maintained, log-writing only."),
    ("AwsSolutions-IAM5", "Wildcards are confined to sub-resources of one named resource: a table's "
     "indexes (table/NAME/index/*), the bucket's objects (BUCKET/*), the cluster's tasks for the "
     "workers' one ecs:DescribeTasks of themselves (task/CLUSTER/*), X-Ray and CloudWatch actions that "
     "take no resource, dynamodb:ListStreams (no resource-level permission) and the ECS/ASG service "
     "helpers CDK generates. No data resource is granted with Resource '*'."),
    ("AwsSolutions-APIG2", "Requests are validated in functions/submit by pydantic models (one error "
     "mapping, an OpenAPI document); an API Gateway request validator would duplicate them."),
    ("AwsSolutions-APIG3", "No WAF: every request is SigV4-signed (IAM auth) and stage throttling applies; "
     "attach a web ACL per deployment if the API faces untrusted networks."),
    ("AwsSolutions-COG4", "The API uses IAM (SigV4) authorization, not Cognito: the caller's IAM identity "
     "is the session owner."),
    ("AwsSolutions-SQS3", "These queues are dead-letter queues (task queues' DLQs and resolve's on-failure "
     "queue): a DLQ of a DLQ would only move the same messages again."),
    ("AwsSolutions-ECS2", "Worker containers get the stack's names (tables, queues, bucket) and tunables "
     "through environment variables by design (Settings.to_env); none of them is a secret."),
    ("AwsSolutions-L1", "The functions run the Python runtime the bundling targets (bundling.RUNTIME); "
     "moving to a newer one is a deliberate, tested change."),
    ("AwsSolutions-AS3", "The optional EC2 Spot group's scaling is driven by the ECS capacity provider; "
     "its notifications are the ECS service events."),
    ("AwsSolutions-SNS3", "The only topic is CDK's drain hook of the optional EC2 Spot group: Auto Scaling "
     "publishes instance lifecycle notifications to it, no client does."),
    ("AwsSolutions-EC26", "Worker instance volumes are encrypted (BlockDeviceVolume.ebs(encrypted=True))."),
]


def apply_nag(stack: Stack, aspects: Aspects) -> None:
    """Add the AwsSolutions pack and the reasoned, stack-wide suppressions above."""
    aspects.add(AwsSolutionsChecks(verbose=True))
    NagSuppressions.add_stack_suppressions(
        stack,
        [NagPackSuppression(id=rule, reason=reason) for rule, reason in SUPPRESSIONS],
        apply_to_nested_stacks=True,
    )
