"""Where `publish`, `config`, the log and key-value calls go: the Wharf host inside a component, a recording host elsewhere.

Inside a component, `wharf._component` (the `handler` world) or
`wharf._batch_component` (the `batch-handler` world) installs an adapter over
the bindings componentize-py generates from `wit/0.2.0`. Anywhere else (unit
tests, a REPL) the SDK talks to a `RecordingHost`, so a handler runs
unchanged outside the host.

Every host has the same calls: `publish`, `get_config`, `log`, and for
key-value state `read_key`, `stage_put`, `stage_create` and `stage_delete`.
Those a message makes take an `index`: None for a handler of one message at
a time, the message's place in its batch for a batch handler; `in_batch`
says which kind is running.
"""

from __future__ import annotations

import json as _json
import unicodedata
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ._errors import InvalidPublish, OutboxFull, PublishNotAllowed
from ._memory import (
    ABSENT,
    ALWAYS,
    MAX_KV_WRITE_BYTES,
    MAX_KV_WRITES,
    Buckets,
    KvSettings,
    Staging,
    Write,
)

#: Log levels, in the order of the WIT `level` enum.
LEVELS = ("trace", "debug", "info", "warn", "error")

#: Headers as the host takes them: each name once, with all of its values in order.
HeaderList = List[Tuple[str, List[str]]]


@dataclass(frozen=True)
class Published:
    """One message a handler queued with `publish`, as a test host recorded it."""

    subject: str
    payload: bytes
    headers: Dict[str, List[str]]

    def header(self, name: str) -> Optional[str]:
        """The first value of a header, matched without regard to case."""
        for key, values in self.headers.items():
            if key.lower() == name.lower() and values:
                return values[0]
        return None

    def text(self) -> str:
        """The payload decoded as UTF-8."""
        return self.payload.decode("utf-8")

    def json(self):
        """The payload parsed as JSON."""
        import json

        return json.loads(self.payload)


@dataclass(frozen=True)
class LogLine:
    """One line a handler wrote to the host's log, as a test host recorded it."""

    level: str
    message: str


#: The host's defaults for a handler that does not set them (`runtime/src/config/mod.rs`, `defaults`).
MAX_OUTBOX_MESSAGES = 100
MAX_OUTBOX_BYTES = 1024 * 1024

#: Subject roots no guest may ever publish to, allowed or not.
FORBIDDEN_ROOTS = ("$JS", "$JSC", "$SYS", "$NRG")


def host_header_bytes(stream: str, consumer: str) -> int:
    """What the headers the host adds to one output take on the wire, at most.

    The host counts them against `max_outbox_bytes` when the guest publishes:
    `Nats-Msg-Id` (`wharf:<stream>:<consumer>:<sequence>:<index>` with the
    largest sequence and index), `Wharf-Source-Stream`, `Wharf-Source-Sequence`,
    `traceparent`, the longest `tracestate` it carries over (512 bytes), and
    the `NATS/1.0` header line.
    """
    msg_id = f"wharf:{stream}:{consumer}:{2**64 - 1}:99999"
    headers = [
        ("Nats-Msg-Id", msg_id),
        ("Wharf-Source-Stream", stream),
        ("Wharf-Source-Sequence", str(2**64 - 1)),
        ("traceparent", "00-" * 19),
    ]
    return header_wire_size(headers) + 512 + len("tracestate") + 4


def header_wire_size(headers: Sequence[Tuple[str, str]]) -> int:
    """Bytes a header block takes on the wire, as the server counts them against `max_payload`."""
    return len("NATS/1.0\r\n\r\n") + sum(len(n.encode()) + 2 + len(v.encode()) + 2 for n, v in headers)


#: What the host adds to each output of a handler reading stream `TEST` through
#: consumer `test` (the names `Message.for_test` gives a delivery).
TEST_HOST_HEADER_BYTES = host_header_bytes("TEST", "test")


class _Outbox:
    """What one message staged: its outputs and its key-value writes."""

    def __init__(self, stream: str = "TEST", consumer: str = "test"):
        self.published: List[Published] = []
        self.bytes = 0
        self.host_header_bytes = host_header_bytes(stream, consumer)
        self.staging = Staging()


class RecordingHost:
    """A stand-in for the Wharf host that records what a handler asks of it.

    Its defaults are the host's for a handler whose `wharf.toml` entry sets
    nothing: no subject may be published to, no `Nats-*` header other than
    `Nats-Msg-Id` may be set, no config value exists, no key-value bucket may
    be reached, the outbox takes 100 messages and 1 MiB, and a delivery may
    stage 64 key-value writes and 256 KiB. It checks publishes the way the
    host does where that is cheap to mirror (subject syntax, the allow-list,
    reserved headers, the outbox's limits, header values), and key-value
    calls by the host's rules (the `kv` table and its modes, the key
    grammar, the limits, one conditional write per delivery), so a handler
    that passes its tests is not refused by the host, and its handling of a
    refusal can be tested too.

    Its buckets (`kv_state`) keep their state from one delivery to the
    next; a delivery's writes are staged until it is committed.
    """

    def __init__(
        self,
        config: Optional[Mapping[str, str]] = None,
        allow: Optional[Sequence[str]] = None,
        allow_headers: Optional[Sequence[str]] = None,
        max_outbox_messages: int = MAX_OUTBOX_MESSAGES,
        max_outbox_bytes: int = MAX_OUTBOX_BYTES,
        handler_name: str = "test",
        *,
        buckets: Optional[Mapping[str, str]] = None,
        max_kv_writes: int = MAX_KV_WRITES,
        max_kv_write_bytes: int = MAX_KV_WRITE_BYTES,
        unavailable: Sequence[str] = (),
    ):
        self.config: Dict[str, str] = dict(config or {})
        #: Subjects the handler may publish to, with NATS wildcards: the handler's
        #: `publish` setting, empty unless given, as in the host.
        self.allow: List[str] = list(allow or [])
        #: `Nats-*` headers other than `Nats-Msg-Id` the handler may set: its `allow_headers` setting.
        self.allow_headers: List[str] = list(allow_headers or [])
        self.max_outbox_messages = max_outbox_messages
        #: Payloads, subjects and headers, the host's own included, as the host counts them.
        self.max_outbox_bytes = max_outbox_bytes
        self.handler_name = handler_name
        self.kv_settings = KvSettings(
            handler_name=handler_name,
            buckets=buckets,
            max_kv_writes=max_kv_writes,
            max_kv_write_bytes=max_kv_write_bytes,
            unavailable=set(unavailable),
        )
        #: The buckets' state, kept from one delivery to the next.
        self.kv_state = Buckets()
        self.logs: List[LogLine] = []
        self._outbox = _Outbox()
        #: One outbox per message while a batch runs, else None.
        self._batch: Optional[List[_Outbox]] = None

    @property
    def in_batch(self) -> bool:
        """Whether a batch handler is running: the single-message calls are refused."""
        return self._batch is not None

    @property
    def published(self) -> List[Published]:
        """What was published so far (by a handler of one message at a time)."""
        return self._outbox.published

    @property
    def outbox_bytes(self) -> int:
        """Bytes in the outbox so far, counted as the host counts them."""
        return self._outbox.bytes

    def _target(self, index: Optional[int]) -> _Outbox:
        if index is None:
            return self._outbox
        if self._batch is None:
            raise RuntimeError(f"message {index} of a batch, but no batch is running")
        return self._batch[index]

    def publish(self, subject: str, payload: bytes, headers: HeaderList, index: Optional[int] = None) -> None:
        outbox = self._target(index)
        problem = subject_problem(subject)
        if problem is not None:
            raise InvalidPublish(problem)
        if not self.allows(subject):
            raise PublishNotAllowed(
                f'subject "{subject}" is not in handler "{self.handler_name}"\'s publish allow-list '
                f"{_json.dumps(list(self.allow))} (its publish setting in wharf.toml; tests pass allow=[...])"
            )
        if len(outbox.published) >= self.max_outbox_messages:
            raise OutboxFull(f"at most {self.max_outbox_messages} messages per delivery")
        pairs = self._check_headers(headers)
        size = len(subject.encode()) + len(payload) + header_wire_size(pairs) + outbox.host_header_bytes
        if outbox.bytes + size > self.max_outbox_bytes:
            raise OutboxFull(f"at most {self.max_outbox_bytes} bytes per delivery, the host's headers included")
        outbox.bytes += size
        grouped: Dict[str, List[str]] = {}
        for name, values in headers:
            grouped.setdefault(name, []).extend(values)
        outbox.published.append(Published(subject, bytes(payload), grouped))

    def allows(self, subject: str) -> bool:
        """Whether the allow-list lets the handler publish to `subject`, as the host decides it.

        Wildcards never reach subjects under `$…` or `_INBOX…` (only a literal
        entry does), and `$JS`, `$JSC`, `$SYS` and `$NRG` are never allowed.
        """
        root = subject.split(".")[0]
        if root in FORBIDDEN_ROOTS:
            return False
        if root.startswith("$") or root.startswith("_INBOX"):
            return subject in self.allow
        return any(subject_matches(p, subject) for p in self.allow)

    def _check_headers(self, headers: HeaderList) -> List[Tuple[str, str]]:
        """The header policy of the host: the (name, value) pairs, or the refusal it would raise."""
        pairs: List[Tuple[str, str]] = []
        msg_id_seen = False
        for name, values in headers:
            lower = name.lower()
            if lower.startswith("wharf-"):
                raise PublishNotAllowed(f'header "{name}" is reserved: Wharf-* headers are set by the host')
            if lower == "nats-msg-id":
                if len(values) == 1 and values[0].lstrip().lower().startswith("wharf"):
                    raise PublishNotAllowed('a Nats-Msg-Id starting with "wharf" is the host\'s: choose another id')
                if len(values) != 1 or not values[0].strip() or msg_id_seen:
                    raise InvalidPublish('header "Nats-Msg-Id" must have exactly one non-empty value')
                msg_id_seen = True
                # The host stores the id under its canonical name.
                pairs.append(("Nats-Msg-Id", values[0]))
                continue
            if "nats-" in lower and not any(a.lower() == lower for a in self.allow_headers):
                raise PublishNotAllowed(
                    f'header "{name}" changes what JetStream does with messages; '
                    "the handler's `allow_headers` must name it"
                )
            if not name:
                raise InvalidPublish("a header needs a name")
            if any(c in name for c in ":\r\n ") or not name.isascii() or not name.isprintable():
                raise InvalidPublish(f'invalid header name "{name}"')
            for value in values:
                if any(unicodedata.category(c) == "Cc" and c != "\t" for c in value):
                    raise InvalidPublish(f'header "{name}" has a control character in its value')
                pairs.append((name, value))
        return pairs

    def get_config(self, key: str) -> Optional[str]:
        return self.config.get(key)

    def log(self, level: str, message: str) -> None:
        self.logs.append(LogLine(level, message))

    def read_key(self, bucket: str, key: str, index: Optional[int] = None) -> Optional[Tuple[bytes, int]]:
        return self._target(index).staging.get(self.kv_settings, self.kv_state, bucket, key)

    def stage_put(self, bucket: str, key: str, value: bytes, expected: Optional[int], index: Optional[int] = None) -> None:
        self._target(index).staging.stage(self.kv_settings, bucket, key, value, ALWAYS if expected is None else expected)

    def stage_create(self, bucket: str, key: str, value: bytes, index: Optional[int] = None) -> None:
        self._target(index).staging.stage(self.kv_settings, bucket, key, value, ABSENT)

    def stage_delete(self, bucket: str, key: str, expected: Optional[int], index: Optional[int] = None) -> None:
        self._target(index).staging.stage(self.kv_settings, bucket, key, None, ALWAYS if expected is None else expected)

    def staged_writes(self) -> List[Write]:
        """The key-value writes staged so far (by a handler of one message at a time), not yet applied."""
        return self._outbox.staging.writes()

    def commit(self) -> Optional[str]:
        """Applies the staged key-value writes as the host does when a delivery succeeds, and starts a new staging.

        Returns None, or the conflict when a conditional write's condition no
        longer holds (then nothing is applied).
        """
        writes = self._outbox.staging.writes()
        self._outbox.staging = Staging()
        return self.kv_state.apply(writes)

    def discard(self) -> None:
        """Drops the staged key-value writes, as the host does when a delivery does not succeed."""
        self._outbox.staging = Staging()

    def clear(self) -> None:
        """Forgets what was published and logged so far, empties the outbox and drops staged writes."""
        self._outbox = _Outbox()
        self.logs.clear()

    def begin(self, msg=None) -> None:
        """Starts a delivery of `msg`: an empty outbox, sized for its stream and consumer, and no staged writes."""
        self._outbox = _Outbox() if msg is None else _Outbox(msg.stream, msg.consumer)

    def begin_batch(self, messages) -> None:
        """Starts a batch: one empty outbox per message."""
        self._batch = [_Outbox(m.stream, m.consumer) for m in messages]

    def end_batch(self) -> List[_Outbox]:
        """Ends a batch, returning each message's outbox."""
        batch, self._batch = self._batch or [], None
        return batch


def subject_problem(subject: str) -> Optional[str]:
    """Why `subject` is not a literal NATS subject, in the host's words, or None."""
    if not subject:
        return "subject must not be empty"
    for token in subject.split("."):
        if not token:
            return f'"{subject}" has an empty token'
        if any(c.isspace() or not c.isprintable() for c in token):
            return f'"{subject}" contains whitespace'
        if "*" in token or ">" in token:
            return f'"{subject}" must be a literal subject, without wildcards'
    return None


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether `subject` matches `pattern` with NATS wildcards (`*` one token, `>` the rest)."""
    p = pattern.split(".")
    s = subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s):
            return False
        if token != "*" and token != s[i]:
            return False
    return len(p) == len(s)


#: Where publishes and log lines go outside a component when no test host is installed.
_default = RecordingHost()
_current = _default


def current():
    """The host that `publish`, `config` and the log talk to right now."""
    return _current


def install(host):
    """Makes `host` the current host and returns the one it replaces."""
    global _current
    previous = _current
    _current = host
    return previous
