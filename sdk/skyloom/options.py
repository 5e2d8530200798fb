"""Task options: how and where a task runs. Session defaults, task values override."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypedDict

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from skyloom.core import limits
from skyloom.core.validation import invalid_request
from skyloom.errors import InvalidArgument

#: Partition names are part of SQS queue names: lower case, digits and dashes.
PARTITION_PATTERN = r"^[a-z][a-z0-9-]*$"
ExtraKey = Annotated[str, StringConstraints(min_length=1, max_length=limits.OPTION_KEY_LENGTH.value)]
ExtraValue = Annotated[str, StringConstraints(max_length=limits.OPTION_VALUE_LENGTH.value)]


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
    """

    partition: str | None
    priority: int | None
    max_retries: int | None
    max_duration: float | None
    application_name: str | None
    application_version: str | None
    extra: Mapping[str, str] | None


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
    priority: int | None = Field(
        default=None, ge=limits.PRIORITY.minimum, le=limits.PRIORITY.value, description="Higher runs first."
    )
    max_retries: int | None = Field(default=None, ge=limits.MAX_RETRIES.minimum, le=limits.MAX_RETRIES.value)
    max_duration: float | None = Field(default=None, gt=0, le=limits.MAX_DURATION.value, description="Seconds.")
    application_name: str | None = Field(default=None, max_length=limits.APPLICATION_NAME_LENGTH.value)
    application_version: str | None = Field(default=None, max_length=limits.APPLICATION_VERSION_LENGTH.value)
    extra: dict[ExtraKey, ExtraValue] = Field(default_factory=dict, max_length=limits.OPTION_EXTRAS.value)

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
        return cls(**{**args, "extra": dict(args.get("extra") or {})})

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
