"""One delivery of one message, as a handler sees it."""

from __future__ import annotations

import datetime
import json as _json
from types import SimpleNamespace
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from ._errors import Reject

#: Headers as a handler may give them: a mapping of name to one value or a
#: list of values, or (name, value) pairs where a name given twice keeps both.
HeadersLike = Union[Mapping[str, Union[str, Iterable[str]]], Iterable[Tuple[str, str]], None]


class Message:
    """One delivery of one message: payload, headers and delivery metadata.

    The host builds it for every delivery; `Message.for_test` builds one by
    hand for unit tests.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw):
        # `raw` is the WIT `message` record (or anything shaped like it):
        # subject, payload, headers as records of name and values, and delivery.
        self._raw = raw

    @classmethod
    def for_test(
        cls,
        subject: str,
        payload: Union[bytes, bytearray, str] = b"",
        headers: HeadersLike = None,
        *,
        attempt: int = 1,
        max_attempts: int = 1,
        stream: str = "TEST",
        consumer: str = "test",
        stream_sequence: int = 1,
        consumer_sequence: int = 1,
        published_at_nanos: int = 0,
    ) -> "Message":
        """Builds a message by hand, for unit-testing a handler without the host.

            msg = Message.for_test("orders.new", b'{"id": "A-1"}', {"Tenant": "acme"}, attempt=2, max_attempts=4)
        """
        delivery = SimpleNamespace(
            stream=stream,
            consumer=consumer,
            stream_sequence=stream_sequence,
            consumer_sequence=consumer_sequence,
            attempt=attempt,
            max_attempts=max_attempts,
            published_at_nanos=published_at_nanos,
        )
        raw = SimpleNamespace(
            subject=subject,
            payload=to_bytes(payload),
            headers=[SimpleNamespace(name=n, values=v) for n, v in group_headers(headers)],
            delivery=delivery,
        )
        return cls(raw)

    def with_header(self, name: str, value: str) -> "Message":
        """A copy with one more header value, for unit tests built with `for_test`."""
        pairs = [(h.name, v) for h in self._raw.headers for v in h.values]
        pairs.append((name, value))
        raw = SimpleNamespace(
            subject=self._raw.subject,
            payload=self._raw.payload,
            headers=[SimpleNamespace(name=n, values=v) for n, v in group_headers(pairs)],
            delivery=self._raw.delivery,
        )
        return Message(raw)

    @property
    def subject(self) -> str:
        """The subject the message was published to."""
        return self._raw.subject

    @property
    def payload(self) -> bytes:
        """The raw payload."""
        return self._raw.payload

    def text(self) -> str:
        """The payload as UTF-8 text; a payload that is not UTF-8 raises `Reject`."""
        try:
            return bytes(self._raw.payload).decode("utf-8")
        except UnicodeDecodeError as e:
            raise Reject(f"payload is not UTF-8: {e}") from None

    def json(self) -> Any:
        """The payload parsed as JSON; malformed JSON raises `Reject`."""
        try:
            return _json.loads(self.text())
        except Reject:
            raise
        except ValueError as e:
            raise Reject(f"payload is not valid JSON for this handler: {e}") from None

    def header(self, name: str) -> Optional[str]:
        """The first value of a header, matched without regard to case, or None."""
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> List[str]:
        """Every value of a header, matched without regard to case, in the order they were sent."""
        wanted = name.lower()
        return [v for h in self._raw.headers if h.name.lower() == wanted for v in h.values]

    @property
    def headers(self) -> Dict[str, List[str]]:
        """Every header: name (as sent) to all of its values, in order."""
        out: Dict[str, List[str]] = {}
        for h in self._raw.headers:
            out.setdefault(h.name, []).extend(h.values)
        return out

    @property
    def stream(self) -> str:
        """The JetStream stream the message is stored in."""
        return self._raw.delivery.stream

    @property
    def consumer(self) -> str:
        """The durable consumer that delivered it."""
        return self._raw.delivery.consumer

    @property
    def stream_sequence(self) -> int:
        """The message's sequence number in its stream; the same on every redelivery."""
        return self._raw.delivery.stream_sequence

    @property
    def consumer_sequence(self) -> int:
        """The consumer's sequence number for this delivery."""
        return self._raw.delivery.consumer_sequence

    @property
    def attempt(self) -> int:
        """This delivery attempt, starting at 1."""
        return self._raw.delivery.attempt

    @property
    def max_attempts(self) -> int:
        """The attempt on which a failure dead-letters instead of retrying."""
        return self._raw.delivery.max_attempts

    @property
    def is_final_attempt(self) -> bool:
        """Whether a failure now dead-letters the message."""
        return self.attempt >= self.max_attempts

    @property
    def published_at_nanos(self) -> int:
        """When the server stored the message, in nanoseconds since the Unix epoch."""
        return self._raw.delivery.published_at_nanos

    @property
    def published_at(self) -> datetime.datetime:
        """When the server stored the message, as an aware UTC datetime (microsecond precision)."""
        epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
        return epoch + datetime.timedelta(microseconds=self.published_at_nanos // 1000)

    def __repr__(self) -> str:
        return (
            f"Message(subject={self.subject!r}, {len(self.payload)} bytes, "
            f"stream={self.stream!r}, stream_sequence={self.stream_sequence}, "
            f"attempt={self.attempt}/{self.max_attempts})"
        )


def to_bytes(payload: Union[bytes, bytearray, memoryview, str]) -> bytes:
    """A payload as bytes: bytes-like values as they are, text as UTF-8."""
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    raise TypeError(f"a payload is bytes or str, not {type(payload).__name__}")


def group_headers(headers: HeadersLike) -> List[Tuple[str, List[str]]]:
    """Headers as (name, values) with each name once, in first-seen order."""
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        pairs: List[Tuple[str, str]] = []
        for name, value in headers.items():
            if isinstance(value, str):
                pairs.append((name, value))
            else:
                pairs.extend((name, v) for v in value)
    else:
        pairs = list(headers)
    grouped: Dict[str, List[str]] = {}
    for name, value in pairs:
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"header names and values are str, got {name!r}: {value!r}")
        grouped.setdefault(name, []).append(value)
    return list(grouped.items())
