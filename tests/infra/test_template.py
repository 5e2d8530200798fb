"""The synthesized template: every resource of the issue, its key properties, least privilege, nag."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

aws_cdk = pytest.importorskip("aws_cdk")
from aws_cdk.assertions import Annotations, Match, Template  # noqa: E402

from infra.cdk.nag import SUPPRESSIONS  # noqa: E402
from infra.cdk.stack import SkyloomStack  # noqa: E402
from skyloom.core.config import Settings  # noqa: E402
from skyloom.core.resources import RESOLVE_STREAM_FILTERS, TABLES  # noqa: E402

SETTINGS = Settings()  # cdk.json's prefix ("skyloom") and one "default" partition, 3 levels
DATA_PREFIXES = ("dynamodb:", "s3:", "sqs:")


@pytest.fixture(scope="module")
def stack(default_stack: SkyloomStack) -> SkyloomStack:
    return default_stack


@pytest.fixture(scope="module")
def template(default_template: Template) -> Template:
    return default_template


@pytest.fixture(scope="module")
def resources(template: Template) -> dict[str, Any]:
    out: dict[str, Any] = template.to_json()["Resources"]
    return out


def of_type(resources: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in resources.items() if v["Type"] == kind}


def statements(resources: dict[str, Any], policy_id_part: str = "") -> Iterator[dict[str, Any]]:
    for logical, res in of_type(resources, "AWS::IAM::Policy").items():
        if policy_id_part in logical:
            yield from res["Properties"]["PolicyDocument"]["Statement"]


def actions(statement: dict[str, Any]) -> list[str]:
    a = statement["Action"]
    return [a] if isinstance(a, str) else list(a)


# -- DynamoDB ------------------------------------------------------------------------------------
def test_tables_come_from_resources_py(template: Template, resources: dict[str, Any]) -> None:
    tables = of_type(resources, "AWS::DynamoDB::Table")
    assert sorted(t["Properties"]["TableName"] for t in tables.values()) == sorted(
        SETTINGS.table_name(spec) for spec in TABLES
    )
    for spec in TABLES:
        template.has_resource(
            "AWS::DynamoDB::Table",
            {
                "Properties": Match.object_like(
                    {
                        "TableName": SETTINGS.table_name(spec),
                        "BillingMode": "PAY_PER_REQUEST",
                        "SSESpecification": {"SSEEnabled": True},
                        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                        "TimeToLiveSpecification": {"AttributeName": spec.ttl_attribute, "Enabled": True},
                        "StreamSpecification": {"StreamViewType": spec.stream} if spec.stream else Match.absent(),
                        "GlobalSecondaryIndexes": (
                            Match.array_with([Match.object_like({"IndexName": ix.name}) for ix in spec.indexes])
                            if spec.indexes
                            else Match.absent()
                        ),
                    }
                ),
                "DeletionPolicy": "Retain",
            },
        )


# -- SQS -----------------------------------------------------------------------------------------
def test_one_queue_and_dlq_per_partition_and_level(template: Template, resources: dict[str, Any]) -> None:
    names = {q["Properties"]["QueueName"] for q in of_type(resources, "AWS::SQS::Queue").values()}
    for level in range(3):
        assert SETTINGS.queue_name("default", level) in names
        assert SETTINGS.dlq_name("default", level) in names
        template.has_resource_properties(
            "AWS::SQS::Queue",
            {
                "QueueName": SETTINGS.queue_name("default", level),
                "VisibilityTimeout": SETTINGS.visibility_timeout,
                "SqsManagedSseEnabled": True,
                "RedrivePolicy": {"deadLetterTargetArn": Match.any_value(), "maxReceiveCount": 5},
            },
        )
    # Every queue refuses plain HTTP.
    assert len(of_type(resources, "AWS::SQS::QueuePolicy")) == len(names)


def test_dispatch_runs_every_minute(template: Template) -> None:
    template.has_resource_properties(
        "AWS::Events::Rule",
        {"ScheduleExpression": "rate(1 minute)", "State": "ENABLED",
         "Targets": [Match.object_like({"Arn": {"Fn::GetAtt": [Match.string_like_regexp("Dispatch"), "Arn"]}})]},
    )


# -- S3 ------------------------------------------------------------------------------------------
def test_data_bucket_is_private_encrypted_tls_only_and_expires_purged_objects(template: Template) -> None:
    template.has_resource(
        "AWS::S3::Bucket",
        {
            "Properties": Match.object_like(
                {
                    "BucketEncryption": {"ServerSideEncryptionConfiguration": [
                        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
                    "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                                       "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
                    "LifecycleConfiguration": {"Rules": Match.array_with([Match.object_like(
                        {"Id": "expire-purged-sessions", "ExpirationInDays": 1, "Status": "Enabled",
                         "TagFilters": [{"Key": "skyloom:purged", "Value": "true"}]})])},
                    "LoggingConfiguration": Match.any_value(),
                }
            ),
            "DeletionPolicy": "Retain",  # auto-delete is off by default
        },
    )
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {"PolicyDocument": {"Statement": Match.array_with([Match.object_like(
            {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})])}},
    )
    template.resource_count_is("Custom::S3AutoDeleteObjects", 0)


# -- Lambda --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "timeout"), [("submit", 28), ("resolve", 60), ("dispatch", 55)]
)
def test_functions_are_configured_by_environment(template: Template, name: str, timeout: int) -> None:
    expected_env = {k: v for k, v in SETTINGS.to_env().items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION",
                                                                           "SKYLOOM_BUCKET")}
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": f"skyloom_server.functions.{name}.handler.handler",
            "Timeout": timeout,
            "TracingConfig": {"Mode": "Active"},
            "Environment": {"Variables": Match.object_like({
                **expected_env,
                "SKYLOOM_BUCKET": {"Ref": Match.string_like_regexp("DataBucket")},
                "POWERTOOLS_SERVICE_NAME": f"skyloom-{name}",
                "POWERTOOLS_METRICS_NAMESPACE": "Skyloom",
                "LOG_LEVEL": "INFO",
            })},
        },
    )


def test_submit_timeout_covers_the_long_poll_and_fits_api_gateway() -> None:
    from infra.cdk.functions import SUBMIT_TIMEOUT
    from skyloom.core.protocol import WAIT_MAX_SECONDS

    assert WAIT_MAX_SECONDS + 5 <= SUBMIT_TIMEOUT.to_seconds() < 29


def test_resolve_reads_the_results_stream_with_partial_failures(template: Template) -> None:
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "EventSourceArn": {"Fn::GetAtt": [Match.string_like_regexp("TablesResults"), "StreamArn"]},
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "BisectBatchOnFunctionError": True,
            "MaximumRetryAttempts": 10,
            "StartingPosition": "TRIM_HORIZON",
            "DestinationConfig": {"OnFailure": {"Destination": {
                "Fn::GetAtt": [Match.string_like_regexp("ResolveFailures"), "Arn"]}}},
        },
    )


def test_resolve_is_invoked_only_for_the_records_it_acts_on(template: Template) -> None:
    (mapping,) = template.find_resources("AWS::Lambda::EventSourceMapping").values()
    patterns = [json.loads(f["Pattern"]) for f in mapping["Properties"]["FilterCriteria"]["Filters"]]
    assert patterns == [json.loads(json.dumps(p)) for p in RESOLVE_STREAM_FILTERS]


# -- API Gateway ---------------------------------------------------------------------------------
def test_api_requires_sigv4_on_root_and_proxy(template: Template, resources: dict[str, Any]) -> None:
    methods = of_type(resources, "AWS::ApiGateway::Method")
    assert len(methods) == 2  # ANY / and ANY /{proxy+}
    for m in methods.values():
        assert m["Properties"]["HttpMethod"] == "ANY"
        assert m["Properties"]["AuthorizationType"] == "AWS_IAM"
    template.has_resource_properties("AWS::ApiGateway::Resource", {"PathPart": "{proxy+}"})
    template.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "TracingEnabled": True,
            "AccessLogSetting": {"DestinationArn": Match.any_value(), "Format": Match.any_value()},
            "MethodSettings": [Match.object_like({"ThrottlingRateLimit": 200, "ThrottlingBurstLimit": 400})],
        },
    )


# -- workers -------------------------------------------------------------------------------------
def test_one_fargate_service_per_partition_spot_first(template: Template) -> None:
    template.resource_count_is("AWS::ECS::Service", 1)
    template.has_resource_properties(
        "AWS::ECS::Service",
        {
            "ServiceName": "skyloom-default",
            "DesiredCount": 0,
            "CapacityProviderStrategy": [
                {"CapacityProvider": "FARGATE_SPOT", "Weight": 1},
                {"CapacityProvider": "FARGATE", "Base": 0, "Weight": 0},
            ],
            "NetworkConfiguration": {"AwsvpcConfiguration": Match.object_like({"AssignPublicIp": "ENABLED"})},
        },
    )
    template.has_resource_properties(
        "AWS::ECS::ClusterCapacityProviderAssociations",
        {"CapacityProviders": Match.array_with(["FARGATE", "FARGATE_SPOT"])},
    )


def test_worker_container_drains_as_non_root_with_an_init(resources: dict[str, Any]) -> None:
    [task_def] = of_type(resources, "AWS::ECS::TaskDefinition").values()
    props = task_def["Properties"]
    assert (props["Cpu"], props["Memory"], props["RequiresCompatibilities"]) == ("1024", "2048", ["FARGATE"])
    [container] = props["ContainerDefinitions"]
    assert container["StopTimeout"] == 120
    assert container["User"] == "10001:10001"
    assert container["LinuxParameters"]["InitProcessEnabled"] is True
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env["SKYLOOM_WORKER_PARTITION"] == "default"
    assert env["SKYLOOM_WORKER_GRACE_SECONDS"] == "100"
    assert set(SETTINGS.to_env()) <= set(env)


def test_workers_scale_on_backlog_between_min_and_max(template: Template) -> None:
    template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget", {"MinCapacity": 0, "MaxCapacity": 10}
    )
    template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {"PolicyType": "StepScaling",
         "StepScalingPolicyConfiguration": Match.object_like({"AdjustmentType": "ExactCapacity"})},
    )
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {"Metrics": Match.array_with([Match.object_like({"Expression": Match.string_like_regexp("v0 \\+ f0")})])},
    )


def test_no_nat_gateway_so_idle_costs_nothing(template: Template) -> None:
    template.resource_count_is("AWS::EC2::NatGateway", 0)


# -- observability -------------------------------------------------------------------------------
def test_dashboard_and_alarms(template: Template, resources: dict[str, Any]) -> None:
    template.resource_count_is("AWS::CloudWatch::Dashboard", 1)
    body = json.dumps(of_type(resources, "AWS::CloudWatch::Dashboard"))
    for needle in ("TasksSubmitted", "ApproximateAgeOfOldestMessage", "Throttles", "RunningTaskCount", "busy"):
        assert needle in body
    alarms = [a["Properties"] for a in of_type(resources, "AWS::CloudWatch::Alarm").values()]
    described = " ".join(a.get("AlarmDescription", "") for a in alarms)
    assert described.count("dead-letter queue") == 4  # 3 task-queue DLQs and resolve's on-failure queue
    assert "results stream" in described
    assert {"submit", "resolve", "dispatch"} <= {w for w in described.split() if w in ("submit", "resolve", "dispatch")}


def test_outputs_give_the_connect_line(template: Template) -> None:
    outputs = template.to_json()["Outputs"]
    for key in ("ApiUrl", "Connect", "ConnectPython", "BucketName", "TableTasks", "QueueDefaultP0"):
        assert key in outputs
    assert "SKYLOOM_ENDPOINT=" in json.dumps(outputs["Connect"]["Value"])


# -- least privilege -----------------------------------------------------------------------------
def test_no_data_action_is_granted_on_every_resource(resources: dict[str, Any]) -> None:
    for st in statements(resources):
        if st["Resource"] == "*" or "*" in (st["Resource"] if isinstance(st["Resource"], list) else []):
            data = [a for a in actions(st) if a.startswith(DATA_PREFIXES)]
            # ListStreams has no resource-level permission in IAM; it lists stream ARNs only.
            assert data in ([], ["dynamodb:ListStreams"]), st


def _role_actions(resources: dict[str, Any], part: str) -> set[str]:
    return {a for st in statements(resources, part) for a in actions(st)}


def test_each_function_gets_only_what_it_uses(resources: dict[str, Any]) -> None:
    submit = _role_actions(resources, "FunctionsSubmit")
    resolve = _role_actions(resources, "FunctionsResolve")
    dispatch = _role_actions(resources, "FunctionsDispatch")
    worker = _role_actions(resources, "TaskRole")
    assert {"dynamodb:PutItem", "s3:PutObject", "s3:GetObject*", "sqs:SendMessage"} <= submit
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage"} & submit == set()
    for fn in (resolve, dispatch):
        assert {"dynamodb:UpdateItem", "sqs:SendMessage"} <= fn
        assert not any(a.startswith("s3:") for a in fn)
        assert "sqs:ReceiveMessage" not in fn
    assert {"dynamodb:UpdateItem", "s3:PutObject", "sqs:ReceiveMessage", "sqs:DeleteMessage",
            "sqs:ChangeMessageVisibility", "sqs:SendMessage"} <= worker


# -- cdk-nag -------------------------------------------------------------------------------------
def test_no_unsuppressed_aws_solutions_findings(stack: SkyloomStack, template: Template) -> None:
    annotations = Annotations.from_stack(stack)
    findings = [*annotations.find_error("*", Match.string_like_regexp("AwsSolutions-.*")),
                *annotations.find_warning("*", Match.string_like_regexp("AwsSolutions-.*"))]
    assert findings == [], [f"{f.id}: {f.entry.data}" for f in findings]


def test_every_suppression_has_a_written_reason() -> None:
    for rule, reason in SUPPRESSIONS:
        assert rule.startswith("AwsSolutions-") and len(reason) >= 40, rule
