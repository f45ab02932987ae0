"""Pinned adjustments to moto 5 that take work unrelated to a request out of its hot path
(measured: see benchmarks/README.md), each tested against an untouched moto."""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import json
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

TUNED_MOTO = "5."  # the adjustments below were measured and tested against moto 5.x


def speed_up_moto() -> bool:
    """Two pinned adjustments that take work unrelated to a request out of moto's hot path,
    measured on moto 5.2 (see benchmarks/README.md); behaviour is unchanged:

    - `list_of_moto_modules` lists and stats moto's package folders on every request to route
      it; the folders do not change while the server runs, so the answer is computed once.
    - `unix_time()` without an argument builds two datetimes per call, and SQS calls it for
      every message on every request; it equals `time.time()`.
    - DynamoDB `TransactWriteItems` deep-copies every table it touches to be able to roll
      back: O(table size) time and memory per transaction. We back up the touched items only,
      and restore those on rollback.
    - DynamoDB results (already plain dicts) go through moto's generic, shape-driven
      serializer, which costs about 2 ms an item; `json.dumps` writes the same JSON.
    - A projection of top-level attributes (every GSI read with an INCLUDE projection, and
      most ProjectionExpressions) rebuilt the whole item as JSON once per attribute; the
      attributes are picked directly instead. Query and scan results are not deep-copied:
      they are only read, and sent.
    - An item's attributes were size-checked one by one, each check summing every attribute
      set so far (quadratic in the attributes, on every write); the 400 KB limit is checked
      once over the whole item instead, which refuses exactly the same items.
    - A query sorted the whole table by primary key before filtering it, then sorted what
      matched again (by DynamoType comparisons, which build a Decimal per comparison), and
      summed each result's size twice: it now collects the matching items unsorted, sorts
      them once by their keys' values (the same order), and sizes each item once a query.
      An index query looks at the items whose hash key matches (strings compared as
      strings, not through DynamoType's decimal-minded comparison, and left out of the sort
      key: they are equal). An index query's 1 MB page counts the attributes the index
      projects, as DynamoDB does; moto counted whole items, so a query on a narrow index
      took several times the pages (each page re-walks the table).
    - An UpdateExpression was parsed twice per request, and each of the ten validation
      passes over its tree rebuilt its node-type table at every node: parsed trees are
      kept by expression text (moto validates a deep copy, never the tree itself) and each
      pass builds its table once.
    Returns whether they were applied (not for another major version of moto)."""
    import moto
    from moto import backends
    from moto.core import utils as moto_utils

    utils: Any = moto_utils
    if not moto.__version__.startswith(TUNED_MOTO) or getattr(utils, "_clobi_tuned", False):
        return False
    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules
    original = utils.unix_time

    def unix_time(dt: Any = None) -> float:
        return time.time() if dt is None else original(dt)

    def unix_time_millis(dt: Any = None) -> float:
        return unix_time(dt) * 1000.0

    for name in ("sqs.models", "dynamodb.models", "s3.models", "ec2.models", "iam.models"):
        importlib.import_module(f"moto.{name}")
    for module in list[Any](sys.modules.values()):
        if getattr(module, "__name__", "").startswith("moto."):
            if getattr(module, "unix_time", None) is original:
                module.unix_time = unix_time
            if getattr(module, "unix_time_millis", None) is utils.unix_time_millis:
                module.unix_time_millis = unix_time_millis
    utils.unix_time, utils.unix_time_millis = unix_time, unix_time_millis
    _cheap_transaction_rollback()
    _plain_dynamodb_json()
    _cheap_top_level_projection()
    _items_sized_once()
    _cheaper_queries()
    _cheaper_update_expressions()
    utils._clobi_tuned = True
    return True


class _NoTableCopy:
    """Stands in for the `copy` module inside moto's DynamoDB backend: tables are not copied
    (the wrapper below backs up items instead); everything else is, as before."""

    def __init__(self, table_type: type) -> None:
        self._table_type = table_type

    def deepcopy(self, value: Any, memo: Any = None) -> Any:
        return value if isinstance(value, self._table_type) else copy.deepcopy(value, memo)

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


class _ReadsNotCopied:
    """Stands in for the `copy` module inside moto's DynamoDB table: the items a query or
    scan returns (a list of items, or one item) are not deep-copied, as they are only read
    and sent; everything else (table backups, say) is copied as before."""

    def __init__(self, item_type: type) -> None:
        self._item_type = item_type

    def deepcopy(self, value: Any, memo: Any = None) -> Any:
        if isinstance(value, self._item_type):
            return value
        if isinstance(value, list) and all(isinstance(v, self._item_type) for v in value):
            return list(value)
        return copy.deepcopy(value, memo)

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


def _cheap_transaction_rollback() -> None:
    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table

    backend_type: Any = models.DynamoDBBackend
    original = backend_type.transact_write_items
    models_any: Any = models
    models_any.copy = _NoTableCopy(Table)

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        backups = []
        for entry in transact_items[:100]:
            op_type, op = next(iter(entry.items()))
            try:
                table = self.get_table(op["TableName"])
                key = (
                    op["Key"]
                    if op_type != "Put"
                    else {
                        name: op["Item"][name]
                        for name in (table.hash_key_attr, table.range_key_attr)
                        if name
                    }
                )
                hash_key, range_key = self.get_keys_value(table, key)
            except Exception:  # malformed: moto's own code reports it
                continue
            item = table.get_item(hash_key, range_key)
            backups.append((table, hash_key, range_key, copy.deepcopy(item)))
        try:
            original(self, transact_items)
        except Exception:
            for table, hash_key, range_key, item in reversed(backups):
                table.delete_item(hash_key, range_key)
                if item is not None:
                    if range_key is not None:
                        table.items[hash_key][range_key] = item
                    else:
                        table.items[hash_key] = item
            raise

    backend_type.transact_write_items = transact_write_items


def _plain_dynamodb_json() -> None:
    from moto.dynamodb.responses import DynamoResult

    result_type: Any = DynamoResult
    original = result_type.execute_result

    def execute_result(self: Any, context: Any) -> Any:
        try:
            body = json.dumps(self.result, separators=(",", ":"))
        except (TypeError, ValueError):  # a datetime, say: moto's serializer knows how
            return original(self, context)
        return 200, {"Content-Type": "application/x-amz-json-1.0"}, body

    result_type.execute_result = execute_result


def _cheap_top_level_projection() -> None:
    from moto.dynamodb.models import table
    from moto.dynamodb.models.dynamo_type import Item, LimitedSizeDict

    table_any: Any = table
    table_any.copy = _ReadsNotCopied(Item)

    item_type: Any = Item
    original = item_type.project

    def project(self: Any, projection_expressions: list[list[str]]) -> Any:
        names = [path[0] for path in projection_expressions if len(path) == 1]
        if len(names) != len(projection_expressions) or any("[" in n for n in names):
            return original(self, projection_expressions)  # nested paths, list indexes
        projected = item_type.__new__(item_type)
        projected.hash_key, projected.range_key = self.hash_key, self.range_key
        projected.attrs = LimitedSizeDict()
        # Shared, not copied (a projection is only ever read and sent), and not size-checked
        # again (a part of a stored item).
        dict.update(projected.attrs, {n: self.attrs[n] for n in names if n in self.attrs})
        return projected

    item_type.project = project


def _items_sized_once() -> None:
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
    from moto.dynamodb.models.utilities import bytesize

    item_type: Any = Item

    def __init__(self: Any, hash_key: Any, range_key: Any, attrs: dict[str, Any]) -> None:
        self.hash_key, self.range_key = hash_key, range_key
        values = {key: DynamoType(value) for key, value in attrs.items()}
        # LimitedSizeDict's limit, checked once: sizes only add up, so the whole item is over
        # it exactly when some attribute, added one by one, would have crossed it.
        if sum(bytesize(key) + value.size() for key, value in values.items()) > 405000:
            raise ItemSizeTooLarge
        self.attrs = LimitedSizeDict()
        dict.update(self.attrs, values)

    item_type.__init__ = __init__


class _QueryScope:
    """What one query may assume: the table does not change while it runs (requests are
    handled one at a time), so item sizes are computed once, and items need no presorting."""

    generation = 0
    active = False
    projected: frozenset[str] | None = None  # an index query: the attributes it reads
    hash_equals: tuple[tuple[str, str, Any], ...] = ()  # an index query: its hash key


def _projected_attributes(table: Any, index_name: str | None) -> frozenset[str] | None:
    """The attributes an index query reads, when its index projects only some."""
    if not index_name:
        return None
    index = next((i for i in table.all_indexes() if i.name == index_name), None)
    projection = (index.projection or {}) if index is not None else {}
    kind = projection.get("ProjectionType")
    if index is None or kind not in ("KEYS_ONLY", "INCLUDE"):
        return None
    keys = [*index.table_key_attrs, *(key["AttributeName"] for key in index.schema)]
    extra = projection.get("NonKeyAttributes", []) if kind == "INCLUDE" else []
    return frozenset([*keys, *extra])


def _plain_equalities(conditions: Any) -> tuple[tuple[str, str, Any], ...]:
    """An index query's hash key conditions on strings or binaries, whose DynamoDB equality
    is equality of type and value (numbers compare as decimals: left to moto)."""
    return tuple(
        (name, value.type, value.value)
        for name, value in conditions or ()
        if value.type in ("S", "B")
    )


def _cast(value: Any) -> Any:
    """`DynamoType.cast_value`, with the common types' answers first."""
    kind = value.type
    if kind == "S":
        return value.value
    if kind == "N":
        return Decimal(value.value)
    return value.cast_value


def _cheaper_queries() -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType, Item
    from moto.dynamodb.models.table import Table
    from moto.dynamodb.models.utilities import bytesize

    table_type: Any = Table
    item_type: Any = Item
    query, all_items, item_size = table_type.query, table_type.all_items, item_type.size
    signature = inspect.signature(query)

    def scoped_query(self: Any, *args: Any, **kwargs: Any) -> Any:
        _QueryScope.generation += 1
        _QueryScope.active = True
        arguments = signature.bind(self, *args, **kwargs).arguments
        index_name = arguments.get("index_name")
        _QueryScope.projected = _projected_attributes(self, index_name)
        _QueryScope.hash_equals = _plain_equalities(
            arguments.get("hash_key_conditions") if index_name else None
        )
        try:
            return query(self, *args, **kwargs)
        finally:
            _QueryScope.active = False
            _QueryScope.projected = None
            _QueryScope.hash_equals = ()

    def unsorted_items(self: Any) -> list[Any]:
        """Inside a query, the items in any order: the query sorts what matches itself. An
        index query gets only the items whose hash key matches (moto checks them again):
        comparing plain strings is cheap, moto's DynamoType comparison is not."""
        if not _QueryScope.active:
            return list(all_items(self))
        if self.range_key_attr:
            items = [item for by_range in self.items.values() for item in by_range.values()]
        else:
            items = list(self.items.values())
        for name, kind, value in _QueryScope.hash_equals:
            items = [
                item
                for item in items
                if (have := item.attrs.get(name)) is not None
                and have.type == kind
                and have.value == value
            ]
        return items

    def size_once(self: Any) -> int:
        if not _QueryScope.active:
            return int(item_size(self))
        if getattr(self, "_clobi_sized", None) != _QueryScope.generation:
            wanted = _QueryScope.projected
            self._clobi_size = (
                item_size(self)
                if wanted is None
                else sum(bytesize(k) + v.size() for k, v in self.attrs.items() if k in wanted)
            )
            self._clobi_sized = _QueryScope.generation
        return int(self._clobi_size)

    def sorted_items(
        self: Any, hash_key_attrs: list[str], range_key_attrs: list[str | None], items: list[Any]
    ) -> list[Any]:
        """moto's order (DynamoType `<` compares `cast_value`s), with each key's value
        computed once per item instead of once per comparison."""
        names = self._generate_attr_to_sort_by(hash_key_attrs, range_key_attrs)
        # The index's hash key is the same in every item that matched it: not a sort key.
        same = {name for name, _, _ in _QueryScope.hash_equals}
        names = [name for name in names if name not in same] or names
        items.sort(key=lambda item: tuple([_cast(item.attrs[name]) for name in names]))
        return items

    def equal(self: Any, other: Any) -> bool:
        if self.type == "S" == other.type:
            return bool(self.value == other.value)
        return bool(type_eq(self, other))

    def not_equal(self: Any, other: Any) -> bool:  # moto's __ne__ is the negated __eq__
        return not equal(self, other)

    dynamo_type: Any = DynamoType
    type_eq = dynamo_type.__eq__
    dynamo_type.__eq__, dynamo_type.__ne__ = equal, not_equal
    table_type.query = scoped_query
    table_type.all_items = unsorted_items
    table_type.sorted_items = sorted_items
    item_type.size = size_once


def _cheaper_update_expressions() -> None:
    from moto.dynamodb.parsing import ast_nodes, expressions

    parser: Any = expressions.UpdateExpressionParser  # type: ignore[attr-defined]
    make: Any = functools.lru_cache(maxsize=256)(parser.make.__func__)
    parser.make = classmethod(make)

    traverser: Any = ast_nodes.DepthFirstTraverser  # type: ignore[attr-defined]

    def processing_map(self: Any) -> dict[type, Callable[[Any], Any]]:
        table = self.__dict__.get("_clobi_map")
        if table is None:  # the same for the traverser's life: types to its bound methods
            table = self._clobi_map = self._processing_map()
        return table

    def nodes_to_be_processed(self: Any) -> tuple[type, ...]:
        types = self.__dict__.get("_clobi_types")
        if types is None:
            types = self._clobi_types = tuple(processing_map(self))
        return types

    def process(self: Any, node: Any) -> Any:
        for class_key, processor in processing_map(self).items():
            if isinstance(node, class_key):
                return processor(node)
        return None

    traverser.nodes_to_be_processed = nodes_to_be_processed
    traverser.process = process
