"""The REST API: API Gateway (REST, regional) with IAM (SigV4) auth, proxying everything to submit.

``ANY /`` and ``ANY /{proxy+}`` both require SigV4; the caller's IAM identity is the session owner
(``functions/submit/identity.py``). Stage-wide throttling, JSON access logs, execution logs at
ERROR, X-Ray tracing. Neither log carries a request's headers or body: the access log's fields are
listed below (the caller's identity, not its credentials) and data tracing is off.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

STAGE = "v1"
#: Steady requests per second and burst, for the whole stage. SDK calls batch, so these are generous.
THROTTLE_RATE = 200
THROTTLE_BURST = 400


class Api(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        submit: lambda_.IFunction,
        stack_prefix: str,
        key: kms.IKey | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=RemovalPolicy.DESTROY,
            encryption_key=key,
        )
        self.api = apigw.LambdaRestApi(
            self,
            "Api",
            rest_api_name=f"{stack_prefix}-api",
            description="Skyloom REST API (sessions, results, tasks, events); SigV4 only",
            handler=submit,
            proxy=True,
            endpoint_types=[apigw.EndpointType.REGIONAL],
            default_method_options=apigw.MethodOptions(authorization_type=apigw.AuthorizationType.IAM),
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.DESTROY,
            deploy_options=apigw.StageOptions(
                stage_name=STAGE,
                throttling_rate_limit=THROTTLE_RATE,
                throttling_burst_limit=THROTTLE_BURST,
                tracing_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
                metrics_enabled=True,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
            ),
        )

    @property
    def url(self) -> str:
        return self.api.url
