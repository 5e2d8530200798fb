"""The workers: an ECS cluster and one service per partition, scaled on queue backlog.

- Network: a VPC with public subnets only and no NAT gateway (a NAT costs money every hour). Tasks
  get a public IP for outbound calls and a security group with no ingress: nothing connects into a
  worker. DynamoDB and S3 go through free gateway endpoints.
- Capacity: FARGATE_SPOT first; ``minWorkers`` tasks are the FARGATE (on-demand) base so that a
  partition's floor survives Spot reclaims. A partition with ``spot: false`` runs on FARGATE only.
  Partitions listed in ``skyloom:ec2Spot`` run instead on an EC2 Spot Auto Scaling group (bigger or
  GPU instances) through an ASG capacity provider.
- Task: the ``fargate_worker/Dockerfile`` image (repository root as context; built by Docker at
  deploy time only, always for linux/amd64, the workers' platform, whatever machine deploys; one
  image per distinct set of ``skyloom:workerPackages``), user 10001 (non-root),
  ``initProcessEnabled`` (PID 1 reaps orphans), ``stopTimeout`` 120 s (Fargate's maximum) above
  the agent's 100 s grace. The root filesystem is read-only; :data:`SCRATCH_PATH` (``/tmp``, also
  ``TMPDIR`` and the XDG cache) is a task-storage volume, the only place task code can write. The
  agent itself writes no files: its child processes talk over socket pairs, and its logs go to
  stdout.
- Encryption at rest: the log groups (worker, VPC flow logs), Fargate's ephemeral task storage and
  the EC2 Spot drain-hook topic use the customer-managed key when one is configured; otherwise AWS
  encrypts them with its own keys (CloudWatch Logs and Fargate storage always are; the topic gets
  ``alias/aws/sns``, since SNS topics are not encrypted by default). EC2 instance volumes are
  encrypted EBS.
- Scaling (step scaling, documented in the README): the partition's backlog is
  ``sum(ApproximateNumberOfMessagesVisible + ApproximateNumberOfMessagesNotVisible)`` over its
  queues, i.e. queued plus running tasks. Each step sets the exact task count to
  ``ceil(backlog / TASKS_PER_WORKER)`` rounded up to the next step, clamped to ``[min, max]``;
  backlog 0 returns to ``minWorkers`` (0 by default: an idle partition costs nothing).
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.cdk.context import Ec2SpotSpec
from infra.cdk.functions import DataResources
from skyloom.core.config import Settings
from skyloom.core.resources import PartitionSpec

#: The workers' platform: Fargate tasks are X86_64 (``runtime_platform``) and the EC2 Spot group runs
#: x86_64 ECS-optimized AMIs. An image built on an arm64 laptop must still be amd64.
IMAGE_PLATFORM = ecr_assets.Platform.LINUX_AMD64
#: ECS stopTimeout: SIGTERM -> SIGKILL. Fargate's maximum; the agent drains within its 100 s grace.
STOP_TIMEOUT = Duration.seconds(120)
GRACE_SECONDS = 100
#: Backlog (queued + running tasks) one worker is expected to absorb; the scaling target.
TASKS_PER_WORKER = 4
WORKER_UID = "10001:10001"
#: The one writable path of a worker container (the root filesystem is read-only): a volume on the
#: task's ephemeral storage. Task code finds it as TMPDIR (what ``tempfile`` uses) and XDG_CACHE_HOME.
SCRATCH_PATH = "/tmp"
SCRATCH_VOLUME = "scratch"


def scaling_steps(spec: PartitionSpec) -> list[appscaling.ScalingInterval]:
    """Exact-capacity steps over the backlog: 0 -> min; then 1, 2, 4, ... workers up to max."""
    steps = [appscaling.ScalingInterval(upper=1, change=spec.min_workers)]
    counts: list[int] = []
    n = 1
    while n < spec.max_workers:
        counts.append(n)
        n *= 2
    counts.append(spec.max_workers)
    lower = 1
    for i, count in enumerate(counts):
        last = i == len(counts) - 1
        upper = None if last else count * TASKS_PER_WORKER + 1
        steps.append(appscaling.ScalingInterval(lower=lower, upper=upper, change=max(count, spec.min_workers)))
        if upper is not None:
            lower = upper
    return steps


def backlog_metric(queues: list[sqs.Queue]) -> cloudwatch.MathExpression:
    """Queued plus in-flight messages over a partition's queues (one minute, summed)."""
    metrics: dict[str, cloudwatch.IMetric] = {}
    for i, q in enumerate(queues):
        metrics[f"v{i}"] = q.metric_approximate_number_of_messages_visible(
            period=Duration.minutes(1), statistic="Maximum"
        )
        metrics[f"f{i}"] = q.metric_approximate_number_of_messages_not_visible(
            period=Duration.minutes(1), statistic="Maximum"
        )
    return cloudwatch.MathExpression(
        expression=" + ".join(metrics), using_metrics=metrics, label="backlog", period=Duration.minutes(1)
    )


class Workers(Construct):
    """The cluster, and ``services[partition]`` with their task definitions."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        root: Path,
        settings: Settings,
        data: DataResources,
        queues_by_partition: dict[str, list[sqs.Queue]],
        image: str | None,
        ec2_spot: Ec2SpotSpec | None,
        packages: dict[str, tuple[str, ...]] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self._root = root
        self._packages = dict(packages or {})
        if image and self._packages:
            raise ValueError(
                "skyloom:workerImage (a prebuilt image) and skyloom:workerPackages cannot be combined: "
                "install the packages in the prebuilt image, or drop skyloom:workerImage"
            )
        self._images: dict[tuple[str, ...], ecs.ContainerImage] = {}
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=0,
            subnet_configuration=[ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC)],
            gateway_endpoints={
                "DynamoDb": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.DYNAMODB),
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
            },
            flow_logs={"rejected": ec2.FlowLogOptions(
                traffic_type=ec2.FlowLogTrafficType.REJECT,
                destination=ec2.FlowLogDestination.to_cloud_watch_logs(
                    logs.LogGroup(self, "FlowLogs", retention=logs.RetentionDays.TWO_YEARS, encryption_key=data.key)
                ),
            )},
        )
        self.security_group = ec2.SecurityGroup(
            self, "WorkerSg", vpc=self.vpc, description="Skyloom workers: outbound only", allow_all_outbound=True
        )
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=self.vpc,
            enable_fargate_capacity_providers=True,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
            # Fargate encrypts task storage (the scratch volume) with an AWS-owned key by default.
            managed_storage_configuration=(
                ecs.ManagedStorageConfiguration(fargate_ephemeral_storage_kms_key=data.key) if data.key else None
            ),
        )
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=RemovalPolicy.DESTROY,
            encryption_key=data.key,
        )
        # The image: built from the repository root by Docker at deploy time, or a prebuilt one.
        self.image = ecs.ContainerImage.from_registry(image) if image else self._built_image(())
        self.ec2_provider = self._ec2_spot(ec2_spot, data.key) if ec2_spot else None
        ec2_partitions = set(ec2_spot.partitions) if ec2_spot else set()
        self.services: dict[str, ecs.BaseService] = {}
        self.task_definitions: dict[str, ecs.TaskDefinition] = {}
        all_queues = [q for qs in queues_by_partition.values() for q in qs]
        for spec in settings.partitions:
            on_ec2 = spec.name in ec2_partitions
            service = self._service(settings, data, spec, on_ec2)
            task_role = self.task_definitions[spec.name].task_role
            for table in data.tables:
                table.grant_read_write_data(task_role)
            data.bucket.grant_read_write(task_role)
            for queue in queues_by_partition[spec.name]:
                queue.grant_consume_messages(task_role)
            for queue in all_queues:
                queue.grant_send_messages(task_role)
            # The agent asks ECS once, at start, whether its own task runs on FARGATE_SPOT (the task
            # metadata does not say): every attempt record names it (fargate_worker/machine.py).
            task_role.add_to_principal_policy(iam.PolicyStatement(
                actions=["ecs:DescribeTasks"],
                resources=[f"arn:{Aws.PARTITION}:ecs:{Aws.REGION}:{Aws.ACCOUNT_ID}:task/{self.cluster.cluster_name}/*"],
            ))
            scaling = service.auto_scale_task_count(min_capacity=spec.min_workers, max_capacity=spec.max_workers)
            scaling.scale_on_metric(
                "Backlog",
                metric=backlog_metric(queues_by_partition[spec.name]),
                scaling_steps=scaling_steps(spec),
                adjustment_type=appscaling.AdjustmentType.EXACT_CAPACITY,
                cooldown=Duration.seconds(60),
                evaluation_periods=1,
            )
            self.services[spec.name] = service

    def _environment(self, settings: Settings, data: DataResources, spec: PartitionSpec) -> dict[str, str]:
        env = settings.to_env()
        env.update(
            AWS_REGION=Aws.REGION,
            AWS_DEFAULT_REGION=Aws.REGION,
            SKYLOOM_BUCKET=data.bucket.bucket_name,
            SKYLOOM_WORKER_PARTITION=spec.name,
            SKYLOOM_WORKER_GRACE_SECONDS=str(GRACE_SECONDS),
            TMPDIR=SCRATCH_PATH,
            XDG_CACHE_HOME=f"{SCRATCH_PATH}/.cache",
            POWERTOOLS_SERVICE_NAME="skyloom-worker",
            POWERTOOLS_METRICS_NAMESPACE="Skyloom",
            LOG_LEVEL="INFO",
        )
        return env

    def _built_image(self, packages: tuple[str, ...]) -> ecs.ContainerImage:
        """The Dockerfile's image with ``packages`` installed, built once per distinct set."""
        if packages not in self._images:
            self._images[packages] = ecs.ContainerImage.from_asset(
                str(self._root),
                file="fargate_worker/Dockerfile",
                platform=IMAGE_PLATFORM,
                build_args={"PACKAGES": " ".join(packages)} if packages else None,
            )
        return self._images[packages]

    def image_of(self, partition: str) -> ecs.ContainerImage:
        """The image a partition's workers run: its packages' build, else the shared image."""
        packages = self._packages.get(partition)
        return self._built_image(packages) if packages else self.image

    def _add_agent(self, task_def: ecs.TaskDefinition, env: dict[str, str], spec: PartitionSpec, on_ec2: bool) -> None:
        # No host path: on Fargate the volume is the task's (encrypted) ephemeral storage, on EC2 a
        # Docker volume on the instance's encrypted EBS disk. Either way it dies with the task.
        task_def.add_volume(name=SCRATCH_VOLUME)
        container = task_def.add_container(
            "agent",
            image=self.image_of(spec.name),
            environment=env,
            stop_timeout=STOP_TIMEOUT,
            user=WORKER_UID,
            readonly_root_filesystem=True,
            linux_parameters=ecs.LinuxParameters(self, f"{spec.name}-linux", init_process_enabled=True),
            logging=ecs.LogDrivers.aws_logs(stream_prefix=spec.name, log_group=self.log_group),
            # On EC2 the container reserves the partition's size; on Fargate the task does.
            cpu=spec.cpu if on_ec2 else None,
            memory_limit_mib=spec.memory if on_ec2 else None,
        )
        container.add_mount_points(
            ecs.MountPoint(container_path=SCRATCH_PATH, source_volume=SCRATCH_VOLUME, read_only=False)
        )

    def _service(self, settings: Settings, data: DataResources, spec: PartitionSpec, on_ec2: bool) -> ecs.BaseService:
        env = self._environment(settings, data, spec)
        if on_ec2:
            task_def: ecs.TaskDefinition = ecs.Ec2TaskDefinition(
                self, f"{spec.name}-task", network_mode=ecs.NetworkMode.AWS_VPC
            )
            self._add_agent(task_def, env, spec, on_ec2=True)
            self.task_definitions[spec.name] = task_def
            if self.ec2_provider is None:
                raise ValueError("EC2 partitions need the EC2 Spot capacity provider")
            return ecs.Ec2Service(
                self,
                f"{spec.name}-service",
                cluster=self.cluster,
                task_definition=task_def,
                desired_count=spec.min_workers,
                min_healthy_percent=0,
                security_groups=[self.security_group],
                capacity_provider_strategies=[
                    ecs.CapacityProviderStrategy(capacity_provider=self.ec2_provider.capacity_provider_name, weight=1)
                ],
                circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            )
        task_def = ecs.FargateTaskDefinition(
            self,
            f"{spec.name}-task",
            cpu=spec.cpu,
            memory_limit_mib=spec.memory,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.X86_64, operating_system_family=ecs.OperatingSystemFamily.LINUX
            ),
        )
        self._add_agent(task_def, env, spec, on_ec2=False)
        self.task_definitions[spec.name] = task_def
        if spec.spot:
            strategies = [
                ecs.CapacityProviderStrategy(capacity_provider="FARGATE_SPOT", weight=1),
                ecs.CapacityProviderStrategy(capacity_provider="FARGATE", base=spec.min_workers, weight=0),
            ]
        else:
            strategies = [ecs.CapacityProviderStrategy(capacity_provider="FARGATE", weight=1)]
        return ecs.FargateService(
            self,
            f"{spec.name}-service",
            service_name=f"{settings.stack}-{spec.name}",
            cluster=self.cluster,
            task_definition=task_def,
            desired_count=spec.min_workers,
            min_healthy_percent=0,
            max_healthy_percent=200,
            assign_public_ip=True,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            security_groups=[self.security_group],
            capacity_provider_strategies=strategies,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
        )

    def _ec2_spot(self, spec: Ec2SpotSpec, key: kms.IKey | None) -> ecs.AsgCapacityProvider:
        machine = ecs.EcsOptimizedImage.amazon_linux2(
            ecs.AmiHardwareType.GPU if spec.gpu else ecs.AmiHardwareType.STANDARD
        )
        asg = autoscaling.AutoScalingGroup(
            self,
            "SpotAsg",
            vpc=self.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            min_capacity=spec.min_capacity,
            max_capacity=spec.max_capacity,
            mixed_instances_policy=autoscaling.MixedInstancesPolicy(
                instances_distribution=autoscaling.InstancesDistribution(
                    on_demand_percentage_above_base_capacity=0,
                    spot_allocation_strategy=autoscaling.SpotAllocationStrategy.PRICE_CAPACITY_OPTIMIZED,
                ),
                launch_template=ec2.LaunchTemplate(
                    self,
                    "SpotTemplate",
                    machine_image=machine,
                    instance_type=ec2.InstanceType(spec.instance_types[0]),
                    role=iam.Role(self, "SpotInstanceRole", assumed_by=iam.ServicePrincipal("ec2.amazonaws.com")),
                    user_data=ec2.UserData.for_linux(),
                    require_imdsv2=True,
                    security_group=self.security_group,
                    associate_public_ip_address=True,
                    block_devices=[
                        ec2.BlockDevice(
                            device_name="/dev/xvda",
                            volume=ec2.BlockDeviceVolume.ebs(60, encrypted=True),
                        )
                    ],
                ),
                launch_template_overrides=[
                    autoscaling.LaunchTemplateOverrides(instance_type=ec2.InstanceType(t)) for t in spec.instance_types
                ],
            ),
        )
        provider = ecs.AsgCapacityProvider(
            self, "SpotProvider", auto_scaling_group=asg, enable_managed_termination_protection=False
        )
        # The drain hook's SNS topic: unencrypted unless given a key. The AWS-managed SNS key works
        # here because Auto Scaling publishes through an IAM role of this account.
        topic_key = key or kms.Alias.from_alias_name(self, "SnsKey", "alias/aws/sns")
        self.cluster.add_asg_capacity_provider(provider, spot_instance_draining=True, topic_encryption_key=topic_key)
        return provider

