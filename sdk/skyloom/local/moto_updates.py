"""Plain UpdateItem expressions applied directly, for the embedded emulator's DynamoDB.

moto evaluates every UpdateExpression by tokenizing it, building a deep syntax tree (hundreds of
nodes for ``SET #0 = :0, ... REMOVE #7, #8``) and walking that tree once per validation rule. In a
throughput run the workers' commits are such updates, and that walk was half of the emulator's
time: the emulator, not the system under test, set the pace.

Nearly all of the stack's updates are plain: top-level attributes set to placeholder values and
top-level attributes removed (what pynamodb writes for ``Model.attr.set(value)`` and
``.remove()``). :func:`update_item` applies exactly those itself, with moto's own condition
evaluation, stream record and size limit, and hands everything else to moto unchanged: other
operators (``ADD``, ``list_append``, ``if_not_exists``, arithmetic), document paths, a missing
item, a key or index key attribute written, an undefined placeholder, an attribute named twice,
an empty set, or an item that would outgrow the size limit. Those are the cases where moto's answer
(or its error) takes its full machinery, so there is nothing to re-implement for them.

moto's request layer also parses each UpdateExpression once more, only to list the placeholders it
names; :class:`_ParsedOnce` keeps those syntax trees by expression text for that read-only use (the
stack writes a handful of distinct expressions, millions of times).

Neither path changes a stored item in place: a plain update stores a new item, and moto's own
works on a copy it stores first (:func:`_copy_stored`), so an item once read stays as it was read
(a cancelled transaction puts back the very objects it saw: :mod:`skyloom.local.moto_app`).

With ``SKYLOOM_MOTO_UPDATE_CHECK=1`` each plain update is also applied by moto to a copy of the
item, and a difference raises :class:`UpdateMismatch`; the end-to-end tests run that way.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from collections.abc import Callable
from typing import Any

from moto.dynamodb.exceptions import ConditionalCheckFailed
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import Table
from moto.dynamodb.parsing.expressions import UpdateExpressionParser  # type: ignore[attr-defined]

from skyloom.local import moto_conditions
from skyloom.local.moto_items import attribute_map

CHECK_ENV = "SKYLOOM_MOTO_UPDATE_CHECK"
_SET = re.compile(r"\s*(#\w+)\s*=\s*(:\w+)\s*")
_REMOVE = re.compile(r"\s*(#\w+)\s*")
_CLAUSE = re.compile(r"\b(SET|REMOVE)\b", re.IGNORECASE)
_EMPTY_SETS = ("SS", "NS", "BS")

_original_update_item = DynamoDBBackend.update_item


class UpdateMismatch(AssertionError):
    """A plain update left another item than moto's evaluation would (check mode only)."""


def plain_actions(expression: str) -> tuple[list[tuple[str, str]], list[str]] | None:
    """``(sets, removes)`` of placeholders for an expression of only ``SET #a = :v`` and
    ``REMOVE #a`` actions (each clause at most once), else None."""
    parts = _CLAUSE.split(expression)
    if parts[0].strip() or len(parts) < 3:
        return None
    sets: list[tuple[str, str]] = []
    removes: list[str] = []
    seen: set[str] = set()
    for keyword, body in zip(parts[1::2], parts[2::2], strict=True):
        kind = keyword.upper()
        if kind in seen:
            return None  # DynamoDB refuses a repeated clause: moto says how
        seen.add(kind)
        for action in body.split(","):
            if kind == "SET" and (m := _SET.fullmatch(action)):
                sets.append((m.group(1), m.group(2)))
            elif kind == "REMOVE" and (m := _REMOVE.fullmatch(action)):
                removes.append(m.group(1))
            else:
                return None
    return sets, removes


def _index_key_types(table: Table) -> dict[str, str]:
    keys = {k["AttributeName"] for index in table.all_indexes() for k in index.schema}
    return {d["AttributeName"]: d["AttributeType"] for d in table.attr if d["AttributeName"] in keys}


def _plain_changes(table: Table, expression: str, names: dict[str, str] | None,
                   values: dict[str, Any] | None) -> tuple[dict[str, DynamoType], list[str]] | None:
    """The attributes to set and to remove, or None when moto must judge the update itself."""
    actions = plain_actions(expression)
    if actions is None:
        return None
    names, values = names or {}, values or {}
    sets, removes = actions
    if any(n not in names for n, _ in sets) or any(n not in names for n in removes):
        return None
    if any(v not in values for _, v in sets):
        return None
    touched = [names[n] for n, _ in sets] + [names[n] for n in removes]
    if len(set(touched)) != len(touched) or table.hash_key_attr in touched or table.range_key_attr in touched:
        return None
    index_types = _index_key_types(table)
    changes: dict[str, DynamoType] = {}
    for n, v in sets:
        raw = values[v]
        if not isinstance(raw, dict) or len(raw) != 1:
            return None
        (kind, data), = raw.items()
        if kind in _EMPTY_SETS and not data:
            return None
        wanted = index_types.get(names[n])
        if wanted is not None and (kind != wanted or data in ("", b"")):
            return None
        changes[names[n]] = DynamoType(raw)
    return changes, [names[n] for n in removes]


def update_item(self: DynamoDBBackend, table_name: str, key: dict[str, dict[str, Any]], update_expression: str,
                expression_attribute_names: dict[str, Any], expression_attribute_values: dict[str, Any],
                attribute_updates: dict[str, Any] | None = None, expected: dict[str, Any] | None = None,
                condition_expression: str | None = None,
                return_values_on_condition_check_failure: str | None = None) -> Item:
    """moto's ``DynamoDBBackend.update_item``, with plain expressions applied directly."""

    def slow() -> Item:
        if table is not None:
            _copy_stored(table, key)  # moto changes the stored item in place: let it change a copy
        return _original_update_item(
            self, table_name, key, update_expression, expression_attribute_names, expression_attribute_values,
            attribute_updates, expected, condition_expression, return_values_on_condition_check_failure)

    table = self.tables.get(table_name)
    if table is None or not update_expression or attribute_updates or expected:
        return slow()
    changes = _plain_changes(table, update_expression, expression_attribute_names, expression_attribute_values)
    if changes is None or table.hash_key_attr not in key or (table.has_range_key and table.range_key_attr not in key):
        return slow()
    hash_key, range_key = self.get_keys_value(table, key)
    item = table.get_item(hash_key, range_key)
    if item is None:
        return slow()  # moto creates the item, with its own stream records
    sets, removes = changes
    attrs = attribute_map({**{k: v for k, v in item.attrs.items() if k not in removes}, **sets})
    if attrs is None:
        return slow()  # for moto's own error
    condition = moto_conditions.new_parser(
        condition_expression, expression_attribute_names, expression_attribute_values).parse()
    if not condition.expr(item):
        if return_values_on_condition_check_failure == "ALL_OLD":
            raise ConditionalCheckFailed(item=item.to_json()["Attributes"])
        raise ConditionalCheckFailed
    expected_item = _moto_result(table, item, slow) if os.environ.get(CHECK_ENV) == "1" else None
    # Copy on write: a new item with a new attribute map takes the old one's place, which stays as
    # it was, for the stream's old image and for a transaction that may have to put it back (moto
    # deep-copied the item, then changed it in place).
    updated = copy.copy(item)
    updated.attrs = attrs
    _store(table, updated)
    if expected_item is not None and expected_item.to_json() != updated.to_json():
        raise UpdateMismatch(
            f"{table_name}: {update_expression} gave {updated.to_json()}, moto {expected_item.to_json()}")
    if table.stream_shard is not None:
        table.stream_shard.add(item, updated)
    return updated


def _store(table: Table, item: Item) -> None:
    """Put ``item`` in the table's item store, in place of whatever is stored under its key."""
    if item.range_key is not None:
        table.items[item.hash_key][item.range_key] = item
    else:
        table.items[item.hash_key] = item  # type: ignore[assignment]  # moto types it for range tables


def _copy_stored(table: Table, key: dict[str, Any]) -> None:
    """Store a deep copy of the item under ``key`` in its place: moto's own update then changes the
    copy, and the item as it was stays whole for whoever holds it (a transaction's undo log). Keys
    moto would refuse are left to moto."""
    try:
        hash_key = DynamoType(key[table.hash_key_attr])
        range_key = DynamoType(key[table.range_key_attr]) if table.range_key_attr is not None else None
        item = table.get_item(hash_key, range_key)
    except Exception:
        return
    if item is not None:
        _store(table, copy.deepcopy(item))


def _moto_result(table: Table, item: Item, slow: Callable[[], Item]) -> Item:
    """What moto makes of the update, evaluated on a copy: the table and its stream are left as they
    were (the item put back, the stream record moto wrote dropped)."""
    shard = table.stream_shard
    length = len(shard.items) if shard is not None else 0
    try:
        result: Item = copy.deepcopy(slow())  # it changes a copy of the item (see slow)
        return result
    finally:
        _store(table, item)
        if shard is not None:
            del shard.items[length:]


class _ParsedOnce:
    """Stands in for ``UpdateExpressionParser`` in moto's request layer (``moto.dynamodb.responses``),
    which only reads the tree (the placeholders it names). The backend, whose validator rewrites
    the tree it is given, keeps parsing afresh."""

    @staticmethod
    @functools.lru_cache(maxsize=1024)
    def make(expression: str) -> Any:
        return UpdateExpressionParser.make(expression)


def install() -> None:
    """Patch moto (idempotent). Must run before :mod:`skyloom.local.moto_indexes` installs, whose
    wrapper calls the update it finds then."""
    import moto.dynamodb.responses as responses

    DynamoDBBackend.update_item = update_item  # type: ignore[method-assign]
    responses.UpdateExpressionParser = _ParsedOnce  # type: ignore[attr-defined]
