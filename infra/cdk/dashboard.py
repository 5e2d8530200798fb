"""The CloudWatch dashboard and the alarms.

Task counts come from the Powertools metrics the code publishes in the ``Skyloom`` namespace
(dimension ``service``): ``TasksSubmitted`` (submit), ``TasksQueuedByResolve`` and
``TasksCancelledByAbort`` (resolve), ``Sweeper_*`` (dispatch), and ``TasksCompleted``/``TasksFailed``
(service ``skyloom-worker``; shown once the agent publishes them). Queue depth and oldest-message
age per partition come from SQS; worker count from Container Insights; the busy fraction is in-flight
messages over running workers, next to the agents' own ``WorkerBusyFraction`` (percent). Each
partition's queue velocity (SQS inflow, workers' starts and completions) and shape (the sweeper's
``PartitionBacklog``, ``PartitionInFlight``, ``PartitionMinWorkers``/``PartitionMaxWorkers``) are the
terms of a user's own scaling formula (docs/telemetry.md).

Alarms: any message in a dead-letter queue (task queues and resolve's on-failure queue), the results
stream iterator age above five minutes (resolution falling behind), and function errors. They notify
the SNS topic named by ``skyloom:alarmTopicArn`` when set.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

NAMESPACE = "Skyloom"
MINUTE = Duration.minutes(1)
ITERATOR_AGE_ALARM_MS = 5 * 60 * 1000


def _skyloom(name: str, service: str, label: str | None = None) -> cloudwatch.Metric:
    return cloudwatch.Metric(
        namespace=NAMESPACE, metric_name=name, dimensions_map={"service": service},
        statistic="Sum", period=MINUTE, label=label or name,
    )


class Dashboard(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stack_prefix: str,
        functions: dict[str, lambda_.Function],
        queues_by_partition: dict[str, list[sqs.Queue]],
        dead_letter_queues: list[sqs.Queue],
        services: dict[str, ecs.BaseService],
        cluster: ecs.ICluster,
        alarm_topic_arn: str | None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=f"{stack_prefix}-overview")
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Tasks by state change (per minute)",
                left=[
                    _skyloom("TasksSubmitted", "skyloom-submit", "submitted"),
                    _skyloom("TasksQueuedByResolve", "skyloom-resolve", "queued by resolve"),
                    _skyloom("TasksCancelledByAbort", "skyloom-resolve", "cancelled by abort"),
                    _skyloom("TasksCompleted", "skyloom-worker", "completed"),
                    _skyloom("TasksFailed", "skyloom-worker", "failed"),
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Submitted / completed per minute",
                left=[
                    _skyloom("TasksSubmitted", "skyloom-submit", "submitted"),
                    _skyloom("TasksCompleted", "skyloom-worker", "completed"),
                ],
                width=12,
            ),
        )
        for partition, queues in queues_by_partition.items():
            self.dashboard.add_widgets(
                cloudwatch.GraphWidget(
                    title=f"{partition}: queue depth",
                    left=[q.metric_approximate_number_of_messages_visible(period=MINUTE) for q in queues],
                    right=[q.metric_approximate_number_of_messages_not_visible(period=MINUTE) for q in queues],
                    width=8,
                ),
                cloudwatch.GraphWidget(
                    title=f"{partition}: age of oldest message (s)",
                    left=[q.metric_approximate_age_of_oldest_message(period=MINUTE) for q in queues],
                    width=8,
                ),
                self._workers_widget(partition, queues, services[partition], cluster),
            )
            self.dashboard.add_widgets(*self._velocity_widgets(partition, queues))
        fns = list(functions.values())
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Lambda errors", left=[f.metric_errors(period=MINUTE) for f in fns], width=8),
            cloudwatch.GraphWidget(
                title="Lambda throttles", left=[f.metric_throttles(period=MINUTE) for f in fns], width=8
            ),
            cloudwatch.GraphWidget(
                title="Lambda duration p99 (ms)",
                left=[f.metric_duration(period=MINUTE, statistic="p99") for f in fns],
                width=8,
            ),
        )
        self._prefix = stack_prefix
        self.alarms = self._alarms(functions, dead_letter_queues)
        if alarm_topic_arn:
            topic = sns.Topic.from_topic_arn(self, "AlarmTopic", alarm_topic_arn)
            for alarm in self.alarms:
                alarm.add_alarm_action(actions.SnsAction(topic))
        # By ARN built from the alarms' names, not by reference: the dashboard then does not depend on
        # the alarm resources (emulators that skip AWS::CloudWatch::Alarm still deploy it).
        by_name = [
            cloudwatch.Alarm.from_alarm_arn(
                self, f"Ref{i}",
                Stack.of(self).format_arn(
                    service="cloudwatch",
                    resource="alarm",
                    resource_name=f"{stack_prefix}-{alarm.node.id}",
                    arn_format=ArnFormat.COLON_RESOURCE_NAME,
                ),
            )
            for i, alarm in enumerate(self.alarms)
        ]
        self.dashboard.add_widgets(cloudwatch.AlarmStatusWidget(alarms=by_name, title="Alarms", width=24))

    @staticmethod
    def _workers_widget(
        partition: str, queues: list[sqs.Queue], service: ecs.BaseService, cluster: ecs.ICluster
    ) -> cloudwatch.GraphWidget:
        running = cloudwatch.Metric(
            namespace="ECS/ContainerInsights",
            metric_name="RunningTaskCount",
            dimensions_map={"ClusterName": cluster.cluster_name, "ServiceName": service.service_name},
            statistic="Average",
            period=MINUTE,
            label="workers",
        )
        in_flight = {
            f"f{i}": q.metric_approximate_number_of_messages_not_visible(period=MINUTE, statistic="Maximum")
            for i, q in enumerate(queues)
        }
        busy = cloudwatch.MathExpression(
            expression=f"IF(w > 0, ({' + '.join(in_flight)}) / w, 0)",
            using_metrics={**in_flight, "w": running},
            label="busy fraction (in-flight / workers)",
            period=MINUTE,
        )
        reported = cloudwatch.Metric(
            namespace=NAMESPACE,
            metric_name="WorkerBusyFraction",
            dimensions_map={"partition": partition, "service": "skyloom-worker"},
            statistic="Average",
            period=MINUTE,
            label="busy % (agents' report)",
        )
        return cloudwatch.GraphWidget(
            title=f"{partition}: workers and busy fraction", left=[running], right=[busy, reported], width=8
        )

    @staticmethod
    def _velocity_widgets(partition: str, queues: list[sqs.Queue]) -> list[cloudwatch.GraphWidget]:
        """Queue velocity (inflow, starts, completions per minute) and shape (backlog, min/max workers):
        the terms of a user's own scaling or alerting formula (docs/scaling.md)."""
        sent = {f"s{i}": q.metric_number_of_messages_sent(period=MINUTE, statistic="Sum") for i, q in enumerate(queues)}
        inflow = cloudwatch.MathExpression(expression=" + ".join(sent), using_metrics=sent, label="inflow (enqueued)",
                                           period=MINUTE)

        def per_partition(name: str, label: str) -> cloudwatch.MathExpression:
            # The workers publish per (partition, handler): the sum over handlers is the partition's rate.
            return cloudwatch.MathExpression(
                expression=(f"SUM(SEARCH('{{{NAMESPACE},handler,partition,service}} MetricName=\"{name}\" "
                            f"partition=\"{partition}\" service=\"skyloom-worker\"', 'Sum', 60))"),
                label=label, period=MINUTE,
            )

        def gauge(name: str, label: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace=NAMESPACE, metric_name=name, statistic="Maximum", period=MINUTE,
                                     dimensions_map={"partition": partition, "service": "skyloom-dispatch"},
                                     label=label)

        return [
            cloudwatch.GraphWidget(
                title=f"{partition}: queue velocity (tasks per minute)",
                left=[inflow, per_partition("TasksStarted", "started"), per_partition("TasksCompleted", "completed")],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title=f"{partition}: backlog and shape",
                left=[gauge("PartitionBacklog", "backlog"), gauge("PartitionInFlight", "in flight")],
                right=[gauge("PartitionMinWorkers", "min workers"), gauge("PartitionMaxWorkers", "max workers")],
                width=12,
            ),
        ]

    def _alarms(self, functions: dict[str, lambda_.Function], dlqs: list[sqs.Queue]) -> list[cloudwatch.Alarm]:
        alarms: list[cloudwatch.Alarm] = []
        for i, dlq in enumerate(dlqs):
            alarms.append(
                dlq.metric_approximate_number_of_messages_visible(period=MINUTE, statistic="Maximum").create_alarm(
                    self, f"DlqDepth{i}",
                    alarm_name=f"{self._prefix}-DlqDepth{i}",
                    alarm_description=f"Messages in dead-letter queue {dlq.node.id}",
                    threshold=0,
                    comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                    evaluation_periods=1,
                    treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                )
            )
        resolve = functions["resolve"]
        alarms.append(
            cloudwatch.Metric(
                namespace="AWS/Lambda", metric_name="IteratorAge",
                dimensions_map={"FunctionName": resolve.function_name}, statistic="Maximum", period=MINUTE,
            ).create_alarm(
                self, "StreamIteratorAge",
                alarm_name=f"{self._prefix}-StreamIteratorAge",
                alarm_description="The results stream is read more than 5 minutes late: resolution lags",
                threshold=ITERATOR_AGE_ALARM_MS, evaluation_periods=3,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
        )
        for name, fn in functions.items():
            alarms.append(
                fn.metric_errors(period=MINUTE, statistic="Sum").create_alarm(
                    self, f"{name.capitalize()}Errors",
                    alarm_name=f"{self._prefix}-{name.capitalize()}Errors",
                    alarm_description=f"The {name} function raised errors",
                    threshold=0,
                    comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                    evaluation_periods=1,
                    treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                )
            )
        return alarms
