"""Task options: how and where a task runs. Session defaults, task values override."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class TaskOptions(BaseModel):
    """Options of a task; ``None`` means "inherit" (task over session over global defaults).

    Example:
        >>> TaskOptions(max_retries=1).merged_over(TaskOptions(priority=2, max_retries=5))
        TaskOptions(partition=None, priority=2, max_retries=1, max_duration=None, ...)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    partition: str | None = Field(default=None, min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9-]*$")
    priority: int | None = Field(default=None, ge=0, le=9, description="Higher runs first.")
    max_retries: int | None = Field(default=None, ge=0, le=100)
    max_duration: float | None = Field(default=None, gt=0, le=7 * 24 * 3600, description="Seconds.")
    application_name: str | None = Field(default=None, max_length=128)
    application_version: str | None = Field(default=None, max_length=64)
    extra: dict[str, str] = Field(default_factory=dict, max_length=64)

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
