"""Write Wharf message handlers in Python.

A handler is one function from a `Message` to nothing. Returning acks the
message (after everything it published is stored); raising `Retry` delivers
it again later, raising `Reject` dead-letters it now. Any other exception
traps the instance, like a Rust panic: the host retries with backoff and, on
the final attempt, dead-letters the message with a reason that names the
exception and the line of the handler's code that raised it.

    import wharf

    @wharf.handler
    def handle(msg: wharf.Message) -> None:
        order = msg.json()
        if not order.get("items"):
            raise wharf.Reject(f"order {order['id']} has no items")
        wharf.publish_json("orders.accepted", order, headers={"Order-Id": order["id"]})

Build it with `scripts/build-python-handler.sh handler.py handler.wasm`.
Outside a component (unit tests) the same calls go to a recording host: see
`wharf.testing`.
"""

from __future__ import annotations

import json as _json
from typing import Any, Callable, Optional, TypeVar, Union

from . import _dispatch, _host, log
from ._errors import (
    HandlerError,
    InvalidPublish,
    OutboxFull,
    PublishError,
    PublishNotAllowed,
    Reject,
    Retry,
)
from ._message import HeadersLike, Message, group_headers, to_bytes

__all__ = [
    "HandlerError",
    "InvalidPublish",
    "Message",
    "OutboxFull",
    "PublishError",
    "PublishNotAllowed",
    "Reject",
    "Retry",
    "config",
    "handler",
    "log",
    "publish",
    "publish_json",
]

F = TypeVar("F", bound=Callable[[Message], Any])


def handler(func: F) -> F:
    """Registers `func(msg)` as the component's handler. A component has exactly one.

    The function is returned unchanged, so tests can call it directly.
    """
    _dispatch.register(func)
    return func


def publish(
    subject: str,
    payload: Union[bytes, bytearray, memoryview, str],
    headers: HeadersLike = None,
) -> None:
    """Queues a message for publication when this delivery succeeds.

    Nothing leaves the host while the handler runs: when it returns, the
    host publishes the outbox in order, each message with a deterministic
    `Nats-Msg-Id`, and only then acks the input. `payload` is bytes or text
    (sent as UTF-8); `headers` is a mapping of name to a value or a list of
    values, or (name, value) pairs. Raises a `PublishError` when the host
    refuses the message.
    """
    _host.current().publish(subject, to_bytes(payload), group_headers(headers))


def publish_json(subject: str, value: Any, headers: HeadersLike = None) -> None:
    """Queues `value` serialised as compact JSON, with `Content-Type: application/json`.

    A value `json.dumps` cannot encode raises `InvalidPublish`.
    """
    try:
        body = _json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise InvalidPublish(str(e)) from None
    grouped = group_headers(headers)
    if not any(name.lower() == "content-type" for name, _ in grouped):
        grouped.insert(0, ("Content-Type", ["application/json"]))
    _host.current().publish(subject, body.encode("utf-8"), grouped)


def config(key: str, default: Optional[str] = None) -> Optional[str]:
    """One of the handler's `[handler.config]` values from `wharf.toml`, or `default`."""
    value = _host.current().get_config(key)
    return default if value is None else value
