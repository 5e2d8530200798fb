"""The machine an attempt ran on, as its attempt record keeps it.

The same computation can take twice as long on an older CPU generation: durations compared across
a fleet that mixes instance types, Fargate sizes and Spot or on-demand capacity are skewed unless
each attempt says where it ran. The worker agent describes its machine once when it starts
(:mod:`fargate_worker.machine`) and every attempt record it writes carries that description; no AWS
call is made per task. ``skyloom tasks show`` prints it and ``skyloom stats`` groups durations by it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

#: The value of the location fields (availability zone, capacity) on a laptop's local stack.
LOCAL = "local"
#: A field the worker could not learn (a metadata endpoint that did not answer).
UNKNOWN = "unknown"


class Machine(BaseModel):
    """Where an attempt ran. Frozen (hashable): the worker keeps one in its settings.

    Example:
        >>> Machine(instance_type="fargate-1vcpu-2gb", cpu_model="Intel Xeon", vcpus=1, memory_mb=2048,
        ...         availability_zone="eu-west-1a", capacity="spot", image="…/skyloom:1").label()
        'fargate-1vcpu-2gb / Intel Xeon'
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    instance_type: str = Field(description="EC2 instance type, `fargate-<vcpu>vcpu-<gb>gb`, or `local`")
    cpu_model: str = Field(description="The CPU's model name as the kernel reports it")
    vcpus: float = Field(description="vCPUs the worker may use (the task's limit on ECS)")
    memory_mb: int = Field(description="Memory the worker may use, in MiB (the task's limit on ECS)")
    availability_zone: str = Field(description="AWS availability zone, or `local`")
    capacity: str = Field(description="`spot`, `on-demand`, `local` or `unknown`")
    image: str = Field(description="The worker's container image, or `local`")
    launch_type: str = Field(default=LOCAL, description="`FARGATE`, `EC2` or `local`")

    def label(self) -> str:
        """What ``skyloom stats`` groups durations by: the instance type and the CPU model."""
        return f"{self.instance_type} / {self.cpu_model}"

    def summary(self) -> str:
        """One line for ``skyloom tasks show``."""
        return (f"{self.instance_type}, {self.cpu_model}, {self.vcpus:g} vCPU, {self.memory_mb} MiB, "
                f"{self.availability_zone}, {self.capacity}, image {self.image}")
