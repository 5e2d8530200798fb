"""Describe the machine this agent runs on, once, when it starts (see :mod:`skyloom.core.machine`).

On ECS, the task metadata endpoint v4 (``ECS_CONTAINER_METADATA_URI_V4``, served by the ECS agent on
a link-local address, no AWS request) gives the container's image, the task's CPU and memory limits,
its availability zone and launch type. On EC2 the instance metadata service (IMDSv2) gives the
instance type and whether it is Spot. On Fargate neither says whether the task runs on FARGATE_SPOT:
one ``ecs:DescribeTasks`` of this very task, at start, does (``capacityProviderName``); a refusal
leaves ``unknown``. Locally, the location fields are ``local``.

The CPU model and the memory come from ``/proc`` rather than a library: psutil is not a dependency
of the worker image, and two files of the Linux kernel say all that is needed.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from skyloom.core.machine import LOCAL, UNKNOWN, Machine
from skyloom_server.fargate_worker.telemetry import logger

METADATA_ENV = "ECS_CONTAINER_METADATA_URI_V4"
#: The instance metadata service (IMDSv2: a session token first, then reads with it).
IMDS_URL = "http://169.254.169.254/latest"
#: Link-local endpoints answer in milliseconds or not at all: do not hold up the agent's start.
HTTP_TIMEOUT_SECONDS = 1.0
CPUINFO = "/proc/cpuinfo"
MEMINFO = "/proc/meminfo"

#: capacity provider name -> capacity.
_CAPACITY = {"FARGATE_SPOT": "spot", "FARGATE": "on-demand"}

Fetch = Callable[[str, Mapping[str, str], str], str | None]


def _http(url: str, headers: Mapping[str, str], method: str = "GET") -> str | None:
    """The body of a link-local HTTP answer, None if it does not answer (not on ECS or EC2)."""
    req = urllib.request.Request(url, headers=dict(headers), method=method)
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_SECONDS) as resp:
            return str(resp.read().decode("utf-8", "replace"))
    except (OSError, ValueError):
        return None


def cpu_model(path: str = CPUINFO) -> str:
    """The first ``model name`` of /proc/cpuinfo (x86), else its ``Model``/``CPU part`` (arm)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return UNKNOWN
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and value.strip():
            found.setdefault(key.strip(), " ".join(value.split()))
    return found.get("model name") or found.get("Model") or found.get("CPU part") or UNKNOWN


def memory_mb(path: str = MEMINFO) -> int:
    """MemTotal of /proc/meminfo in MiB (0 if unreadable)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def _json(text: str | None) -> dict[str, Any]:
    try:
        found = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return found if isinstance(found, dict) else {}


def _imds(fetch: Fetch) -> dict[str, str]:
    """Instance type, availability zone and life cycle from IMDSv2; empty where it does not answer."""
    token = fetch(f"{IMDS_URL}/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"}, "PUT")
    if not token:
        return {}
    found: dict[str, str] = {}
    for key, path in (("instance_type", "instance-type"), ("availability_zone", "placement/availability-zone"),
                      ("life_cycle", "instance-life-cycle")):
        value = fetch(f"{IMDS_URL}/meta-data/{path}", {"X-aws-ec2-metadata-token": token}, "GET")
        if value:
            found[key] = value.strip()
    return found


def fargate_size(vcpus: float, memory: int) -> str:
    """``fargate-1vcpu-2gb``: a Fargate task's size as its limits say it."""
    return f"fargate-{vcpus:g}vcpu-{memory / 1024:g}gb"


def describe(
    env: Mapping[str, str] | None = None,
    *,
    fetch: Fetch = _http,
    capacity_provider: Callable[[str, str], str | None] | None = None,
    cpuinfo: str = CPUINFO,
    meminfo: str = MEMINFO,
) -> Machine:
    """This process's machine. Never raises: what cannot be learnt is ``unknown``.

    Args:
        env: the environment (``os.environ``).
        fetch: reads a link-local URL (tests pass a fake).
        capacity_provider: ``(cluster, task_arn) -> capacityProviderName`` (one ecs:DescribeTasks);
            used on Fargate only, where the metadata does not say it.
    """
    e = os.environ if env is None else env
    cpu, vcpus, memory = cpu_model(cpuinfo), float(os.cpu_count() or 1), memory_mb(meminfo)
    base = e.get(METADATA_ENV, "").strip()
    if not base:
        return Machine(instance_type=LOCAL, cpu_model=cpu, vcpus=vcpus, memory_mb=memory,
                       availability_zone=LOCAL, capacity=LOCAL, image=e.get("SKYLOOM_WORKER_IMAGE", LOCAL))
    container = _json(fetch(base, {}, "GET"))
    task = _json(fetch(f"{base}/task", {}, "GET"))
    limits = task.get("Limits") or {}
    if isinstance(limits.get("CPU"), int | float) and limits["CPU"] > 0:
        vcpus = float(limits["CPU"])
    if isinstance(limits.get("Memory"), int | float) and limits["Memory"] > 0:
        memory = int(limits["Memory"])
    launch = str(task.get("LaunchType") or UNKNOWN).upper()
    zone = str(task.get("AvailabilityZone") or UNKNOWN)
    capacity = _CAPACITY.get(str(task.get("CapacityProviderName") or ""), UNKNOWN)
    instance = UNKNOWN
    if launch == "EC2":
        ec2 = _imds(fetch)
        instance = ec2.get("instance_type", UNKNOWN)
        zone = ec2.get("availability_zone", zone)
        capacity = {"spot": "spot", "on-demand": "on-demand"}.get(ec2.get("life_cycle", ""), capacity)
    elif launch == "FARGATE":
        instance = fargate_size(vcpus, memory)
        if capacity == UNKNOWN and capacity_provider is not None and task.get("Cluster") and task.get("TaskARN"):
            try:
                capacity = _CAPACITY.get(capacity_provider(str(task["Cluster"]), str(task["TaskARN"])) or "", UNKNOWN)
            except Exception:  # a missing permission must not stop the agent: the field stays unknown
                logger.exception("could not ask ECS which capacity provider runs this worker")
    return Machine(instance_type=instance, cpu_model=cpu, vcpus=vcpus, memory_mb=memory, availability_zone=zone,
                   capacity=capacity, image=str(container.get("Image") or e.get("SKYLOOM_WORKER_IMAGE") or UNKNOWN),
                   launch_type=launch)


def ecs_capacity_provider(ecs: Callable[[], Any]) -> Callable[[str, str], str | None]:
    """``describe``'s ``capacity_provider``: one DescribeTasks of this task, through the ECS client
    that ``ecs()`` makes (only then: a local worker never builds one)."""

    def ask(cluster: str, task_arn: str) -> str | None:
        found = ecs().describe_tasks(cluster=cluster, tasks=[task_arn]).get("tasks") or []
        return (str(found[0].get("capacityProviderName") or "") or None) if found else None

    return ask
