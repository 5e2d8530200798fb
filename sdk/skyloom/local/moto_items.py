"""The emulator's patches to moto's DynamoDB items: an item's size checked once when it is built,
and items turned into answers without a generic walk.

moto builds an item attribute by attribute into a dict that, on every insert, sums the sizes of
everything inserted so far to enforce DynamoDB's 400 KB item limit: building an item of n
attributes costs n² size computations (a task item has about 25). Every put builds one, and a
submission's 100-item transactions were waited on by every other DynamoDB request. :func:`_init`
builds the same attributes, sums their sizes once, and refuses the same items: the sums only grow
as attributes are added, so the last insert's check is the one that decides.

Every DynamoDB answer goes through moto's ``dynamo_to_dict``, which asks each value of each item in
turn whether it is a datetime, a ``DynamoType``, has a ``to_json``, is a dict or a list: six times
slower on a batch of task items than :func:`to_wire`, which answers the same by the exact type of the
common values first (a tenth of the emulator's reads of tasks and results).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import moto.dynamodb.responses as dynamodb_responses
from moto.dynamodb.exceptions import ItemSizeTooLarge
from moto.dynamodb.models import utilities
from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
from moto.dynamodb.models.utilities import bytesize

#: moto's own conversion, for what :func:`to_wire` leaves to it (binary values).
_moto_to_dict = utilities.dynamo_to_dict

#: moto's own limit (``LimitedSizeDict.__setitem__``), a little above DynamoDB's documented 400 KB.
SIZE_LIMIT = 405000


def attribute_map(values: dict[str, DynamoType]) -> LimitedSizeDict | None:
    """``values`` as moto's attribute map of an item, its size summed once; None if the item would
    be over moto's limit (moto refuses it with ``ItemSizeTooLarge``)."""
    if sum(bytesize(key) + value.size() for key, value in values.items()) > SIZE_LIMIT:
        return None
    attrs = LimitedSizeDict()
    dict.update(attrs, values)  # checked above, as a whole
    return attrs


def _init(self: Item, hash_key: DynamoType, range_key: DynamoType | None, attrs: dict[str, Any]) -> None:
    self.hash_key = hash_key
    self.range_key = range_key
    sized = attribute_map({key: DynamoType(value) for key, value in attrs.items()})
    if sized is None:
        raise ItemSizeTooLarge
    self.attrs = sized


def to_wire(obj: Any) -> Any:
    """What moto's ``dynamo_to_dict`` makes of ``obj``: the exact built-in types and plain
    ``DynamoType`` values first, then moto's own checks in moto's order; binary values by moto."""
    kind = type(obj)
    if kind is str or kind is int or kind is float or kind is bool or obj is None:
        return obj
    if isinstance(obj, DynamoType):  # before moto's datetime check: no value is both
        return _moto_to_dict(obj) if obj.type == "B" or obj.type == "BS" else {obj.type: to_wire(obj.value)}
    if kind is dict:
        return {k: to_wire(v) for k, v in obj.items()}
    if kind is list:
        return [to_wire(v) for v in obj]
    # Anything else as moto has it, in its order.
    if isinstance(obj, datetime):
        return obj
    if hasattr(obj, "to_json"):
        return to_wire(obj.to_json())
    if isinstance(obj, dict):
        return {k: to_wire(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_wire(v) for v in obj]
    return obj


def install() -> None:
    """Patch moto's ``Item`` and its answers' conversion (idempotent)."""
    Item.__init__ = _init  # type: ignore[method-assign]
    dynamodb_responses.dynamo_to_dict = to_wire  # type: ignore[attr-defined]
