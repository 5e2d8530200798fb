"""The data bucket: result blobs above the inline threshold.

Encrypted (S3-managed, or the customer-managed KMS key with an S3 Bucket Key, which keeps KMS calls
and their cost down), public access blocked, TLS 1.2 or later enforced by the bucket policy (a deny
on ``aws:SecureTransport`` false and on ``s3:TlsVersion`` below 1.2), versioning off (results are
immutable and written once). Lifecycle: objects tagged ``skyloom:purged=true`` expire after
:data:`PURGED_EXPIRY_DAYS` days (purging a session tags its objects, so a purge is one tagging pass
and S3 does the deleting); incomplete multipart uploads (abandoned presigned uploads) are aborted
after a day. Auto-delete is off by default: ``cdk destroy`` keeps the bucket and its data unless
``skyloom:autoDeleteData`` is true in context.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

PURGED_TAG = ("skyloom:purged", "true")
PURGED_EXPIRY_DAYS = 1


class DataBucket(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, key: kms.IKey | None, auto_delete: bool, access_logs: s3.IBucket
    ) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.KMS if key else s3.BucketEncryption.S3_MANAGED,
            encryption_key=key,
            bucket_key_enabled=bool(key),
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="data-bucket/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-purged-sessions",
                    tag_filters={PURGED_TAG[0]: PURGED_TAG[1]},
                    expiration=Duration.days(PURGED_EXPIRY_DAYS),
                ),
                s3.LifecycleRule(
                    id="abort-incomplete-uploads", abort_incomplete_multipart_upload_after=Duration.days(1)
                ),
            ],
            removal_policy=RemovalPolicy.DESTROY if auto_delete else RemovalPolicy.RETAIN,
            auto_delete_objects=auto_delete,
        )


class AccessLogsBucket(Construct):
    """Server access logs of the data bucket and nothing else; expires logs after 90 days.

    Always SSE-S3, even when a customer-managed key is configured: S3 delivers server access logs
    only to buckets whose default encryption is SSE-S3.
    """

    def __init__(self, scope: Construct, construct_id: str, *, auto_delete: bool) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            lifecycle_rules=[s3.LifecycleRule(id="expire-logs", expiration=Duration.days(90))],
            removal_policy=RemovalPolicy.DESTROY if auto_delete else RemovalPolicy.RETAIN,
            auto_delete_objects=auto_delete,
        )
