"""Task options: how and where a task runs. Session defaults, task values override."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, TypedDict

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from skyloom.core import limits
from skyloom.core.validation import invalid_request
from skyloom.errors import InvalidArgument

#: Partition names are part of SQS queue names: lower case, digits and dashes.
PARTITION_PATTERN = r"^[a-z][a-z0-9-]*$"
#: A measurement's business key (a trade id) and name (``skyloom.metrics``): no ``#``, which the
#: store uses to join them, and no space or slash, which would not survive a URL path whole.
METRIC_KEY_PATTERN = r"^[A-Za-z0-9_.:@=+-]+$"
METRIC_NAME_PATTERN = r"^[A-Za-z0-9_.:-]+$"
MetricKey = Annotated[
    str, StringConstraints(min_length=1, max_length=limits.METRIC_KEY_LENGTH.value, pattern=METRIC_KEY_PATTERN)
]
MetricName = Annotated[
    str, StringConstraints(min_length=1, max_length=limits.METRIC_NAME_LENGTH.value, pattern=METRIC_NAME_PATTERN)
]
ExtraKey = Annotated[str, StringConstraints(min_length=1, max_length=limits.OPTION_KEY_LENGTH.value)]
ExtraValue = Annotated[str, StringConstraints(max_length=limits.OPTION_VALUE_LENGTH.value)]


_METRIC = re.compile(METRIC_KEY_PATTERN), re.compile(METRIC_NAME_PATTERN)


def check_metric(key: str, name: str) -> None:
    """Refuse a measurement's key or name that the store cannot keep, naming which.

    Raises:
        InvalidArgument: ``key`` or ``name`` is not a string of the allowed characters and length.
    """
    _check("key", key, _METRIC[0], limits.METRIC_KEY_LENGTH)
    _check("name", name, _METRIC[1], limits.METRIC_NAME_LENGTH)


def check_metric_key(key: str) -> None:
    """Refuse a business key that the store cannot keep (see :func:`check_metric`)."""
    _check("key", key, _METRIC[0], limits.METRIC_KEY_LENGTH)


def _check(field_name: str, value: object, pattern: re.Pattern[str], limit: limits.Limit) -> None:
    if not isinstance(value, str) or not pattern.match(value) or len(value) > limit.value:
        raise InvalidArgument(
            f"measurement {field_name} {value!r} must be 1 to {limit.value} characters matching {pattern.pattern}",
            field=field_name,
        )


class TaskOptionsArgs(TypedDict, total=False):
    """The task options as keyword arguments, for ``**options: Unpack[TaskOptionsArgs]``.

    One list for ``@skyloom.task(...)``, ``fn.options(...)`` and ``client.session(...)``, so they
    cannot drift apart while editors and type checkers still see each keyword with its type.

    Keys:
        partition: worker pool to run on (session default otherwise).
        priority: 0-9, higher runs first.
        max_retries: attempts after the first failure before the task fails for good.
        max_duration: seconds an attempt may run before it is stopped and counts as a failure.
        application_name: free label, shown by the CLI.
        application_version: free label, shown by the CLI.
        extra: free key-value options.
        metrics: (business key, name) pairs whose last recorded values the task reads at start with
            ``skyloom.metrics.latest(key, name)`` (the worker fetches them with its inputs).
    """

    partition: str | None
    priority: int | None
    max_retries: int | None
    max_duration: float | None
    application_name: str | None
    application_version: str | None
    extra: Mapping[str, str] | None
    metrics: Sequence[tuple[str, str]] | None


class TaskOptions(BaseModel):
    """Options of a task; ``None`` means "inherit" (task over session over global defaults).

    Example:
        >>> TaskOptions(max_retries=1).merged_over(TaskOptions(priority=2, max_retries=5))
        TaskOptions(partition=None, priority=2, max_retries=1, max_duration=None, ...)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Bounds and their reasons: skyloom.core.limits (docs/limits.md).
    partition: str | None = Field(
        default=None, min_length=1, max_length=limits.PARTITION_NAME_LENGTH.value, pattern=PARTITION_PATTERN
    )
    # Numbers are strict: a JSON true is not a priority of 1.
    priority: int | None = Field(
        default=None, ge=limits.PRIORITY.minimum, le=limits.PRIORITY.value, strict=True,
        description="Higher runs first.",
    )
    max_retries: int | None = Field(
        default=None, ge=limits.MAX_RETRIES.minimum, le=limits.MAX_RETRIES.value, strict=True
    )
    max_duration: float | None = Field(
        default=None, gt=0, le=limits.MAX_DURATION.value, strict=True, description="Seconds."
    )
    application_name: str | None = Field(default=None, max_length=limits.APPLICATION_NAME_LENGTH.value)
    application_version: str | None = Field(default=None, max_length=limits.APPLICATION_VERSION_LENGTH.value)
    extra: dict[ExtraKey, ExtraValue] = Field(default_factory=dict, max_length=limits.OPTION_EXTRAS.value)
    metrics: tuple[tuple[MetricKey, MetricName], ...] | None = Field(
        default=None, max_length=limits.METRICS_PER_TASK.value,
        description="(key, name) pairs whose last recorded values the task reads at start (skyloom.metrics.latest).",
    )

    def __init__(self, **data: Any) -> None:
        """Built directly (SDK code, ``fn.options(...)``), bad options raise
        :class:`~skyloom.errors.InvalidArgument` (an InvalidRequest and a ValueError) naming the
        option, as the API would answer."""
        try:
            super().__init__(**data)
        except ValidationError as exc:
            errors = exc.errors(include_input=False, include_url=False)
            raise invalid_request(errors, cls=InvalidArgument) from None

    # Direct construction only: see ``skyloom.core.protocol._Request`` (nested validation keeps paths).
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def of(cls, args: TaskOptionsArgs) -> TaskOptions:
        """Options from keyword arguments; an unknown keyword is a TypeError, as in a signature."""
        unknown = sorted(set(args) - set(TaskOptionsArgs.__annotations__))
        if unknown:
            raise TypeError(f"unknown task option(s) {', '.join(unknown)}; "
                            f"known: {', '.join(TaskOptionsArgs.__annotations__)}")
        extra = dict(args.get("extra") or {})
        if args.get("metrics") is not None:
            return cls(**{**args, "extra": extra, "metrics": tuple(tuple(p) for p in args["metrics"] or ())})
        return cls(**{**args, "extra": extra})

    def merged_over(self, base: TaskOptions) -> TaskOptions:
        """These options with every unset field taken from ``base``; ``extra`` is merged."""
        mine = self.model_dump(exclude_none=True, exclude={"extra"})
        merged: dict[str, Any] = {**base.model_dump(exclude_none=True, exclude={"extra"}), **mine}
        merged["extra"] = {**base.extra, **self.extra}
        return TaskOptions(**merged)

    def compact(self) -> dict[str, Any]:
        """Only the fields that are set, for storage and the wire."""
        out = self.model_dump(exclude_none=True)
        if not out.get("extra"):
            out.pop("extra", None)
        return out
