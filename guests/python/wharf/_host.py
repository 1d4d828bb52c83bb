"""Where `publish`, `config` and the log go: the Wharf host inside a component, a recording host elsewhere.

Inside a component, `wharf._component` installs an adapter over the bindings
componentize-py generates from `wit/`. Anywhere else (unit tests, a REPL) the
SDK talks to a `RecordingHost`, so a handler runs unchanged outside the host.
"""

from __future__ import annotations

import json as _json
import unicodedata
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ._errors import InvalidPublish, OutboxFull, PublishNotAllowed

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


@dataclass
class RecordingHost:
    """A stand-in for the Wharf host that records what a handler asks of it.

    Its defaults are the host's for a handler whose `wharf.toml` entry sets
    nothing: no subject may be published to, no `Nats-*` header other than
    `Nats-Msg-Id` may be set, no config value exists, and the outbox takes
    100 messages and 1 MiB. It checks publishes the way the host does where
    that is cheap to mirror (subject syntax, the allow-list, reserved
    headers, the outbox's limits, header values), so a handler that passes
    its tests is not refused by the host, and its handling of a refused
    publish can be tested too.
    """

    config: Dict[str, str] = field(default_factory=dict)
    #: Subjects the handler may publish to, with NATS wildcards: the handler's
    #: `publish` setting, empty unless given, as in the host.
    allow: Sequence[str] = field(default_factory=list)
    #: `Nats-*` headers other than `Nats-Msg-Id` the handler may set: its `allow_headers` setting.
    allow_headers: Sequence[str] = field(default_factory=list)
    max_outbox_messages: int = MAX_OUTBOX_MESSAGES
    #: Payloads, subjects and headers, the host's own included, as the host counts them.
    max_outbox_bytes: int = MAX_OUTBOX_BYTES
    handler_name: str = "test"
    published: List[Published] = field(default_factory=list)
    logs: List[LogLine] = field(default_factory=list)
    outbox_bytes: int = 0

    def publish(self, subject: str, payload: bytes, headers: HeaderList) -> None:
        problem = subject_problem(subject)
        if problem is not None:
            raise InvalidPublish(problem)
        if not self.allows(subject):
            raise PublishNotAllowed(
                f'subject "{subject}" is not in handler "{self.handler_name}"\'s publish allow-list '
                f"{_json.dumps(list(self.allow))} (its publish setting in wharf.toml; tests pass allow=[...])"
            )
        if len(self.published) >= self.max_outbox_messages:
            raise OutboxFull(f"at most {self.max_outbox_messages} messages per delivery")
        pairs = self._check_headers(headers)
        size = len(subject.encode()) + len(payload) + header_wire_size(pairs) + TEST_HOST_HEADER_BYTES
        if self.outbox_bytes + size > self.max_outbox_bytes:
            raise OutboxFull(f"at most {self.max_outbox_bytes} bytes per delivery, the host's headers included")
        self.outbox_bytes += size
        grouped: Dict[str, List[str]] = {}
        for name, values in headers:
            grouped.setdefault(name, []).extend(values)
        self.published.append(Published(subject, bytes(payload), grouped))

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

    def clear(self) -> None:
        """Forgets what was published and logged so far, and empties the outbox."""
        self.published.clear()
        self.logs.clear()
        self.outbox_bytes = 0


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
