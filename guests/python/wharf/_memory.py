"""Key-value state in memory, for the recording host: buckets with revisions, and one delivery's staged writes.

Staging follows the rules of the host's `kv` import
(`runtime/src/sandbox/host/kv.rs`) and committing those of its commit
(`runtime/src/effects/kv.rs`), with the host's error texts, so that a handler
tested here meets the same answers in the host.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Set, Tuple, Union

from ._errors import KvDenied, KvInvalid, KvLimit, KvUnavailable

#: The host's defaults for a handler that does not set them (`runtime/src/config/mod.rs`, `defaults`).
MAX_KV_WRITES = 64
MAX_KV_WRITE_BYTES = 256 * 1024

#: Bucket modes, as the handler's `kv` table spells them.
MODES = ("read", "read-write")

#: A staged write's condition: none, a revision the key must still have, or no value.
ALWAYS = "always"
ABSENT = "absent"
Condition = Union[str, int]


@dataclass(frozen=True)
class Write:
    """One key-value write a handler staged, as a test host recorded it.

    `value` is None for a delete. `expected` is the revision the write
    expects (`put(..., expected=r)`, `delete(..., expected=r)`), and `create`
    is True for a write that expects the key to have no value (`create`);
    a write with neither applies whatever the key holds.
    """

    bucket: str
    key: str
    value: Optional[bytes]
    expected: Optional[int] = None
    create: bool = False


def is_valid_key(key: str) -> bool:
    """JetStream key-value's key grammar: letters, digits and `-/_=.`, not starting or ending with `.`, no empty token."""
    return (
        0 < len(key.encode("utf-8")) <= 1024
        and not key.startswith(".")
        and not key.endswith(".")
        and ".." not in key
        and all((c.isascii() and c.isalnum()) or c in "-/_=." for c in key)
    )


class Buckets:
    """Every bucket of a test host: each key's last write (a value or a delete marker) at its revision."""

    def __init__(self) -> None:
        # bucket -> (last sequence, key -> (revision, value or None))
        self._buckets: Dict[str, Tuple[int, Dict[str, Tuple[int, Optional[bytes]]]]] = {}

    def get(self, bucket: str, key: str) -> Optional[Tuple[bytes, int]]:
        """The key's value and revision, or None when it has none."""
        last = self._buckets.get(bucket, (0, {}))[1].get(key)
        if last is None or last[1] is None:
            return None
        return last[1], last[0]

    def write(self, bucket: str, key: str, value: Optional[bytes]) -> int:
        """Writes `key` (a delete when `value` is None) at the bucket's next revision, and returns it."""
        sequence, keys = self._buckets.get(bucket, (0, {}))
        sequence += 1
        keys[key] = (sequence, value)
        self._buckets[bucket] = (sequence, keys)
        return sequence

    def keys(self, bucket: str) -> List[str]:
        """The keys that hold a value, sorted."""
        return sorted(k for k, (_, v) in self._buckets.get(bucket, (0, {}))[1].items() if v is not None)

    def _holds(self, write: Write) -> bool:
        last = self._buckets.get(write.bucket, (0, {}))[1].get(write.key)
        if write.create:
            return last is None or last[1] is None
        if write.expected is not None:
            return (0 if last is None else last[0]) == write.expected
        return True

    def apply(self, writes: List[Write]) -> Optional[str]:
        """Applies one delivery's writes as the host commits them, or returns why not.

        The conditional write goes first; if its condition no longer holds
        (a revision condition when the key's last write, a delete included,
        has another revision, 0 meaning never written; a create when the key
        holds a value), nothing is applied and the host's conflict text comes
        back. The others follow in the order they were staged.
        """
        conditional = [w for w in writes if w.create or w.expected is not None]
        plain = [w for w in writes if not (w.create or w.expected is not None)]
        for w in conditional:
            if not self._holds(w):
                wanted = "no value" if w.create else f"revision {w.expected}"
                return f'key "{w.key}" in bucket "{w.bucket}" moved on; the write expected {wanted}'
        for w in conditional + plain:
            self.write(w.bucket, w.key, w.value)
        return None


@dataclass
class KvSettings:
    """The handler's key-value settings in `wharf.toml`, as a test host applies them."""

    handler_name: str = "test"
    #: Bucket name to mode: the handler's `kv` table, empty unless given, as in the host.
    buckets: Mapping[str, str] = None  # type: ignore[assignment]
    max_kv_writes: int = MAX_KV_WRITES
    max_kv_write_bytes: int = MAX_KV_WRITE_BYTES
    #: Buckets whose reads fail with `KvUnavailable`, as when the server cannot answer.
    unavailable: Set[str] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.buckets = check_buckets(self.buckets)
        self.unavailable = set(self.unavailable or ())


def check_buckets(buckets: Optional[Mapping[str, str]]) -> Dict[str, str]:
    """A `kv` table as a test host takes it: bucket name to `"read"` or `"read-write"`."""
    if buckets is None:
        return {}
    if not isinstance(buckets, Mapping):
        raise TypeError('buckets maps bucket names to "read" or "read-write": buckets={"accounts": "read-write"}')
    for name, mode in buckets.items():
        if mode not in MODES:
            raise ValueError(f'bucket "{name}": unknown mode {mode!r}; expected "read" or "read-write"')
    return dict(buckets)


class _Staged:
    __slots__ = ("bucket", "key", "value", "condition", "base")

    def __init__(self, bucket: str, key: str, value: Optional[bytes], condition: Condition, base: Optional[int]):
        self.bucket = bucket
        self.key = key
        self.value = value
        self.condition = condition
        self.base = base


class Staging:
    """The writes one delivery (or one message of a batch) staged, in the order first staged."""

    def __init__(self) -> None:
        self._staged: List[_Staged] = []
        self._bytes = 0

    @staticmethod
    def _check(settings: KvSettings, bucket: str, key: str, write: bool) -> None:
        mode = settings.buckets.get(bucket)
        if mode is None:
            raise KvDenied(f'bucket "{bucket}" is not in handler "{settings.handler_name}"\'s `kv` table')
        if mode == "read" and write:
            raise KvDenied(f'bucket "{bucket}" is read-only for handler "{settings.handler_name}"')
        if not is_valid_key(key):
            raise KvInvalid(
                f'"{_escape_controls(_head(key, 200, "…"))}" is not a valid key: letters, digits and '
                "-/_=. only, not starting or ending with '.'"
            )

    def _find(self, bucket: str, key: str) -> Optional[int]:
        for i, s in enumerate(self._staged):
            if s.bucket == bucket and s.key == key:
                return i
        return None

    def get(self, settings: KvSettings, buckets: Buckets, bucket: str, key: str) -> Optional[Tuple[bytes, int]]:
        """The key as this delivery sees it: its own staged write, or the bucket's."""
        self._check(settings, bucket, key, False)
        i = self._find(bucket, key)
        if i is not None:
            s = self._staged[i]
            return None if s.value is None else (s.value, s.base or 0)
        if bucket in settings.unavailable:
            raise KvUnavailable(
                f'reading "{key}" from bucket "{bucket}": the test host has this bucket unavailable'
            )
        return buckets.get(bucket, key)

    def stage(self, settings: KvSettings, bucket: str, key: str, value: Optional[bytes], condition: Condition) -> None:
        """Stages a write, folding it into an earlier write of the same key."""
        self._check(settings, bucket, key, True)
        size = len(key) + (0 if value is None else len(value))
        i = self._find(bucket, key)
        previous = 0
        if i is not None:
            s = self._staged[i]
            previous = len(s.key) + (0 if s.value is None else len(s.value))
        if self._bytes - previous + size > settings.max_kv_write_bytes:
            raise KvLimit(f"at most {settings.max_kv_write_bytes} bytes of keys and values staged per delivery")
        if i is None and len(self._staged) >= settings.max_kv_writes:
            raise KvLimit(f"at most {settings.max_kv_writes} keys written per delivery")
        if i is not None:
            first = self._staged[i].condition
            # The key's condition is about its state before this delivery; a
            # later write may repeat it but not change it.
            if condition == ALWAYS:
                condition = first
            elif first != ALWAYS and first != condition:
                raise KvInvalid(
                    f'key "{key}" was already written in this delivery under another condition; '
                    "a later write may repeat it or give none"
                )
            self._check_one_condition(i, condition)
            s = self._staged[i]
            if isinstance(condition, int):
                s.base = condition
            s.value = value
            s.condition = condition
        else:
            self._check_one_condition(None, condition)
            base = condition if isinstance(condition, int) else None
            self._staged.append(_Staged(bucket, key, value, condition, base))
        self._bytes = self._bytes - previous + size

    def _check_one_condition(self, at: Optional[int], condition: Condition) -> None:
        """At most one key per delivery carries a condition."""
        if condition == ALWAYS:
            return
        for i, s in enumerate(self._staged):
            if i != at and s.condition != ALWAYS:
                raise KvLimit(
                    "one conditional write per delivery (put or delete with `expected`, or create); "
                    f'key "{s.key}" in bucket "{s.bucket}" already has one'
                )

    def writes(self) -> List[Write]:
        """The staged writes, in the order first staged."""
        return [
            Write(
                s.bucket,
                s.key,
                s.value,
                expected=s.condition if isinstance(s.condition, int) else None,
                create=s.condition == ABSENT,
            )
            for s in self._staged
        ]


def _head(s: str, limit: int, marker: str) -> str:
    """At most the first `limit` bytes of `s` (UTF-8), followed by `marker` when cut."""
    data = s.encode("utf-8")
    if len(data) <= limit:
        return s
    cut = data[: max(0, limit - len(marker.encode("utf-8")))].decode("utf-8", errors="ignore")
    return cut + marker


def _escape_controls(s: str) -> str:
    """Control characters escaped as the host (Rust's `char::escape_default`) writes them."""
    out = []
    for c in s:
        if unicodedata.category(c) != "Cc":
            out.append(c)
        elif c in "\t\r\n":
            out.append({"\t": "\\t", "\r": "\\r", "\n": "\\n"}[c])
        else:
            out.append(f"\\u{{{ord(c):x}}}")
    return "".join(out)
