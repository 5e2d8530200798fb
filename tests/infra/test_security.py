"""Data protection in the synthesized templates: encryption at rest, TLS only, KMS grants, no secrets.

Both variants of ``conftest.py``: ``default`` (every service's own AWS key) and ``variant`` (the
customer-managed key of ``skyloom:kmsKeyArn``). Each rule is checked over every resource of its type,
so a queue or log group added later without encryption fails here, and a new kind of data store
fails ``test_every_data_store_type_is_reviewed`` until someone decides how it is encrypted.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.infra.conftest import KEY_ARN

pytest.importorskip("aws_cdk")
from aws_cdk.assertions import Template

from infra.cdk.workers import SCRATCH_PATH, WORKER_UID

KEY_ID = KEY_ARN.rsplit("/", 1)[1]
#: Resource types that hold data at rest, each checked below. A type outside this set that stores
#: data (a stream, a file system, a database, a secret...) must be reviewed and added here.
REVIEWED_DATA_STORES = {
    "AWS::DynamoDB::Table", "AWS::SQS::Queue", "AWS::S3::Bucket", "AWS::Logs::LogGroup", "AWS::SNS::Topic",
}
DATA_STORE_SERVICES = ("DynamoDB", "SQS", "S3", "Logs", "SNS", "Kinesis", "EFS", "RDS", "ElastiCache",
                       "SecretsManager", "SSM", "OpenSearchService", "Elasticsearch", "KinesisFirehose", "MSK",
                       "Glue", "Backup", "ECR", "DocDB", "Neptune", "Timestream", "Redshift", "FSx")
#: The data-plane KMS actions CDK's grants give (Encrypt/ReEncrypt come with its encrypt-decrypt
#: grant); nothing that manages the key, its policy or its grants.
DATA_KEY_ACTIONS = {"kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey", "kms:GenerateDataKey*",
                    "kms:ReEncrypt*"}
#: Environment variable names and values that would be credentials.
SECRET_NAME = re.compile(r"SECRET|PASSW|TOKEN|PRIVATE|CREDENTIAL|ACCESS_KEY|API_KEY", re.IGNORECASE)
SECRET_VALUE = re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b|-----BEGIN [A-Z ]*PRIVATE KEY-----")


@pytest.fixture(scope="module", params=["default", "variant"])
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def template(variant: str, request: pytest.FixtureRequest) -> Template:
    fixture: Template = request.getfixturevalue(f"{variant}_template")
    return fixture


@pytest.fixture(scope="module")
def resources(template: Template) -> dict[str, Any]:
    out: dict[str, Any] = template.to_json()["Resources"]
    return out


def of_type(resources: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v.get("Properties", {}) for k, v in resources.items() if v["Type"] == kind}


def statements(policy_document: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = policy_document["Statement"]
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _denies_plain_http(statement: dict[str, Any]) -> bool:
    return statement["Effect"] == "Deny" and statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}


# -- encryption at rest --------------------------------------------------------------------------
def test_every_data_store_type_is_reviewed(resources: dict[str, Any]) -> None:
    types = {r["Type"] for r in resources.values()}
    stores = {t for t in types
              if t.split("::")[1] in DATA_STORE_SERVICES and not t.endswith(("Policy", "Subscription"))}
    assert stores <= REVIEWED_DATA_STORES, stores - REVIEWED_DATA_STORES


def test_tables_and_their_streams_are_encrypted(variant: str, resources: dict[str, Any]) -> None:
    tables = of_type(resources, "AWS::DynamoDB::Table")
    assert tables
    for name, props in tables.items():
        sse = props["SSESpecification"]
        if variant == "variant":
            assert sse == {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": KEY_ARN}, name
        else:
            assert sse == {"SSEEnabled": True}, name  # the AWS-managed key (aws/dynamodb)


def test_every_queue_and_dead_letter_queue_is_encrypted(variant: str, resources: dict[str, Any]) -> None:
    queues = of_type(resources, "AWS::SQS::Queue")
    assert any("dlq" in p["QueueName"] for p in queues.values())
    assert any("resolve-failures" in p["QueueName"] for p in queues.values())
    for name, props in queues.items():
        if variant == "variant":
            assert props.get("KmsMasterKeyId") == KEY_ARN, name
        else:
            assert props.get("SqsManagedSseEnabled") is True, name


def test_buckets_are_encrypted_and_only_the_access_log_bucket_stays_on_s3_keys(
    variant: str, resources: dict[str, Any]
) -> None:
    encryption = {
        name: props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        for name, props in of_type(resources, "AWS::S3::Bucket").items()
    }
    data = {n: e for n, e in encryption.items() if n.startswith("Data")}
    access_logs = {n: e for n, e in encryption.items() if n.startswith("AccessLogs")}
    assert len(data) == 1 and len(access_logs) == 1 and len(encryption) == 2, sorted(encryption)
    # S3 delivers server access logs only to SSE-S3 buckets.
    assert [e["ServerSideEncryptionByDefault"] for e in access_logs.values()] == [{"SSEAlgorithm": "AES256"}]
    [rule] = data.values()
    if variant == "variant":
        assert rule == {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KEY_ARN},
                        "BucketKeyEnabled": True}
    else:
        assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}


def test_log_groups_use_the_customer_key_when_given(variant: str, resources: dict[str, Any]) -> None:
    groups = of_type(resources, "AWS::Logs::LogGroup")
    # The three functions, the API's access log, the workers and the VPC flow log.
    assert len(groups) == 6, sorted(groups)
    for name, props in groups.items():
        # Without a key CloudWatch Logs encrypts with its own; KmsKeyId is for a customer key only.
        assert props.get("KmsKeyId") == (KEY_ARN if variant == "variant" else None), name
        assert "RetentionInDays" in props, name


def test_function_environments_use_the_customer_key_when_given(variant: str, resources: dict[str, Any]) -> None:
    functions = {n: p for n, p in of_type(resources, "AWS::Lambda::Function").items()
                 if str(p.get("Handler", "")).startswith("skyloom_server.functions.")}
    assert len(functions) == 3
    for name, props in functions.items():
        assert props.get("KmsKeyArn") == (KEY_ARN if variant == "variant" else None), name


def test_fargate_task_storage_uses_the_customer_key_when_given(variant: str, resources: dict[str, Any]) -> None:
    [cluster] = of_type(resources, "AWS::ECS::Cluster").values()
    storage = cluster.get("Configuration", {}).get("ManagedStorageConfiguration")
    # Without a key Fargate encrypts task storage with an AWS-owned key (platform 1.4 and later).
    assert storage == ({"FargateEphemeralStorageKmsKeyId": KEY_ID} if variant == "variant" else None)


def test_topics_are_encrypted(variant: str, resources: dict[str, Any]) -> None:
    topics = of_type(resources, "AWS::SNS::Topic")
    if variant == "default":
        assert topics == {}  # only the EC2 Spot drain hook has one
    assert all(p.get("KmsMasterKeyId") == KEY_ARN for p in topics.values()), topics


def test_instance_volumes_are_encrypted(resources: dict[str, Any]) -> None:
    for name, props in of_type(resources, "AWS::EC2::LaunchTemplate").items():
        for device in props["LaunchTemplateData"].get("BlockDeviceMappings", []):
            assert device["Ebs"]["Encrypted"] is True, name


# -- TLS -----------------------------------------------------------------------------------------
def test_every_queue_refuses_plain_http(resources: dict[str, Any]) -> None:
    covered: set[str] = set()
    for props in of_type(resources, "AWS::SQS::QueuePolicy").values():
        if any(_denies_plain_http(st) for st in statements(props["PolicyDocument"])):
            covered |= {q["Ref"] for q in props["Queues"]}
    assert covered == set(of_type(resources, "AWS::SQS::Queue"))


def test_every_bucket_refuses_plain_http_and_old_tls(resources: dict[str, Any]) -> None:
    covered: set[str] = set()
    for props in of_type(resources, "AWS::S3::BucketPolicy").values():
        sts = statements(props["PolicyDocument"])
        old_tls = any(st["Effect"] == "Deny" and st.get("Condition") == {"NumericLessThan": {"s3:TlsVersion": 1.2}}
                      for st in sts)
        if any(_denies_plain_http(st) for st in sts) and old_tls:
            covered.add(props["Bucket"]["Ref"])
    assert covered == set(of_type(resources, "AWS::S3::Bucket"))


# -- KMS grants ----------------------------------------------------------------------------------
def _kms_grants(resources: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Policy logical id -> its statements that allow KMS actions."""
    grants: dict[str, list[dict[str, Any]]] = {}
    for name, props in of_type(resources, "AWS::IAM::Policy").items():
        for st in statements(props["PolicyDocument"]):
            if any(a.startswith("kms:") for a in as_list(st["Action"])):
                grants.setdefault(name, []).append(st)
    for name, props in of_type(resources, "AWS::IAM::Role").items():
        for policy in props.get("Policies", []):
            for st in statements(policy["PolicyDocument"]):
                if any(a.startswith("kms:") for a in as_list(st["Action"])):
                    grants.setdefault(name, []).append(st)
    return grants


def test_kms_grants_go_only_to_roles_that_touch_encrypted_data(variant: str, resources: dict[str, Any]) -> None:
    grants = _kms_grants(resources)
    if variant == "default":
        assert grants == {}  # AWS-owned and AWS-managed keys need no IAM grant
        return
    holders = {re.sub(r"(ServiceRole)?DefaultPolicy[0-9A-F]{8}$", "", name) for name in grants}
    assert holders == {
        "FunctionsSubmit", "FunctionsResolve", "FunctionsDispatch",   # tables, queues (+ bucket for submit)
        "WorkersdefaulttaskTaskRole", "WorkersgputaskTaskRole",        # tables, queues, bucket
        "WorkersSpotAsgLifecycleHookDrainHookRole",                    # publishes to the encrypted topic
    }, holders
    for name, sts in grants.items():
        for st in sts:
            assert st["Effect"] == "Allow", name
            assert as_list(st["Resource"]) == [KEY_ARN], (name, st["Resource"])
            assert set(as_list(st["Action"])) <= DATA_KEY_ACTIONS, (name, st["Action"])
    # Reading the results stream and the encrypted queues needs Decrypt; writing needs a data key.
    for holder in ("FunctionsResolve", "WorkersdefaulttaskTaskRole", "FunctionsSubmit"):
        actions = {a for n, sts in grants.items() if n.startswith(holder) for st in sts for a in as_list(st["Action"])}
        assert {"kms:Decrypt", "kms:GenerateDataKey*"} <= actions, holder


def test_execution_and_service_roles_get_no_kms(variant: str, resources: dict[str, Any]) -> None:
    for name in _kms_grants(resources):
        assert "ExecutionRole" not in name and "CloudWatchRole" not in name and "FlowLogs" not in name, name


# -- secrets -------------------------------------------------------------------------------------
def _environments(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    envs: dict[str, dict[str, Any]] = {}
    for name, props in of_type(resources, "AWS::Lambda::Function").items():
        envs[name] = props.get("Environment", {}).get("Variables", {})
    for name, props in of_type(resources, "AWS::ECS::TaskDefinition").items():
        for c in props["ContainerDefinitions"]:
            envs[f"{name}/{c['Name']}"] = {e["Name"]: e["Value"] for e in c.get("Environment", [])}
    return envs


def test_no_credential_in_any_environment(resources: dict[str, Any]) -> None:
    envs = _environments(resources)
    assert envs
    for where, env in envs.items():
        for key, value in env.items():
            assert not SECRET_NAME.search(key), f"{where}: {key}"
            assert not SECRET_VALUE.search(json.dumps(value)), f"{where}: {key}"


def test_api_logs_no_request_data(resources: dict[str, Any]) -> None:
    [stage] = of_type(resources, "AWS::ApiGateway::Stage").values()
    for setting in stage["MethodSettings"]:
        assert setting["DataTraceEnabled"] is False  # execution logs would carry bodies and headers
    fmt = stage["AccessLogSetting"]["Format"]
    assert "$context.identity.caller" in fmt and "requestBody" not in fmt and "authorization" not in fmt.lower()


# -- worker containers ---------------------------------------------------------------------------
def test_worker_containers_are_non_root_with_a_read_only_root_and_a_scratch_volume(resources: dict[str, Any]) -> None:
    task_defs = of_type(resources, "AWS::ECS::TaskDefinition")
    assert task_defs
    for name, props in task_defs.items():
        volumes = {v["Name"]: v for v in props.get("Volumes", [])}
        for c in props["ContainerDefinitions"]:
            assert c["User"] == WORKER_UID and not c["User"].startswith("0"), name
            assert c["ReadonlyRootFilesystem"] is True, name
            assert c.get("Privileged") in (None, False), name
            [mount] = c["MountPoints"]
            assert mount["ContainerPath"] == SCRATCH_PATH and mount["ReadOnly"] is False, name
            # No host path: the task's own (encrypted) storage, never the instance's filesystem.
            assert set(volumes[mount["SourceVolume"]]) == {"Name"}, name
            env = {e["Name"]: e["Value"] for e in c["Environment"]}
            assert env["TMPDIR"] == SCRATCH_PATH and env["XDG_CACHE_HOME"].startswith(SCRATCH_PATH + "/"), name
