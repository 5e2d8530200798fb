"""cdk.json context -> PartitionSpec and friends (pure; no synthesis)."""

from __future__ import annotations

import json

import pytest

from infra.cdk.context import (
    PARTITIONS_KEY,
    WORKER_PACKAGES_KEY,
    ContextError,
    parse_partitions,
    parse_worker_packages,
)
from skyloom.core.resources import PartitionSpec
from tests.infra.conftest import REPO_ROOT


def test_partitions_are_declared_once_in_cdk_json() -> None:
    raw = json.loads((REPO_ROOT / "cdk.json").read_text())["context"][PARTITIONS_KEY]
    specs = parse_partitions(raw)
    assert specs == (
        PartitionSpec("default", priority_levels=3, cpu=1024, memory=2048, min_workers=0, max_workers=10, spot=True),
    )


def test_command_line_json_string_is_accepted() -> None:
    specs = parse_partitions('[{"name": "gpu", "maxWorkers": 2, "spot": false}]')
    assert specs[0].name == "gpu" and specs[0].max_workers == 2 and not specs[0].spot


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "non-empty"),
        ([{"cpu": 1}], "with a name"),
        ([{"name": "a", "gpus": 1}], "unknown keys"),
        ([{"name": "a"}, {"name": "a"}], "duplicate"),
        ([{"name": "a", "minWorkers": 3, "maxWorkers": 2}], "minWorkers"),
        ([{"name": "a"}, {"name": "b", "priorityLevels": 2}], "same priorityLevels"),
    ],
)
def test_malformed_partitions_are_refused_with_the_key_named(raw: object, message: str) -> None:
    with pytest.raises(ContextError, match=message):
        parse_partitions(raw)


def test_partition_access_rules_reach_the_functions_and_workers_environment() -> None:
    from skyloom.core.config import POLICIES_ENV, Settings

    specs = parse_partitions(
        [{"name": "default"},
         {"name": "shared", "allowedIdentities": ["arn:aws:iam::111122223333:role/Quants"],
          "allowedHandlers": ["risk.*"], "installedHandlersOnly": True}]
    )
    assert specs[1].allowed_identities == ("arn:aws:iam::111122223333:role/Quants",)
    assert specs[1].installed_handlers_only and not specs[0].restricted
    env = Settings(partitions=specs).to_env()  # what functions.py and workers.py deploy
    assert json.loads(env[POLICIES_ENV]) == {"shared": {
        "allowed_identities": ["arn:aws:iam::111122223333:role/Quants"],
        "allowed_handlers": ["risk.*"], "installed_handlers_only": True}}
    assert Settings.from_env(env).partitions == specs


@pytest.mark.parametrize(
    ("item", "message"),
    [({"allowedIdentities": "arn:aws:iam::1:user/a"}, "allowed_identities must be a list"),
     ({"allowedHandlers": [""]}, "allowed_handlers must be a list"),
     ({"installedHandlersOnly": "yes"}, "installed_handlers_only must be true or false")],
)
def test_malformed_access_rules_are_refused_with_the_key_named(item: dict[str, object], message: str) -> None:
    with pytest.raises(ContextError, match=f"{PARTITIONS_KEY}.*{message}"):
        parse_partitions([{"name": "p", **item}])


# --------------------------------------------------------------------------------- worker packages
def test_worker_packages_are_exact_pins_per_known_partition() -> None:
    partitions = parse_partitions([{"name": "default"}, {"name": "gpu"}])
    raw = {"default": ["numpy==2.1.3", "scipy[sparse]==1.14.1"], "gpu": []}
    assert parse_worker_packages(raw, partitions) == {"default": ("numpy==2.1.3", "scipy[sparse]==1.14.1")}
    assert parse_worker_packages('{"gpu": ["torch==2.5.1"]}', partitions) == {"gpu": ("torch==2.5.1",)}
    assert parse_worker_packages(None, partitions) == {}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (["numpy==2.1.3"], "must be an object"),
        ({"nope": ["numpy==2.1.3"]}, "unknown partition 'nope'"),
        ({"default": "numpy==2.1.3"}, r"workerPackages\.default must be a list"),
        ({"default": ["numpy>=2"]}, "exact pins"),
        ({"default": ["numpy==2; rm -rf /"]}, "exact pins"),
    ],
)
def test_malformed_worker_packages_are_refused_naming_the_key(raw: object, message: str) -> None:
    with pytest.raises(ContextError, match=message) as caught:
        parse_worker_packages(raw, parse_partitions([{"name": "default"}]))
    assert WORKER_PACKAGES_KEY in str(caught.value)


def test_prices_and_metrics_retention_reach_the_settings() -> None:
    from aws_cdk import App

    from infra.cdk.context import METRICS_RETENTION_KEY, PRICES_KEY, read
    from skyloom.core.cost import Prices

    app = App(context={PRICES_KEY: {"fargateSpotVcpuHour": 0.02, "partitions": {"default": {"gbHour": 0.001}}},
                       METRICS_RETENTION_KEY: 30})
    settings = read(app.node).settings
    prices = Prices.parse(settings.prices)
    assert prices.fargate_spot_vcpu_hour == 0.02 and prices.partitions["default"].gb_hour == 0.001
    assert settings.to_env()["SKYLOOM_PRICES"] and settings.metrics_retention_days == 30
    with pytest.raises(ContextError, match=f"{PRICES_KEY}: lambdaGbSeconds"):
        read(App(context={PRICES_KEY: '{"lambdaGbSeconds": 1}'}).node)
