"""The emulator's patch to moto's DynamoDB condition expressions: each one parsed once.

moto lexes and parses a condition expression into a tree of operators for every item it writes, and
three times for each item of a ``TransactWriteItems`` (its request layer, to check that every name
given is used; the transaction's check; the put or update it then makes): about a tenth of the
emulator's time in a throughput run. The same texts come back all the time (a submission's
``attribute_not_exists`` on every item, a worker's lease condition on each of its commits), with the
same names and often the same values, and the tree depends on nothing else: evaluating it against an
item changes nothing in it. So the trees are kept, with the names and values moto found used, keyed
by expression, names and the types of the values, up to :data:`MAX_CONDITIONS` of them (then
forgotten all at once: a cache this cheap to refill needs no eviction order). An expression moto
refuses raises as before and is not kept.

The values themselves are not in the key: a worker's commit names its own task id (``owner_task_id =
:t``), so a key with them missed on every write. The kept tree is parsed with a stand-in for each
value, of the value's own type (moto checks types while it builds some operators: a NULL bound of
BETWEEN), and each use gets a copy of the nodes on the way to them, with the request's values in
their places, sharing the rest (:func:`_bound`).
The request layer's parses only check which names and values the expression uses, and drop the
tree: they get no copy (:class:`_CheckingParser`; the copies were a twentieth of the emulator).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import moto.dynamodb.models as dynamodb_models
import moto.dynamodb.responses as dynamodb_responses
from moto.dynamodb import comparisons
from moto.dynamodb.comparisons import AttributeValue, ConditionExpressionParser

#: Parsed conditions kept at once.
MAX_CONDITIONS = 4096

#: (expression, names, value types) -> a parse kept (:class:`_Kept`).
_parsed: dict[tuple[str, str, str], _Kept] = {}


@dataclass(frozen=True)
class _Kept:
    """An operator tree with stand-ins for the values, where those stand (found once, when parsed),
    and the names and values moto's parse found used."""

    tree: Any
    slots: list[tuple[AttributeValue, str]]
    names_used: list[str]
    values_used: list[str]
    #: The nodes on the way from the root to a stand-in (by id): the only ones a use copies. None for
    #: a tree with a cycle (none of moto's so far), which each use deep-copies whole instead.
    holders: frozenset[int] | None


class _Slot:
    """Stands in a kept tree for the value of one placeholder (``name``)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __deepcopy__(self, memo: dict[int, Any]) -> _Slot:
        return self


class _KeptParser(ConditionExpressionParser):
    """moto's parser, answering a condition it has parsed before from what it found then."""

    _template = False
    #: Whether the caller evaluates the tree (moto's backend) and needs the request's values in it.
    _evaluates = True

    def parse(self) -> Any:
        values = self.expression_attribute_values or {}
        if not self.condition_expression or not all(type(v) is dict and len(v) == 1 for v in values.values()):
            return super().parse()
        # None and {} alike: moto's request layer passes {} where its backend passes None.
        types = repr(sorted((name, next(iter(v))) for name, v in values.items()))
        key = (self.condition_expression, repr(self.expression_attribute_names or {}), types)
        kept = _parsed.get(key)
        if kept is None:
            self._template = True
            try:
                op = super().parse()  # raises for an expression moto refuses: nothing kept
            finally:
                self._template = False
            slots, holders = _stand_ins(op)
            kept = _Kept(op, slots, list(self.expr_attr_names_found), list(self.expr_attr_values_found), holders)
            if len(_parsed) >= MAX_CONDITIONS:
                _parsed.clear()
            _parsed[key] = kept
        else:
            self.expr_attr_names_found.extend(kept.names_used)  # what moto's request layer checks
            self.expr_attr_values_found.extend(kept.values_used)
        return _bound(kept, values) if self._evaluates else kept.tree

    def _lookup_expression_attribute_value(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = super()._lookup_expression_attribute_value(name)  # raises if undefined
        if not self._template:
            return found
        return {next(iter(found)): _Slot(name)}


class _CheckingParser(_KeptParser):
    """The request layer's parser: every call site reads the names and values found and drops the
    tree, so it is handed the kept tree itself, stand-ins and all."""

    _evaluates = False


def _bound(kept: _Kept, values: dict[str, Any]) -> Any:
    """The kept tree with each stand-in replaced by the request's value: the nodes on the way to a
    stand-in are copied, everything else is shared (evaluating changes nothing in a tree). A deep
    copy of the whole tree cost 45 us for a worker's lease condition, a twentieth of the emulator."""
    if not kept.slots:
        return kept.tree
    memo: dict[int, Any] = {id(node): AttributeValue(values[name]) for node, name in kept.slots}
    if kept.holders is None:
        return copy.deepcopy(kept.tree, memo)
    return _rebuilt(kept.tree, kept.holders, memo)


def _rebuilt(node: Any, holders: frozenset[int], memo: dict[int, Any]) -> Any:
    """``node`` with the stand-ins below it replaced (``memo``: by id, the replacements and the
    copies made so far, so that a node reached twice is copied once, as by ``copy.deepcopy``)."""
    found = memo.get(id(node))
    if found is not None:
        return found
    if id(node) not in holders:
        return node
    if type(node) is list:
        copied_list: list[Any] = []
        memo[id(node)] = copied_list
        copied_list.extend(_rebuilt(each, holders, memo) for each in node)
        return copied_list
    if type(node) is tuple:
        memo[id(node)] = copied_tuple = tuple(_rebuilt(each, holders, memo) for each in node)
        return copied_tuple
    if isinstance(node, list | tuple):  # a subclass: as a deep copy would, stand-ins replaced
        return copy.deepcopy(node, memo)
    copied = object.__new__(type(node))
    memo[id(node)] = copied
    copied.__dict__.update({k: _rebuilt(v, holders, memo) for k, v in vars(node).items()})
    return copied


def _stand_ins(tree: Any) -> tuple[list[tuple[AttributeValue, str]], frozenset[int] | None]:
    """Every value stand-in of ``tree``, with the placeholder it stands for, and the ids of the nodes
    on the way from the root to one (None if the tree has a cycle: each use then copies it whole)."""
    slots: list[tuple[AttributeValue, str]] = []
    slot_ids: set[int] = set()
    holders: set[int] = set()
    done: set[int] = set()
    walking: set[int] = set()
    cyclic = False

    def walk(node: Any) -> bool:
        nonlocal cyclic
        if isinstance(node, AttributeValue):
            if not isinstance(node.value, _Slot):
                return False
            if id(node) not in slot_ids:
                slot_ids.add(id(node))
                slots.append((node, node.value.name))
            return True
        if id(node) in walking:  # reached again while its own walk is under way
            cyclic = True
            return False
        if id(node) in done:  # shared by two branches: as found the first time
            return id(node) in holders
        if isinstance(node, list | tuple):
            children: Any = node
        elif hasattr(node, "__dict__"):
            children = vars(node).values()
        else:
            return False
        walking.add(id(node))
        below = [walk(child) for child in children]
        walking.discard(id(node))
        done.add(id(node))
        if any(below):
            holders.add(id(node))
        return id(node) in holders

    walk(tree)
    return slots, None if cyclic else frozenset(holders)


def new_parser(expr: str | None, names: dict[str, str] | None,
               values: dict[str, dict[str, str]] | None) -> ConditionExpressionParser:
    """moto's ``create_condition_expression_parser``, with parses kept."""
    return _KeptParser(expr, names, values)


def _new_checking_parser(expr: str | None, names: dict[str, str] | None,
                         values: dict[str, dict[str, str]] | None) -> ConditionExpressionParser:
    """:func:`new_parser` for moto's request layer, which only checks what the expression uses."""
    return _CheckingParser(expr, names, values)


def install() -> None:
    """Patch moto where it makes condition parsers: its own module (``get_filter_expression`` uses
    it from there), and the backend and request layer, which imported it by name."""
    comparisons.create_condition_expression_parser = new_parser
    dynamodb_models.create_condition_expression_parser = new_parser  # type: ignore[attr-defined]
    dynamodb_responses.create_condition_expression_parser = _new_checking_parser  # type: ignore[attr-defined]
