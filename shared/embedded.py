"""The embedded AWS endpoint: a moto server on 127.0.0.1 that keeps the promises clobi relies on.

moto's threaded server does not make DynamoDB conditional writes atomic under concurrency, and
its SQS can deliver a message twice under concurrent receive/delete. We serialize request
handling (one lock around each request) and wait out SQS long polls in short steps outside the
lock, so a long poll never blocks other clients, and a long poll whose client died (an agent
killed mid-poll) ends instead of taking a message no one will read. Connections are kept alive
(werkzeug's own server closes each after one answer). `clobi local` and the tests use this
launcher.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import functools
import hmac
import importlib
import inspect
import io
import json
import logging
import math
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from shared import localkeys
from shared.endpoint_auth import (
    MAX_BODY_BYTES,
    Key,
    Refused,
    SecretLookup,
    check_body,
    check_head,
    refusal,
)
from shared.errors import EndpointError
from shared.home import append_private, private_dir, write_private

log = logging.getLogger(__name__)
POLL_STEP_S = 0.05
STATS_PATH = "/_clobi/stats"
DRAINED = "clobi.body_read"  # environ flag: the body is read, the connection can go on
StartResponse = Callable[..., Any]


class SerializedApp:
    """WSGI middleware: one request at a time inside the backend, long polls outside the lock."""

    def __init__(
        self,
        app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]],
        secret_of: SecretLookup,
    ) -> None:
        self._app = app
        self._secret_of = secret_of
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.busy: dict[str, float] = defaultdict(float)  # backend CPU seconds per operation
        # CLOBI_ENDPOINT_PROFILE=FILE: profile request handling, written at shutdown.
        self.profile: cProfile.Profile | None = (
            cProfile.Profile() if os.environ.get("CLOBI_ENDPOINT_PROFILE") else None
        )

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:  # a stranger's body is never read: the connection is closed instead
            head = check_head(environ, self._secret_of)
            body = _read_body(environ, MAX_BODY_BYTES)
            environ[DRAINED] = True
            check_body(environ, body, head)
        except Refused as refused:
            status, headers, payload = refusal(environ, refused)
            start_response(status, headers)
            return [payload]
        if environ.get("PATH_INFO", "").startswith(STATS_PATH):
            return self._stats(environ, start_response)
        operation = _operation(environ, body)
        self.counts[operation] += 1
        wait_s = _long_poll_s(environ, body)  # waited out here: the backend never waits
        deadline = time.monotonic() + wait_s
        while True:
            began = time.thread_time()
            status, headers, payload = self._call_locked(environ, body)
            self.busy[operation] += time.thread_time() - began
            if wait_s <= 0 or _has_messages(payload) or time.monotonic() >= deadline:
                break
            time.sleep(POLL_STEP_S)
            if _client_gone(environ):
                # A long poll of a client that died (an agent killed meanwhile): receiving
                # for it would hide the message from everyone for a visibility timeout.
                status, headers, payload = "499 Client Closed Request", [], b""
                break
        start_response(status, headers)
        return [payload]

    def _call_locked(self, environ: dict[str, Any], body: bytes) -> tuple[str, list[Any], bytes]:
        captured: list[Any] = []

        def capture(status: str, headers: list[Any], exc_info: Any = None) -> None:
            captured[:] = [status, headers]

        env = dict(environ)
        env["wsgi.input"] = io.BytesIO(body)
        env["CONTENT_LENGTH"] = str(len(body))
        with self._lock:
            if self.profile is not None:
                self.profile.enable()
            result = self._app(env, capture)
            try:
                payload = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
                if self.profile is not None:
                    self.profile.disable()
        status, headers = captured
        return status, headers, payload

    def _stats(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        """GET: request counts per service.operation and the server's CPU seconds (for the
        benchmarks); POST: the same, then the counts start again from zero."""
        times = os.times()
        payload = json.dumps(
            {
                "requests": dict(self.counts),
                "backend_cpu_s": dict(self.busy),
                "cpu_s": times.user + times.system,
            }
        ).encode()
        if environ.get("REQUEST_METHOD") == "POST":
            self.counts.clear()
            self.busy.clear()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [payload]


def _operation(environ: dict[str, Any], body: bytes) -> str:
    """`service.Operation` of a request, as far as cheaply known (for counting only)."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    scope = (
        auth.split("Credential=", 1)[1].split(",", 1)[0].split("/") if "Credential=" in auth else []
    )
    service = scope[3] if len(scope) > 3 else "?"
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return f"{service}.{target.rsplit('.', 1)[-1]}"
    if b"Action=" in body[:200]:
        action = dict(parse_qsl(body[:500].decode(errors="replace"))).get("Action", "?")
        return f"{service}.{action}"
    return f"{service}.{environ.get('REQUEST_METHOD', '?')}"


def _read_body(environ: dict[str, Any], limit: int) -> bytes:
    """The request's body, of at most `limit` bytes (Refused beyond: a chunked body says its
    length only by ending)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ["wsgi.input"]
    if length > 0:
        return bytes(stream.read(min(length, limit)))
    if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
        body = bytes(stream.read(limit + 1))
        if len(body) > limit:
            raise Refused("EntityTooLarge", f"a body is at most {limit} bytes here")
        return body
    return b""


def _long_poll_s(environ: dict[str, Any], body: bytes) -> float:
    """WaitTimeSeconds of an SQS ReceiveMessage, else 0. The request itself is passed on
    unchanged: its signature covers the body (checked when IAM enforcement is on)."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    wait: Any = 0
    if target == "AmazonSQS.ReceiveMessage":
        wait = json.loads(body or b"{}").get("WaitTimeSeconds") or 0
    elif b"Action=ReceiveMessage" in body:
        wait = dict(parse_qsl(body.decode())).get("WaitTimeSeconds") or 0
    try:
        seconds = float(wait)
    except (TypeError, ValueError):
        return 0.0
    return min(max(seconds, 0.0), 20.0) if math.isfinite(seconds) else 0.0  # SQS's bounds


def _backend_never_waits() -> None:
    """Moto's SQS receive sleeps inside the backend (under our lock) for a long poll; the
    middleware waits instead, outside the lock, so the backend is always asked with 0."""
    from moto.sqs.models import SQSBackend

    backend: Any = SQSBackend
    if getattr(backend, "_clobi_no_wait", False):
        return
    receive = backend.receive_message

    def receive_now(
        self: Any, queue_name: str, count: int, _wait: int, *args: Any, **kw: Any
    ) -> Any:
        return receive(self, queue_name, count, 0, *args, **kw)

    backend.receive_message = receive_now
    backend._clobi_no_wait = True


def _no_write(data: bytes) -> object:
    raise NotImplementedError("the embedded endpoint's app returns its answer; it never writes")


def _client_gone(environ: dict[str, Any]) -> bool:
    """Whether the client hung up: its socket reads as closed. (A live client sends nothing
    while it waits for this answer.)"""
    sock = environ.get("werkzeug.socket")
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _has_messages(payload: bytes) -> bool:
    return b'"Messages"' in payload or b"<Message>" in payload


def make_app(key: str, secret: str) -> SerializedApp:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    speed_up_moto()
    _backend_never_waits()
    return SerializedApp(DomainDispatcherApplication(create_backend_app), _secrets(key, secret))


def _secrets(key: str, secret: str) -> SecretLookup:
    """The endpoint's own key, then the keys of IAM users made through it (by someone who
    held a key already: the IAM tests run each component with its own policy's key)."""

    def secret_of(access_key: str) -> Key | None:
        if hmac.compare_digest(access_key.encode(), key.encode()):
            return Key(secret, owner=True)
        from moto.iam.models import iam_backends

        for account in list(iam_backends.values()):
            for backend in list(account.values()):
                found = backend.access_keys.get(access_key)
                # A user's active key; not a temporary one (its token is not checked here).
                if found is not None and found.status == "Active" and found.user_name:
                    return Key(str(found.secret_access_key), owner=False)
        return None

    return secret_of


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


def serve(host: str, port: int, ready_file: Path | None, credentials: Path) -> None:
    """Run the endpoint in this process until SIGTERM/SIGINT. Blocks."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Handler(WSGIRequestHandler):
        """Keep-alive. werkzeug's server answers one request per connection (it cannot
        drain a body it did not read, so it closes each connection and reads what is left);
        with boto3 that costs a connect and a server thread per request: measured, about a
        third of an agent's CPU in boto3. Our app reads every body and buffers every answer
        (SerializedApp), so the answer is written here, with its length, and the connection
        serves the client's next request. The 100-continue reply is the stdlib's."""

        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # An answer goes out in two writes (head, body): without this, on a kept-alive
            # connection the body waits for the client's delayed ACK (~40 ms).
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def run_wsgi(self) -> None:
            environ = self.make_environ()
            started: list[Any] = []

            def start_response(
                status: str, headers: list[Any], exc_info: Any = None
            ) -> Callable[[bytes], object]:
                started[:] = [status, headers]
                return _no_write

            try:
                payload = b"".join(self.server.app(environ, start_response))
            except Exception:
                log.exception("endpoint error on %s %s", self.command, self.path)
                started[:] = ["500 Internal Server Error", []]
                payload = b""
            if not environ.get(DRAINED):
                self.close_connection = True  # what is left of the body would be misread
            status, headers = started
            code, _, message = status.partition(" ")
            self.send_response(int(code), message)
            head = self.command == "HEAD"  # its Content-Length is what GET would send
            for key, value in headers:
                if key.lower() not in ("connection", "" if head else "content-length"):
                    self.send_header(key, value)
            if not head:
                self.send_header("Content-Length", str(len(payload)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if not head:
                self.wfile.write(payload)

        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    keys = localkeys.read(credentials)
    if keys is None:
        raise EndpointError(f"no key pair at {credentials}")
    app = make_app(*keys)
    server = make_server(host, port, app, threaded=True, request_handler=Handler)
    url = f"http://{host}:{server.server_port}"

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if ready_file is not None:
        write_private(ready_file, json.dumps({"url": url, "pid": os.getpid()}))
    server.serve_forever()
    if app.profile is not None:
        app.profile.dump_stats(os.environ["CLOBI_ENDPOINT_PROFILE"])


def launch(
    port: int = 0,
    *,
    ready_file: Path,
    log_file: Path,
    credentials: Path,
    detach: bool = True,
    timeout_s: float = 30.0,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the endpoint in a child process; return it and its URL once it answers. It
    verifies every request against the key pair in `credentials` (made if missing)."""
    localkeys.ensure(credentials)
    ready_file.unlink(missing_ok=True)
    private_dir(log_file.parent)
    with append_private(log_file) as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shared.embedded",
                "--port",
                str(port),
                "--ready-file",
                str(ready_file),
                "--credentials",
                str(credentials),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=detach,
            env=_server_env(),
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready_file.exists():
            return proc, json.loads(ready_file.read_text())["url"]
        if proc.poll() is not None:
            raise EndpointError(f"embedded endpoint exited at start; see {log_file}")
        time.sleep(0.05)
    proc.kill()
    raise EndpointError(f"embedded endpoint did not start within {timeout_s:.0f} s; see {log_file}")


def _server_env() -> dict[str, str]:
    """The user's environment without any AWS credential or profile: the endpoint needs
    none, and a process that holds none can leak none."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_SHARED_CREDENTIALS_FILE"] = env["AWS_CONFIG_FILE"] = os.devnull
    return env


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run clobi's embedded AWS endpoint (moto).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--credentials", type=Path, required=True, help="its key pair")
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.ready_file, args.credentials)


if __name__ == "__main__":
    main()
