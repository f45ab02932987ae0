"""Snapshots of the embedded endpoint's moto state: the backends of the services it keeps,
pickled (moto's own objects, so a snapshot is read only by the moto version that wrote it),
with S3 object bodies over INLINE_BYTES in files beside it and SQS queues without messages."""

from __future__ import annotations

import copyreg
import gc
import io
import os
import pickle
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from threading import Condition
from typing import Any

KEPT_SERVICES = ("dynamodb", "s3", "sqs", "iam")  # EC2 and STS: see docs/design.md
CHUNK_BYTES = 1 << 20
_blobs = threading.local()  # the folder bodies are written to or read from, while (un)pickling


def backends() -> Iterator[tuple[str, str, str, Any]]:
    """(service, account, region, backend) of every kept service's backend in use."""
    from moto.backends import get_backend

    for service in KEPT_SERVICES:
        for account, regions in get_backend(service).items():  # type: ignore[call-overload]
            for region, backend in regions.items():
                yield service, account, region, backend


def dump(path: Path, blobs: Path) -> None:
    """Write every kept backend to `path` (bodies of large S3 objects into `blobs`), durably.
    Runs while nothing changes moto (under the request lock, or in a forked child)."""
    state = [(s, a, r, b) for s, a, r, b in backends()]
    write(path, blobs, state)


def write(path: Path, blobs: Path, value: Any) -> None:
    """Pickle `value` to `path` with S3 bodies in `blobs` and queues emptied, then fsync."""
    blobs.mkdir(mode=0o700, exist_ok=True)
    _blobs.folder, _blobs.count = blobs, 0
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
            pickler = pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL)
            pickler.dispatch_table = _dispatch_table()
            pickler.dump(value)
            out.flush()
            os.fsync(out.fileno())
    finally:
        _blobs.folder = None
    tmp.replace(path)


def read(path: Path, blobs: Path) -> Any:
    """What `write` wrote. Raises OSError, pickle.UnpicklingError and what unpickling a
    foreign moto's objects raises (AttributeError, ImportError, TypeError...)."""
    _blobs.folder = blobs
    gc.disable()  # millions of objects, none of them garbage: collecting them all is waste
    try:
        with open(path, "rb") as source:
            return pickle.load(source)
    finally:
        gc.enable()
        _blobs.folder = None


def load(path: Path, blobs: Path) -> None:
    """Put the backends a snapshot holds in place of moto's (which start empty)."""
    install(read(path, blobs))


def install(state: list[tuple[str, str, str, Any]]) -> None:
    from moto.backends import get_backend

    for service, account, region, backend in state:
        regions = get_backend(service)[account]  # type: ignore[call-overload]
        dict.__setitem__(regions, region, backend)  # as moto's own lazy creation does


def _dispatch_table() -> dict[type, Any]:
    from moto.dynamodb.models.dynamo_type import LimitedSizeDict
    from moto.s3.models import FakeKey
    from moto.sqs.models import Queue

    table = dict(copyreg.dispatch_table)
    table[FakeKey] = _reduce_key
    table[Queue] = _reduce_queue
    table[LimitedSizeDict] = _reduce_attributes
    return table


def _reduce_attributes(attrs: dict[str, Any]) -> tuple[Any, ...]:
    """An item's attributes: sized when they were written, so not again one by one as
    they are read back (LimitedSizeDict's check is quadratic in the attributes)."""
    return _rebuild_attributes, (dict(attrs),)


def _rebuild_attributes(attrs: dict[str, Any]) -> Any:
    from moto.dynamodb.models.dynamo_type import LimitedSizeDict

    rebuilt = LimitedSizeDict()
    dict.update(rebuilt, attrs)
    return rebuilt


def _reduce_key(key: Any) -> tuple[Any, ...]:
    """An S3 object: its attributes, and its body inline when small, else in a blob file.
    Read with pread: in a forked child the file's offset is the parent's too."""
    state = {k: v for k, v in key.__dict__.items() if k not in ("_value_buffer", "lock")}
    state["multipart"] = None  # the upload it came from: its parts are disposed of
    buffer = key._value_buffer
    if buffer.closed:  # a key moto disposed of (deleted): nothing to read
        return _rebuild_key, (state, None, b"")
    if not getattr(buffer, "_rolled", False):
        return _rebuild_key, (state, None, buffer._file.getvalue())
    _blobs.count += 1
    name = f"{_blobs.count:08d}"
    with open(os.open(_blobs.folder / name, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as out:
        fd, offset = buffer.fileno(), 0
        while chunk := os.pread(fd, CHUNK_BYTES, offset):
            out.write(chunk)
            offset += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return _rebuild_key, (state, name, b"")


def _rebuild_key(state: dict[str, Any], blob: str | None, inline: bytes) -> Any:
    from moto.s3.models import FakeKey

    key: Any = FakeKey.__new__(FakeKey)
    key.__dict__.update(state)
    key.lock = threading.Lock()
    key._value_buffer = tempfile.SpooledTemporaryFile(max_size=key._max_buffer_size)  # noqa: SIM115 (the object's)
    if blob is None:
        key._value_buffer.write(inline)
    else:
        with open(_blobs.folder / blob, "rb") as body:
            shutil.copyfileobj(body, key._value_buffer, CHUNK_BYTES)
    return key


def _reduce_queue(queue: Any) -> tuple[Any, ...]:
    """An SQS queue's definition, attributes and tags; its messages are hints, not kept (the
    dispatch window sends them again from the jobs table)."""
    state = {k: v for k, v in queue.__dict__.items() if k != "_messages_lock"}
    state.update(_messages=[], _pending_messages=set(), deleted_messages=set())
    return _rebuild_queue, (state,)


def _rebuild_queue(state: dict[str, Any]) -> Any:
    from moto.sqs.models import Queue

    queue: Any = Queue.__new__(Queue)
    queue.__dict__.update(state)
    queue._messages_lock = Condition()
    return queue


def pickled_key(key: Any, blobs: Path) -> bytes:
    """One S3 object as `write` stores it (for the journal: a completed multipart upload)."""
    out = io.BytesIO()
    _blobs.folder, _blobs.count = blobs, len(os.listdir(blobs)) if blobs.is_dir() else 0
    blobs.mkdir(mode=0o700, exist_ok=True)
    try:
        pickler = pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL)
        pickler.dispatch_table = _dispatch_table()
        pickler.dump(key)
    finally:
        _blobs.folder = None
    return out.getvalue()


def unpickled_key(data: bytes, blobs: Path) -> Any:
    _blobs.folder = blobs
    try:
        return pickle.loads(data)
    finally:
        _blobs.folder = None
