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

A batch handler (`@wharf.batch_handler`) gets a `Batch` of messages and
returns one result per message; see `batch_handler`. Key-value state is in
`wharf.kv`.

Build it with `scripts/build-python-handler.sh handler.py handler.wasm`.
Outside a component (unit tests) the same calls go to a recording host: see
`wharf.testing`.
"""

from __future__ import annotations

import json as _json
from typing import Any, Callable, Optional, TypeVar, Union

from . import _dispatch, _host, kv, log
from ._batch import Batch, BatchMessage
from ._errors import (
    HandlerError,
    InvalidPublish,
    KvDenied,
    KvError,
    KvInvalid,
    KvLimit,
    KvUnavailable,
    OutboxFull,
    PublishError,
    PublishNotAllowed,
    Reject,
    Retry,
)
from ._message import HeadersLike, Message, group_headers, to_bytes

__all__ = [
    "Batch",
    "BatchMessage",
    "HandlerError",
    "InvalidPublish",
    "KvDenied",
    "KvError",
    "KvInvalid",
    "KvLimit",
    "KvUnavailable",
    "Message",
    "OutboxFull",
    "PublishError",
    "PublishNotAllowed",
    "Reject",
    "Retry",
    "batch_handler",
    "config",
    "handler",
    "kv",
    "log",
    "publish",
    "publish_json",
]

F = TypeVar("F", bound=Callable[[Message], Any])
B = TypeVar("B", bound=Callable[[Batch], Any])


def handler(func: F) -> F:
    """Registers `func(msg)` as the component's handler: one message per call (the `handler` world).

    A component has exactly one handler, made by `@wharf.handler` or
    `@wharf.batch_handler`. The function is returned unchanged, so tests can
    call it directly.
    """
    _dispatch.register(func, "handler")
    return func


def batch_handler(func: B) -> B:
    """Registers `func(batch)` as the component's handler: several messages per call (the `batch-handler` world).

    `func` gets a `Batch` and returns a list with one result per message,
    in the batch's order: None for a message that succeeded, a `Retry` or
    `Reject` instance (not raised) for one that did not. `batch.map(fn)`
    calls `fn(msg)` per message and turns what it raises into those results.
    Each message is settled by its own result; what it published and wrote
    through its `BatchMessage` (`msg.publish`, `msg.bucket(...)`) takes effect
    only if it succeeded. An exception that escapes `func` traps the whole
    batch.

        @wharf.batch_handler
        def handle_batch(batch: wharf.Batch) -> list:
            return batch.map(lambda msg: msg.publish("copies", msg.payload))

    `scripts/build-python-handler.sh` builds a module that registers a batch
    handler into a `batch-handler` component. A component has exactly one
    handler; the function is returned unchanged.
    """
    _dispatch.register(func, "batch")
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
    refuses the message. In a batch handler, publish through the message
    instead (`msg.publish(...)`).
    """
    _one_message("wharf.publish", "msg.publish(...)")
    _host.current().publish(subject, to_bytes(payload), group_headers(headers))


def publish_json(subject: str, value: Any, headers: HeadersLike = None) -> None:
    """Queues `value` serialised as compact JSON, with `Content-Type: application/json`.

    A value `json.dumps` cannot encode raises `InvalidPublish`. In a batch
    handler, publish through the message instead (`msg.publish_json(...)`).
    """
    _one_message("wharf.publish_json", "msg.publish_json(...)")
    try:
        body = _json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise InvalidPublish(str(e)) from None
    grouped = group_headers(headers)
    if not any(name.lower() == "content-type" for name, _ in grouped):
        grouped.insert(0, ("Content-Type", ["application/json"]))
    _host.current().publish(subject, body.encode("utf-8"), grouped)


def config(key: str, default: Optional[str] = None) -> Optional[str]:
    """One of the handler's `[handler.config]` values from `wharf.toml`, or `default` (in a batch handler too)."""
    value = _host.current().get_config(key)
    return default if value is None else value


def _one_message(what: str, instead: str) -> None:
    """Refuses a call that belongs to handlers of one message while a batch handler runs."""
    if _host.current().in_batch:
        raise RuntimeError(
            f"{what} is for handlers of one message at a time; in a batch handler, publish through the message: {instead}"
        )
