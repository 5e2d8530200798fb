"""The emulator's patch to moto's DynamoDB condition expressions: each one parsed once.

moto lexes and parses a condition expression into a tree of operators for every item it writes, and
three times for each item of a ``TransactWriteItems`` (its request layer, to check that every name
given is used; the transaction's check; the put or update it then makes): about a tenth of the
emulator's time in a throughput run. The same texts come back all the time (a submission's
``attribute_not_exists`` on every item, a worker's lease condition on each of its commits), with the
same names and often the same values, and the tree depends on nothing else: evaluating it against an
item changes nothing in it. So the trees are kept, with the names and values moto found used, keyed
by expression, names and values, up to :data:`MAX_CONDITIONS` of them (then forgotten all at once: a
cache this cheap to refill needs no eviction order). An expression moto refuses raises as before and
is not kept.
"""

from __future__ import annotations

from typing import Any

import moto.dynamodb.models as dynamodb_models
import moto.dynamodb.responses as dynamodb_responses
from moto.dynamodb import comparisons
from moto.dynamodb.comparisons import ConditionExpressionParser

#: Parsed conditions kept at once.
MAX_CONDITIONS = 4096

#: (expression, names, values) -> (operator tree, names used, values used), as moto's parse found them.
_parsed: dict[tuple[str, str, str], tuple[Any, list[str], list[str]]] = {}


class _KeptParser(ConditionExpressionParser):
    """moto's parser, answering a condition it has parsed before from what it found then."""

    def parse(self) -> Any:
        if not self.condition_expression:
            return super().parse()
        # None and {} alike: moto's request layer passes {} where its backend passes None.
        key = (self.condition_expression, repr(self.expression_attribute_names or {}),
               repr(self.expression_attribute_values or {}))
        kept = _parsed.get(key)
        if kept is None:
            op = super().parse()  # raises for an expression moto refuses: nothing kept
            kept = (op, list(self.expr_attr_names_found), list(self.expr_attr_values_found))
            if len(_parsed) >= MAX_CONDITIONS:
                _parsed.clear()
            _parsed[key] = kept
        else:
            self.expr_attr_names_found.extend(kept[1])  # what moto's request layer checks for unused names
            self.expr_attr_values_found.extend(kept[2])
        return kept[0]


def new_parser(expr: str | None, names: dict[str, str] | None,
               values: dict[str, dict[str, str]] | None) -> ConditionExpressionParser:
    """moto's ``create_condition_expression_parser``, with parses kept."""
    return _KeptParser(expr, names, values)


def install() -> None:
    """Patch moto where it makes condition parsers: its own module (``get_filter_expression`` uses
    it from there), and the backend and request layer, which imported it by name."""
    comparisons.create_condition_expression_parser = new_parser
    dynamodb_models.create_condition_expression_parser = new_parser  # type: ignore[attr-defined]
    dynamodb_responses.create_condition_expression_parser = new_parser  # type: ignore[attr-defined]
