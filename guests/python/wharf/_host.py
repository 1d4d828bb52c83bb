"""Where `publish`, `config` and the log go: the Wharf host inside a component, a recording host elsewhere.

Inside a component, `wharf._component` installs an adapter over the bindings
componentize-py generates from `wit/`. Anywhere else (unit tests, a REPL) the
SDK talks to a `RecordingHost`, so a handler runs unchanged outside the host.
"""

from __future__ import annotations

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


@dataclass
class RecordingHost:
    """A stand-in for the Wharf host that records what a handler asks of it.

    It checks publishes the way the host does where that is cheap to mirror
    (subject syntax, the allow-list when one is given, the outbox's message
    count and header values), so a handler's handling of a refused publish
    can be tested too.
    """

    config: Dict[str, str] = field(default_factory=dict)
    #: Subjects the handler may publish to, with NATS wildcards; `None` allows every subject.
    allow: Optional[Sequence[str]] = None
    max_outbox_messages: int = 100
    handler_name: str = "test"
    published: List[Published] = field(default_factory=list)
    logs: List[LogLine] = field(default_factory=list)

    def publish(self, subject: str, payload: bytes, headers: HeaderList) -> None:
        problem = subject_problem(subject)
        if problem is not None:
            raise InvalidPublish(problem)
        if self.allow is not None and not any(subject_matches(p, subject) for p in self.allow):
            raise PublishNotAllowed(
                f'subject "{subject}" is not in handler "{self.handler_name}"\'s publish allow-list'
            )
        if len(self.published) >= self.max_outbox_messages:
            raise OutboxFull(f"at most {self.max_outbox_messages} messages per delivery")
        for name, values in headers:
            if not name or any(c in name for c in ":\r\n ") or not name.isascii():
                raise InvalidPublish(f'invalid header name "{name}"')
            for value in values:
                if "\r" in value or "\n" in value:
                    raise InvalidPublish(f'header "{name}" has a line break in its value')
        grouped: Dict[str, List[str]] = {}
        for name, values in headers:
            grouped.setdefault(name, []).extend(values)
        self.published.append(Published(subject, bytes(payload), grouped))

    def get_config(self, key: str) -> Optional[str]:
        return self.config.get(key)

    def log(self, level: str, message: str) -> None:
        self.logs.append(LogLine(level, message))

    def clear(self) -> None:
        """Forgets what was published and logged so far."""
        self.published.clear()
        self.logs.clear()


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
