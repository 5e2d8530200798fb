"""Items built, serialized and read by a plan are exactly what pynamodb's own walk makes of them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pynamodb.attributes import (
    Attribute,
    AttributeContainer,
    BinaryAttribute,
    BooleanAttribute,
    JSONAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
)
from pynamodb.exceptions import AttributeDeserializationError, AttributeNullError

from skyloom.core import models, readiness
from skyloom.core.dispatching import TaskMessage
from skyloom.core.item_model import ItemModel

MODELS = [models.SessionModel, models.TaskModel, models.ResultModel, models.EdgeModel,
          models.WorkerEnvironmentModel, models.CheckpointModel, models.MeasurementModel]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


def value_of(attr: Attribute[Any]) -> st.SearchStrategy[Any]:
    """Values a user may give the attribute, None included where the attribute allows it."""
    if isinstance(attr, UnicodeSetAttribute):
        kind: st.SearchStrategy[Any] = st.sets(st.text(min_size=1, max_size=5), max_size=3)
    elif isinstance(attr, UnicodeAttribute):
        kind = st.text(max_size=10)
    elif isinstance(attr, NumberAttribute):
        kind = st.integers(-10**9, 10**9) | st.floats(allow_nan=False, allow_infinity=False, width=32)
    elif isinstance(attr, BinaryAttribute):
        kind = st.binary(max_size=10)
    elif isinstance(attr, BooleanAttribute):
        kind = st.booleans()
    elif isinstance(attr, JSONAttribute):
        kind = json_values
    elif isinstance(attr, ListAttribute):
        kind = st.lists(st.text(max_size=5), max_size=3)
    else:
        raise AssertionError(f"no strategy for {type(attr).__name__}")
    return st.none() | kind if attr.null else kind


@st.composite
def instances(draw: st.DrawFn) -> tuple[type[ItemModel], dict[str, Any]]:
    model = draw(st.sampled_from(MODELS))
    attributes = model.get_attributes()
    chosen = draw(st.lists(st.sampled_from(sorted(attributes)), unique=True))
    return model, {name: draw(value_of(attributes[name])) for name in chosen}


def walked(model: type[ItemModel], kwargs: dict[str, Any], *, new: bool = True) -> AttributeContainer:
    """An instance built by pynamodb's own walk (the plan bypassed)."""
    inst = model.__new__(model)
    inst.attribute_values = {}
    AttributeContainer._set_defaults(inst, _user_instantiated=new)
    AttributeContainer._set_attributes(inst, **kwargs)
    return inst


def outcome(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except (AttributeNullError, ValueError, TypeError) as exc:
        return type(exc), str(exc)


@settings(max_examples=300, deadline=None)
@given(instances(), st.booleans())
def test_items_are_built_and_serialized_as_pynamodb_does(case: tuple[type[ItemModel], dict[str, Any]],
                                                          null_check: bool) -> None:
    model, kwargs = case
    planned = model(**kwargs)
    reference = walked(model, kwargs)
    assert planned.attribute_values == reference.attribute_values
    assert outcome(planned.serialize, null_check=null_check) == outcome(
        AttributeContainer._container_serialize, reference, null_check=null_check)


@settings(max_examples=300, deadline=None)
@given(instances())
def test_items_are_read_as_pynamodb_reads_them(case: tuple[type[ItemModel], dict[str, Any]]) -> None:
    model, kwargs = case
    item = AttributeContainer._container_serialize(walked(model, kwargs), null_check=False)
    item["unknown"] = {"S": "kept out"}
    reference = model.__new__(model)
    AttributeContainer._container_deserialize(reference, item)
    assert model.from_raw_data(item).attribute_values == reference.attribute_values


def test_a_null_or_empty_value_reads_as_pynamodb_reads_it() -> None:
    item = {"task_id": {"S": "t"}, "label": {"NULL": True}, "error": {}, "priority": {"N": "3"}}
    reference = models.TaskModel.__new__(models.TaskModel)
    AttributeContainer._container_deserialize(reference, item)
    assert models.TaskModel.from_raw_data(item).attribute_values == reference.attribute_values


def test_a_value_of_the_wrong_type_is_refused_naming_the_attribute() -> None:
    with pytest.raises(AttributeDeserializationError, match="priority"):
        models.TaskModel.from_raw_data({"task_id": {"S": "t"}, "priority": {"S": "3"}})


def test_an_unknown_attribute_is_refused_as_pynamodb_refuses_it() -> None:
    with pytest.raises(ValueError, match="Attribute nope specified does not exist"):
        models.TaskModel("t", nope=1)


def test_a_class_the_plan_does_not_cover_keeps_pynamodb_walk() -> None:
    class Inner(MapAttribute[str, Any]):
        x = NumberAttribute()

    class WithMap(ItemModel):
        class Meta:
            table_name = "t"

        key = UnicodeAttribute(hash_key=True)
        inner = Inner(null=True)
        renamed = UnicodeAttribute(attr_name="stored", null=True)

    item = WithMap("k", inner=Inner(x=2), renamed="v")
    assert item.serialize() == {"key": {"S": "k"}, "inner": {"M": {"x": {"N": "2"}}}, "stored": {"S": "v"}}
    read = WithMap.from_raw_data(item.serialize())
    assert read.inner.x == 2 and read.renamed == "v"


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.integers(), st.floats(), st.booleans(), st.decimals(allow_nan=False, allow_infinity=False)))
def test_numbers_are_written_as_pynamodb_writes_them(value: Any) -> None:
    assert outcome(models.Number().serialize, value) == outcome(NumberAttribute().serialize, value)


@settings(max_examples=300, deadline=None)
@given(instances(), st.text(min_size=1, max_size=8))
def test_a_new_item_put_is_the_one_pynamodb_would_add(case: tuple[type[ItemModel], dict[str, Any]],
                                                      key: str) -> None:
    from pynamodb.connection import Connection
    from pynamodb.transactions import TransactWrite

    from skyloom.core.ddb import put_new

    model, kwargs = case
    item = model(**{**kwargs, model._hash_keyname: key})
    hash_key = getattr(model, model._hash_keyname)
    ours, theirs = (TransactWrite(connection=Connection(region="us-east-1", host="http://127.0.0.1:9"))
                    for _ in range(2))
    assert outcome(put_new(item), ours) == outcome(theirs.save, item, condition=hash_key.does_not_exist())
    assert ours._put_items == theirs._put_items


@st.composite
def task_items(draw: st.DrawFn) -> models.TaskModel:
    attributes = models.TaskModel.get_attributes()
    chosen = draw(st.lists(st.sampled_from(sorted(set(attributes) - {"task_id"})), unique=True))
    values = {name: draw(value_of(attributes[name])) for name in chosen}
    return models.TaskModel(task_id=draw(st.text(min_size=1, max_size=8)), **values)


@settings(max_examples=300, deadline=None)
@given(task_items())
def test_a_task_item_carried_by_its_message_reads_as_written(task: models.TaskModel) -> None:
    # The item a submitted task's message carries is the one its worker takes instead of reading it.
    message = readiness.message_for(task, whole=True)
    carried = readiness.item_task(TaskMessage.parse(message.body()))
    if message.item is None:  # too large to carry: the worker reads it
        return
    read = models.TaskModel.from_raw_data(task.serialize(null_check=False))  # what reading the item gives
    assert carried is not None
    assert carried.serialize(null_check=False) == read.serialize(null_check=False)


def test_a_message_without_a_readable_item_leaves_the_task_to_be_read() -> None:
    plain = TaskMessage("t1", "s1", "default", 0)
    assert TaskMessage.parse(plain.body()) == plain and readiness.item_task(plain) is None
    for item in ({"task_id": {"S": "t2"}}, {"payload": {"B": "not base64!"}}, {"task_id": {"Q": "t1"}}):
        assert readiness.item_task(TaskMessage("t1", "s1", "default", 0, item)) is None


def test_an_item_too_large_for_a_batch_of_messages_is_left_to_be_read() -> None:
    # Ten messages of a batch must stay within SQS's 256 KiB: a large payload, or a long list of
    # result ids, leaves the item out (the worker reads it), whatever the estimate of its parts.
    base = {"session_id": "s1", "owner": "o", "status": "Submitted", "handler": "h", "partition": "default",
            "created_at": 1.0, "updated_at": 1.0}
    small = models.TaskModel(task_id="t1", payload=b"x" * 100, payload_size=100, **base)
    carried = readiness.message_for(small, whole=True)
    assert carried.item is not None and len(carried.body()) <= readiness.ITEM_IN_MESSAGE_BYTES + 1024
    big_payload = models.TaskModel(task_id="t2", payload=b"x" * 20_000, payload_size=20_000, **base)
    many_ids = models.TaskModel(task_id="t3", data_dependencies=[f"r{i:031d}" for i in range(1000)], **base)
    for task in (big_payload, many_ids):
        message = readiness.message_for(task, whole=True)
        assert message.item is None and len(message.body()) < 1024
