"""The pynamodb models and the single resource definition must describe the same tables."""

from __future__ import annotations

import pytest
from pynamodb.models import Model

from skyloom.core.models import EdgeModel, MeasurementModel, ResultModel, SessionModel, TaskModel
from skyloom.core.resources import EDGES, MEASUREMENTS, RESULTS, SESSIONS, TASKS, TableSpec


@pytest.mark.parametrize(("model", "spec"), [(SessionModel, SESSIONS), (TaskModel, TASKS),
                                             (ResultModel, RESULTS), (EdgeModel, EDGES),
                                             (MeasurementModel, MEASUREMENTS)])
def test_keys_and_indexes_agree(model: type[Model], spec: TableSpec) -> None:
    attrs = model.get_attributes()
    hash_key = next(n for n, a in attrs.items() if a.is_hash_key)
    range_key = next((n for n, a in attrs.items() if a.is_range_key), None)
    assert hash_key == spec.hash_key.name
    assert range_key == (spec.range_key.name if spec.range_key else None)
    model_indexes = {ix.Meta.index_name: ix for ix in model._indexes.values()}
    assert set(model_indexes) == {ix.name for ix in spec.indexes}
    for ix in spec.indexes:
        schema = model_indexes[ix.name]._get_schema()
        keys = {k["AttributeName"]: k["KeyType"] for k in schema["key_schema"]}
        expected = {ix.hash_key.name: "HASH", **({ix.range_key.name: "RANGE"} if ix.range_key else {})}
        assert keys == expected
    for key in spec.attribute_definitions():
        assert key.name in attrs, f"{model.__name__} lacks key attribute {key.name}"
        assert attrs[key.name].attr_type == key.type
