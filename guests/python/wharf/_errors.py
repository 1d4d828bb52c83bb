"""How a handler says a delivery did not succeed, and why the host refused a publish or a key-value call."""

from __future__ import annotations

import datetime
import math
from typing import Optional, Union

#: A retry delay: seconds (int or float) or a `datetime.timedelta`.
Delay = Union[int, float, datetime.timedelta]


class HandlerError(Exception):
    """Base class of `Retry` and `Reject`: the two ways a handler settles a message without success."""


class Retry(HandlerError):
    """A transient failure: deliver the message again later.

    Without a delay the handler's backoff schedule decides when; with one
    (seconds, or a `timedelta`) the message comes back after that long. On the
    final attempt the message is dead-lettered instead (kind `exhausted`).

        raise Retry()                 # after the configured backoff
        raise Retry(delay=0.2)        # after 200 ms
        raise Retry(timedelta(seconds=5))
    """

    def __init__(self, delay: Optional[Delay] = None):
        self.delay_ms = _delay_ms(delay)
        super().__init__(str(self))

    @property
    def delay(self) -> Optional[float]:
        """The requested delay in seconds, or None for the backoff schedule."""
        return None if self.delay_ms is None else self.delay_ms / 1000

    def __str__(self) -> str:
        if self.delay_ms is None:
            return "retry"
        return f"retry after {self.delay_ms} ms"


class Reject(HandlerError):
    """A permanent failure: dead-letter the message now, with this reason (kind `rejected`)."""

    def __init__(self, reason: str):
        self.reason = str(reason)
        super().__init__(self.reason)

    def __str__(self) -> str:
        return self.reason


class PublishError(Exception):
    """Why the host refused a `publish`.

    `kind` is `"not-allowed"`, `"outbox-full"` or `"invalid"`, and each has its
    own subclass. Left uncaught it rejects the delivery with its text, since
    retrying would meet the same refusal; catch it to decide otherwise.
    """

    kind = ""
    prefix = ""

    def __init__(self, detail: str):
        self.detail = str(detail)
        super().__init__(f"{self.prefix}: {self.detail}")


class PublishNotAllowed(PublishError):
    """The subject is not in the handler's `publish` allow-list."""

    kind = "not-allowed"
    prefix = "publish not allowed"


class OutboxFull(PublishError):
    """The delivery's outbox is full (message count or bytes)."""

    kind = "outbox-full"
    prefix = "outbox full"


class InvalidPublish(PublishError):
    """The subject or a header is not valid for NATS, or the value could not be encoded."""

    kind = "invalid"
    prefix = "invalid publish"


def _delay_ms(delay: Optional[Delay]) -> Optional[int]:
    if delay is None:
        return None
    if isinstance(delay, datetime.timedelta):
        if delay < datetime.timedelta(0):
            raise ValueError(f"a retry delay must not be negative, got {delay!r}")
        # Whole milliseconds, rounded down like the Rust SDK's Duration::as_millis.
        return min(delay // datetime.timedelta(milliseconds=1), _MAX_MS)
    if not isinstance(delay, (int, float)) or isinstance(delay, bool):
        raise TypeError(f"a retry delay is seconds or a timedelta, not {type(delay).__name__}")
    if math.isnan(delay) or delay < 0:
        raise ValueError(f"a retry delay must not be negative, got {delay!r}")
    if math.isinf(delay):
        return _MAX_MS
    # The small nudge keeps 4.35 s from becoming 4349 ms through binary rounding.
    return min(int(delay * 1000 + 1e-6), _MAX_MS)


_MAX_MS = 2**64 - 1


class KvError(Exception):
    """Why a key-value call failed.

    `kind` is `"denied"`, `"invalid"`, `"limit"` or `"unavailable"`, and each
    has its own subclass. Left uncaught, `KvUnavailable` retries the message
    (after the handler's backoff, like `Retry()`) and every other case
    rejects it with its text, since running it again would meet the same
    refusal; catch it to decide otherwise.
    """

    kind = ""
    prefix = ""

    def __init__(self, detail: str):
        self.detail = str(detail)
        super().__init__(f"{self.prefix}: {self.detail}")


class KvDenied(KvError):
    """The bucket is not in the handler's `kv` table, or it is `"read"` only and the call writes."""

    kind = "denied"
    prefix = "key-value access denied"


class KvInvalid(KvError):
    """The key (or bucket name) is not valid for JetStream key-value, or a key was written twice under different conditions."""

    kind = "invalid"
    prefix = "invalid key-value call"


class KvLimit(KvError):
    """The delivery's staged writes would exceed its limits: count, bytes, or a second conditional write."""

    kind = "limit"
    prefix = "key-value limit"


class KvUnavailable(KvError):
    """The bucket could not be read now (the server is unreachable, a leader election); retrying is the usual answer."""

    kind = "unavailable"
    prefix = "key-value unavailable"


#: The `KvError` subclass for each WIT `kv-error` case, by its name.
KV_ERRORS = {cls.kind: cls for cls in (KvDenied, KvInvalid, KvLimit, KvUnavailable)}
