"""The emulator's conversion of items into answers (``moto_items.to_wire``) makes exactly what moto's
``dynamo_to_dict`` makes, whatever the values (EMULATORS.md, patch 13). Importing ``moto_items``
patches nothing: ``install`` does, in the emulator's process only."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
from moto.dynamodb.models.utilities import dynamo_to_dict

from skyloom.local.moto_items import to_wire

texts = st.text(max_size=6)
scalars = st.one_of(
    texts.map(lambda s: {"S": s}),
    st.integers(-10**6, 10**6).map(lambda n: {"N": str(n)}),
    st.binary(max_size=6).map(lambda b: {"B": base64.b64encode(b).decode()}),
    st.binary(max_size=6).map(lambda b: {"B": b}),
    st.booleans().map(lambda b: {"BOOL": b}),
    st.just({"NULL": True}),
    st.lists(texts, min_size=1, max_size=3, unique=True).map(lambda v: {"SS": v}),
    st.lists(st.integers(0, 99).map(str), min_size=1, max_size=3, unique=True).map(lambda v: {"NS": v}),
    st.lists(st.binary(min_size=1, max_size=4), min_size=1, max_size=3, unique=True).map(
        lambda v: {"BS": [base64.b64encode(b).decode() for b in v]}),
)
wire_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3).map(lambda v: {"L": v})
    | st.dictionaries(texts, inner, max_size=3).map(lambda v: {"M": v}),
    max_leaves=10,
)
items = st.dictionaries(texts, wire_values, max_size=5).map(
    lambda attrs: Item(DynamoType({"S": "key"}), None, {"k": {"S": "key"}, **attrs}))


def answers() -> st.SearchStrategy[Any]:
    """What a handler hands moto's conversion: answers of plain values, items and their attributes."""
    leaf = st.one_of(
        wire_values.map(DynamoType), items, items.map(lambda i: i.attrs),  # attrs: a dict subclass
        items.map(lambda i: i.describe_attrs(None)), texts, st.integers(), st.floats(allow_nan=False),
        st.booleans(), st.none(), st.just(datetime(2026, 12, 7, tzinfo=UTC)),
    )
    return st.recursive(leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
                        max_leaves=8)


@settings(max_examples=400, deadline=None)
@given(answers())
def test_answers_are_converted_as_moto_converts_them(answer: Any) -> None:
    assert to_wire(answer) == dynamo_to_dict(answer)


def test_a_batch_of_items_is_converted_as_moto_converts_it() -> None:
    attrs = {"k": {"S": "t"}, "payload": {"B": base64.b64encode(b"\x00x").decode()}, "n": {"N": "1.5"},
             "opts": {"M": {"a": {"L": [{"S": "x"}, {"NULL": True}]}}}, "tags": {"SS": ["a"]}}
    batch = {"Responses": {"t": [Item(DynamoType({"S": f"t{i}"}), None, attrs).describe_attrs(None)["Item"]
                                 for i in range(3)]},
             "ConsumedCapacity": [{"CapacityUnits": 3, "TableName": "t"}], "UnprocessedKeys": {},
             "Attributes": LimitedSizeDict()}
    assert to_wire(batch) == dynamo_to_dict(batch)
    assert to_wire(batch)["Responses"]["t"][0]["payload"] == {"B": b"\x00x"}
