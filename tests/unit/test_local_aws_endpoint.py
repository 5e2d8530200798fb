"""Local mode on an AWS endpoint it does not start (LocalStack): names, and how the endpoint is chosen.

The suite's own LocalStack runs (``make test-localstack``) exercise the whole path; these checks pin
the parts a LocalStack run would only reveal as collisions between stacks.
"""

from __future__ import annotations

import pytest

from skyloom.core.config import Settings
from skyloom.local.stack import AWS_ENDPOINT_ENV, LocalStack, unique_settings


def test_unique_settings_suffix_stack_and_bucket_and_keep_the_rest() -> None:
    base = Settings(stack="skyloom", bucket="skyloom-data", lease_seconds=5)
    s = unique_settings(base, "http://127.0.0.1:4566", token="ab12cd34")
    assert (s.stack, s.bucket, s.aws_endpoint) == ("skyloom-ab12cd34", "skyloom-data-ab12cd34", "http://127.0.0.1:4566")
    assert s.table_name("tasks") == "skyloom-ab12cd34-tasks"
    assert s.lease_seconds == 5


def test_unique_settings_stay_a_valid_stack_name_at_the_length_limit() -> None:
    base = Settings(stack="s" * 40)
    s = unique_settings(base, "http://x")
    assert len(s.stack) == 40 and s.stack.startswith("s" * 31 + "-")


def test_two_starts_get_different_names() -> None:
    base = Settings()
    assert unique_settings(base, "http://x").stack != unique_settings(base, "http://x").stack


def test_the_endpoint_comes_from_the_argument_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AWS_ENDPOINT_ENV, "http://127.0.0.1:4999/")
    assert LocalStack(export_environment=False).aws_endpoint == "http://127.0.0.1:4999"
    assert LocalStack(export_environment=False, aws_endpoint="http://other:1").emulator == "external"
    assert LocalStack(export_environment=False, aws_endpoint="").emulator == "moto"
    monkeypatch.delenv(AWS_ENDPOINT_ENV)
    assert LocalStack(export_environment=False).emulator == "moto"
