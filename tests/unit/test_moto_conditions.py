"""A kept condition bound to a request's values (``moto_conditions._bound``: only the nodes on the
way to a value are copied) decides every item as a deep copy of the whole tree would, as moto's own
parse would. Importing the module patches nothing: ``install`` does, in the emulator only."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from moto.dynamodb.comparisons import AttributeValue, ConditionExpressionParser
from moto.dynamodb.models.dynamo_type import DynamoType, Item

from skyloom.local import moto_conditions

NAMES = {"#s": "status", "#o": "owner", "#n": "n", "#l": "l"}
EXPRESSIONS = [
    "#s IN (:a, :b) AND #o = :o AND attribute_exists(#n)",
    "(attribute_not_exists(#o) OR #o = :o) AND NOT (#n BETWEEN :lo AND :hi)",
    "size(#l) > :k AND contains(#l, :a) OR begins_with(#o, :b)",
    "#n <> :lo AND (#s = :a OR #s = :b) AND attribute_type(#o, :t)",
]
words = st.sampled_from(["a", "b", "ab", "Queued", "Processing"])
numbers = st.integers(0, 9).map(str)


@st.composite
def values(draw: st.DrawFn) -> dict[str, dict[str, str]]:
    return {":a": {"S": draw(words)}, ":b": {"S": draw(words)}, ":o": {"S": draw(words)},
            ":lo": {"N": draw(numbers)}, ":hi": {"N": draw(numbers)}, ":k": {"N": draw(numbers)},
            ":t": {"S": draw(st.sampled_from(["S", "N"]))}}


@st.composite
def items(draw: st.DrawFn) -> Item:
    attrs: dict[str, Any] = {"k": {"S": "key"}}
    if draw(st.booleans()):
        attrs["status"] = {"S": draw(words)}
    if draw(st.booleans()):
        attrs["owner"] = draw(st.sampled_from([{"S": "a"}, {"S": "ab"}, {"N": "1"}]))
    if draw(st.booleans()):
        attrs["n"] = {"N": draw(numbers)}
    if draw(st.booleans()):
        attrs["l"] = {"SS": draw(st.lists(words, min_size=1, max_size=3, unique=True))}
    return Item(DynamoType({"S": "key"}), None, attrs)


def decide(tree: Any, item: Item) -> Any:
    try:
        return tree.expr(item)
    except Exception as exc:  # what moto raises for a comparison it refuses
        return type(exc).__name__


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(EXPRESSIONS), values(), st.lists(items(), min_size=1, max_size=4))
def test_a_bound_condition_decides_as_a_deep_copy_and_as_moto_would(expression: str, vals: dict[str, Any],
                                                                      cases: list[Item]) -> None:
    parser = moto_conditions._KeptParser(expression, NAMES, vals)
    bound = parser.parse()
    kept = next(k for key, k in moto_conditions._parsed.items() if key[0] == expression)
    assert kept.holders is not None  # moto's trees have no cycles
    whole = copy.deepcopy(kept.tree, {id(node): AttributeValue(vals[name]) for node, name in kept.slots})
    fresh = ConditionExpressionParser(expression, NAMES, vals).parse()
    for item in cases:
        assert decide(bound, item) == decide(whole, item) == decide(fresh, item)


def test_a_kept_tree_is_shared_where_no_value_stands_and_never_changed() -> None:
    vals = {":a": {"S": "a"}, ":b": {"S": "b"}, ":o": {"S": "x"}}
    expression = "#s IN (:a, :b) AND #o = :o AND attribute_exists(#n)"
    first = moto_conditions._KeptParser(expression, NAMES, vals).parse()
    kept = next(k for key, k in moto_conditions._parsed.items() if key[0] == expression)
    second = moto_conditions._KeptParser(expression, NAMES, {**vals, ":o": {"S": "y"}}).parse()
    assert first is not second and first is not kept.tree
    # the stand-ins are still in the kept tree, for the next use
    assert all(isinstance(node.value, moto_conditions._Slot) for node, _ in kept.slots)
    item = Item(DynamoType({"S": "key"}), None, {"k": {"S": "key"}, "status": {"S": "a"}, "owner": {"S": "y"},
                                                  "n": {"N": "1"}})
    assert (first.expr(item), second.expr(item)) == (False, True)


def test_a_tree_with_a_cycle_is_deep_copied_whole() -> None:
    class Node:
        pass

    a, b = Node(), Node()
    a.b, b.a = b, a
    assert moto_conditions._stand_ins(a)[1] is None
