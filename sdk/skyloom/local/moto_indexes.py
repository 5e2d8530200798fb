"""Hash-key indexes for the embedded emulator's DynamoDB, so a Query costs what it returns.

moto answers every Query by walking *all* the table's items and keeping those whose hash key
matches, for the table's own key as for a secondary index. On a local stack that has run a
10,000-task session, each of the sweeper's due-shard queries, each events-feed poll and each edge
lookup of the resolver walked 10,000+ items: the emulator, not the agents, set the pace, and slowed
down as the tables grew. DynamoDB itself reads one partition.

Here each table keeps, for its own hash key and for every index with a single hash key attribute,
the items filed under each hash value, and a Query is handed only the items filed under the value it
asks for. moto then applies its own logic to that subset (key conditions, sorting, paging, filters,
projections), so results are moto's, only found faster.

The index is kept exact by refiling a key after each of the three calls every write goes through
(``Table.put_item``, ``Table.delete_item``, ``DynamoDBBackend.update_item``, which moto's batch and
transaction calls use too), plus :func:`refile` for writes made around them (the emulator's undo of a
cancelled transaction). With ``SKYLOOM_MOTO_INDEX_CHECK=1`` every indexed Query is also answered the
old way and a difference raises: the test suite runs that way.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import Table

CHECK_ENV = "SKYLOOM_MOTO_INDEX_CHECK"
#: What the table's own hash key is filed under (index names cannot be empty).
PRIMARY = ""

_Key = tuple[DynamoType, DynamoType | None]


class IndexMismatch(AssertionError):
    """An indexed Query returned something else than a full scan would (check mode only)."""


class _HashIndex:
    def __init__(self, table: Table) -> None:
        self.items_ref = table.items
        self.attrs: dict[str, str] = {PRIMARY: table.hash_key_attr}
        self.ranges: dict[str, str | None] = {PRIMARY: table.range_key_attr}
        for index in table.all_indexes():
            hashes = [k["AttributeName"] for k in index.schema if k["KeyType"] == "HASH"]
            ranges = [k["AttributeName"] for k in index.schema if k["KeyType"] == "RANGE"]
            if len(hashes) == 1:
                self.attrs[index.name] = hashes[0]
                self.ranges[index.name] = ranges[0] if len(ranges) == 1 else None
        self.filed: dict[str, dict[DynamoType, dict[_Key, Item]]] = {name: {} for name in self.attrs}
        self.where: dict[_Key, list[tuple[str, DynamoType]]] = {}
        for item in table.all_items():
            self.file(item)

    def file(self, item: Item) -> None:
        key = (item.hash_key, item.range_key)
        places = self.where.setdefault(key, [])
        for name, attr in self.attrs.items():
            value = item.attrs.get(attr)
            if value is not None:
                self.filed[name].setdefault(value, {})[key] = item
                places.append((name, value))

    def unfile(self, key: _Key) -> None:
        for name, value in self.where.pop(key, ()):
            bucket = self.filed[name].get(value)
            if bucket is not None:
                bucket.pop(key, None)
                if not bucket:
                    del self.filed[name][value]


def _index(table: Table) -> _HashIndex:
    """The table's index, built on first use (and again if moto replaced the table's item store,
    as a restore from backup does)."""
    index: _HashIndex | None = getattr(table, "_skyloom_hash_index", None)
    if index is None or index.items_ref is not table.items:
        index = _HashIndex(table)
        table._skyloom_hash_index = index  # type: ignore[attr-defined]
    return index


def refile(table: Table, hash_key: DynamoType, range_key: DynamoType | None) -> None:
    """File the key's item (or its absence) as the table holds it now."""
    index = getattr(table, "_skyloom_hash_index", None)
    if index is None:
        return  # built from the table as it is when first needed
    key = (hash_key, range_key)
    index.unfile(key)
    item = table.get_item(hash_key, range_key) if range_key is not None or not table.has_range_key else None
    if item is not None:
        index.file(item)


_original_put_item = Table.put_item
_original_delete_item = Table.delete_item
_original_update_item = DynamoDBBackend.update_item
_original_query = Table.query
_QUERY_SIGNATURE = inspect.signature(_original_query)


def _put_item(self: Table, *args: Any, **kwargs: Any) -> Item:
    item = _original_put_item(self, *args, **kwargs)
    refile(self, item.hash_key, item.range_key)
    return item


def _delete_item(self: Table, hash_key: DynamoType, range_key: DynamoType | None = None) -> Item | None:
    try:
        return _original_delete_item(self, hash_key, range_key)
    finally:
        refile(self, hash_key, range_key)


def _update_item(self: DynamoDBBackend, table_name: str, key: dict[str, dict[str, Any]], *args: Any,
                 **kwargs: Any) -> Item:
    try:
        return _original_update_item(self, table_name, key, *args, **kwargs)
    finally:  # refused updates included: moto may have changed the item before refusing
        table = self.tables.get(table_name)
        if table is not None and table.hash_key_attr in key:
            range_key = key.get(table.range_key_attr) if table.range_key_attr else None
            refile(table, DynamoType(key[table.hash_key_attr]), DynamoType(range_key) if range_key else None)


def _query(self: Table, *args: Any, **kwargs: Any) -> Any:
    asked = _QUERY_SIGNATURE.bind(self, *args, **kwargs).arguments
    hash_key, index_name = asked.get("hash_key"), asked.get("index_name") or PRIMARY
    index = _index(self)
    if hash_key is None or index_name not in index.attrs:
        return _original_query(self, *args, **kwargs)
    subset = list(index.filed[index_name].get(hash_key, {}).values())
    comparison, operands = asked.get("range_comparison"), asked.get("range_objs")
    attr = index.ranges[index_name]
    conditions = asked.get("range_key_conditions") or []
    if comparison and attr and all(name == attr for name, *_ in conditions):
        # The key condition on the range key too (the events feed asks for the few items changed
        # since its cursor among a whole session's); moto applies it again, to fewer items.
        subset = [it for it in subset if (v := it.attrs.get(attr)) is not None and v.compare(comparison, operands)]
    answer = _with_items(self, lambda: subset, lambda: _original_query(self, *args, **kwargs))
    if os.environ.get(CHECK_ENV) == "1":
        _check(answer, _original_query(self, *args, **kwargs), f"{self.name}.{index_name or 'table'}")
    return answer


def _with_items(table: Table, items: Callable[[], list[Item]], call: Callable[[], Any]) -> Any:
    """Run ``call`` with the table's ``all_items`` answering ``items``: moto's Query reads its
    candidates from there and nowhere else. DynamoDB requests are served one at a time
    (:mod:`skyloom.local.moto_app`), so no other request sees the table meanwhile."""
    table.all_items = items  # type: ignore[method-assign]
    try:
        return call()
    finally:
        del table.all_items


def _check(indexed: Any, scanned: Any, where: str) -> None:
    """Same items and count, and the same LastEvaluatedKey, except that a page that ends exactly at
    the last item matching the key condition has none here, where moto's scan would still name that
    item if non-matching items followed it (DynamoDB may do either: the next page is then empty)."""
    items, count, last = indexed
    want_items, want_count, want_last = scanned
    if [r.to_json() for r in items] != [r.to_json() for r in want_items] or count != want_count or (
        last != want_last and last is not None
    ):
        raise IndexMismatch(f"indexed Query on {where} differs from a scan")


def install() -> None:
    """Patch moto (idempotent: the emulator imports this once, tests may call it again). The update
    wrapped is the one installed now (:mod:`skyloom.local.moto_updates` goes first)."""
    global _original_update_item
    if DynamoDBBackend.update_item is not _update_item:
        _original_update_item = DynamoDBBackend.update_item
    Table.put_item = _put_item  # type: ignore[method-assign]
    Table.delete_item = _delete_item  # type: ignore[method-assign]
    Table.query = _query  # type: ignore[method-assign]
    DynamoDBBackend.update_item = _update_item  # type: ignore[method-assign]
