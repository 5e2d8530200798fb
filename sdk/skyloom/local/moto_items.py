"""The emulator's patch to moto's DynamoDB items: an item's size checked once when it is built.

moto builds an item attribute by attribute into a dict that, on every insert, sums the sizes of
everything inserted so far to enforce DynamoDB's 400 KB item limit: building an item of n
attributes costs n² size computations (a task item has about 25). Every put builds one, and a
submission's 100-item transactions were waited on by every other DynamoDB request. :func:`_init`
builds the same attributes, sums their sizes once, and refuses the same items: the sums only grow
as attributes are added, so the last insert's check is the one that decides.
"""

from __future__ import annotations

from typing import Any

from moto.dynamodb.exceptions import ItemSizeTooLarge
from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
from moto.dynamodb.models.utilities import bytesize

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


def install() -> None:
    """Patch moto's ``Item`` (idempotent)."""
    Item.__init__ = _init  # type: ignore[method-assign]
