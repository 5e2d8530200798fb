"""Context variants: a customer-managed KMS key and an EC2 Spot (GPU) partition next to a Fargate one."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.conftest import KEY_ARN

pytest.importorskip("aws_cdk")
from aws_cdk.assertions import Annotations, Match, Template

from infra.cdk.stack import SkyloomStack


@pytest.fixture(scope="module")
def stack(variant_stack: SkyloomStack) -> SkyloomStack:
    return variant_stack


@pytest.fixture(scope="module")
def template(variant_template: Template) -> Template:
    return variant_template


def test_customer_managed_key_encrypts_tables_queues_and_bucket(template: Template) -> None:
    template.all_resources_properties(
        "AWS::DynamoDB::Table", {"SSESpecification": {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": KEY_ARN}}
    )
    template.all_resources_properties("AWS::SQS::Queue", {"KmsMasterKeyId": KEY_ARN})
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {"BucketEncryption": {"ServerSideEncryptionConfiguration": [Match.object_like(
            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KEY_ARN}})]}},
    )


def test_gpu_partition_runs_on_the_ec2_spot_capacity_provider(template: Template) -> None:
    template.resource_count_is("AWS::ECS::Service", 2)
    template.has_resource_properties(
        "AWS::AutoScaling::AutoScalingGroup",
        {"MixedInstancesPolicy": Match.object_like({"InstancesDistribution": Match.object_like(
            {"OnDemandPercentageAboveBaseCapacity": 0})})},
    )
    template.has_resource_properties(
        "AWS::ECS::Service",
        {"CapacityProviderStrategy": [{"CapacityProvider": {"Ref": Match.string_like_regexp("SpotProvider")},
                                       "Weight": 1}]},
    )
    # The Fargate partition keeps one on-demand worker as its base.
    template.has_resource_properties(
        "AWS::ECS::Service",
        {"DesiredCount": 1, "CapacityProviderStrategy": [
            {"CapacityProvider": "FARGATE_SPOT", "Weight": 1},
            {"CapacityProvider": "FARGATE", "Base": 1, "Weight": 0},
        ]},
    )


def test_no_unsuppressed_findings_in_the_variant(stack: SkyloomStack, template: Template) -> None:
    annotations = Annotations.from_stack(stack)
    findings: list[Any] = [*annotations.find_error("*", Match.any_value()),
                           *annotations.find_warning("*", Match.any_value())]
    assert findings == [], [f"{f.id}: {f.entry.data}" for f in findings]
