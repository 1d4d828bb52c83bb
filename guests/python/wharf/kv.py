"""Key-value state, in the JetStream key-value buckets the handler's config names.

A handler's `wharf.toml` entry names its buckets and their modes:

    [handler.kv]
    accounts = "read-write"
    prices = "read"

Reads go to the bucket when they are made and see the delivery's own staged
writes. Writes are staged, like `publish`: the host applies them only when
the message succeeds, together with its outputs, exactly once in effect; a
retried, rejected or trapped delivery applies none.

    from wharf import kv

    @wharf.handler
    def handle(msg):
        totals = kv.bucket("totals")
        account = msg.header("account")
        entry = totals.get_json(account)
        if entry is None:
            totals.create_json(account, msg.json()["cents"])
        else:
            totals.put_json(account, entry.value + msg.json()["cents"], expected=entry.revision)

A delivery may stage any number of plain writes but at most one conditional
one (`put` or `delete` with `expected`, or `create`). If its condition no
longer holds when the message succeeds (another delivery wrote the key
first), the host applies nothing of this delivery and runs the handler again
on fresh state, up to 16 times, before the attempt counts as failed.

A refused call raises a `KvError`. Left uncaught, `KvUnavailable` retries
the message (after the handler's backoff) and the others reject it with
their text.

Values are bytes; text is stored as UTF-8.
"""

from __future__ import annotations

import json as _json
from dataclasses import dataclass
from typing import Any, Optional, Union

from . import _host
from ._errors import KvDenied, KvError, KvInvalid, KvLimit, KvUnavailable, Reject
from ._message import to_bytes

__all__ = [
    "Bucket",
    "Entry",
    "KvDenied",
    "KvError",
    "KvInvalid",
    "KvLimit",
    "KvUnavailable",
    "bucket",
]

#: A value as `put` and `create` take it: bytes, or text stored as UTF-8.
Value = Union[bytes, bytearray, memoryview, str]


@dataclass(frozen=True)
class Entry:
    """A key's value and the revision that wrote it.

    `get` gives the value as bytes, `get_json` decoded. `revision` is the
    key's sequence in the bucket's stream, which a conditional write
    (`put(..., expected=...)`, `delete(..., expected=...)`) may expect; for
    a key this delivery has staged a write for, it is the revision that
    write's condition names (the key's revision before this delivery), or 0
    when the write has none.
    """

    value: Any
    revision: int

    def text(self) -> str:
        """The value as UTF-8 text; a value that is not UTF-8 raises `Reject`."""
        try:
            return bytes(self.value).decode("utf-8")
        except UnicodeDecodeError as e:
            raise Reject(f"stored value is not UTF-8: {e}") from None

    def json(self) -> Any:
        """The value parsed as JSON; malformed JSON raises `Reject`."""
        return _decode(self.value)


def bucket(name: str) -> "Bucket":
    """The bucket `name`, for a handler of one message at a time.

    Nothing is checked until a call: the host answers each one against the
    handler's `kv` table, raising `KvDenied` for a bucket it does not name.
    In a batch handler, open buckets through the message: `msg.bucket(name)`.
    """
    if _host.current().in_batch:
        raise RuntimeError(
            "wharf.kv.bucket is for handlers of one message at a time; in a batch handler, "
            "open the bucket through the message: msg.bucket(name)"
        )
    return Bucket(name)


class Bucket:
    """One key-value bucket, as a delivery (or, in a batch, one message) reaches it."""

    __slots__ = ("_name", "_index")

    def __init__(self, name: str, index: Optional[int] = None):
        if not isinstance(name, str):
            raise TypeError(f"a bucket name is str, not {type(name).__name__}")
        self._name = name
        self._index = index

    @property
    def name(self) -> str:
        """The bucket's name."""
        return self._name

    def get(self, key: str) -> Optional[Entry]:
        """The key's value (bytes) and revision, or None when it has none (never written, deleted or purged).

        A key this delivery has staged a write for gives the staged value
        (None after a staged delete).
        """
        found = _host.current().read_key(self._name, _key(key), index=self._index)
        return None if found is None else Entry(bytes(found[0]), found[1])

    def get_json(self, key: str) -> Optional[Entry]:
        """The key's value decoded from JSON, with its revision, or None; a value that is not JSON raises `Reject`."""
        found = self.get(key)
        return None if found is None else Entry(_decode(found.value), found.revision)

    def put(self, key: str, value: Value, expected: Optional[int] = None) -> None:
        """Stages setting `key` to `value` (bytes, or text as UTF-8).

        With `expected`, the write applies only if the key's revision is
        still `expected` when the message succeeds (the revision a `get`
        returned; 0 for a key never written); otherwise the host applies
        nothing of this delivery and runs the handler again on fresh state.
        """
        _host.current().stage_put(self._name, _key(key), to_bytes(value), _revision(expected), index=self._index)

    def create(self, key: str, value: Value) -> None:
        """Stages creating `key` with `value`, only if it has no value (never written, or deleted) when the message succeeds.

        Otherwise, as for `put` with `expected`, nothing of this delivery is
        applied and the handler runs again. This is the delivery's one
        conditional write.
        """
        _host.current().stage_create(self._name, _key(key), to_bytes(value), index=self._index)

    def delete(self, key: str, expected: Optional[int] = None) -> None:
        """Stages deleting `key`; with `expected`, only if its revision is still `expected` when the message succeeds."""
        _host.current().stage_delete(self._name, _key(key), _revision(expected), index=self._index)

    def put_json(self, key: str, value: Any, expected: Optional[int] = None) -> None:
        """Stages setting `key` to `value` as compact JSON (as `put`); a value `json.dumps` cannot encode raises `KvInvalid`."""
        self.put(key, _encode(value), expected=expected)

    def create_json(self, key: str, value: Any) -> None:
        """Stages creating `key` with `value` as compact JSON (as `create`)."""
        self.create(key, _encode(value))

    def __repr__(self) -> str:
        return f"Bucket({self._name!r})"


def _key(key: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"a key is str, not {type(key).__name__}")
    return key


def _revision(expected: Optional[int]) -> Optional[int]:
    if expected is None:
        return None
    if isinstance(expected, bool) or not isinstance(expected, int):
        raise TypeError(f"expected is a revision (int), not {type(expected).__name__}")
    if not 0 <= expected < 2**64:
        raise ValueError(f"a revision is between 0 and 2**64 - 1, got {expected}")
    return expected


def _encode(value: Any) -> str:
    try:
        return _json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise KvInvalid(f"the value cannot be encoded as JSON: {e}") from None


def _decode(value: bytes) -> Any:
    try:
        return _json.loads(bytes(value).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise Reject(f"stored value is not valid JSON for this handler: {e}") from None
