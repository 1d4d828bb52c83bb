"""Batch handlers: the messages of one call, each with its own handle on the host."""

from __future__ import annotations

import json as _json
from typing import Any, Callable, Iterator, List, Optional, Sequence, Union, overload

from . import _host
from ._errors import InvalidPublish
from ._message import HeadersLike, Message, group_headers, to_bytes
from .kv import Bucket


class BatchMessage(Message):
    """One message of a batch, and the host as that message reaches it.

    What it publishes and writes is attributed to it and takes effect only
    if its result is a success. Everything a `Message` has works as in a
    handler of one message at a time.
    """

    __slots__ = ("_index",)

    def __init__(self, raw, index: int):
        super().__init__(raw)
        self._index = index

    @property
    def index(self) -> int:
        """The message's place in its batch, from 0: where its result goes in the returned list."""
        return self._index

    def publish(
        self,
        subject: str,
        payload: Union[bytes, bytearray, memoryview, str],
        headers: HeadersLike = None,
    ) -> None:
        """Queues a message for publication when this message succeeds (as `wharf.publish`)."""
        _host.current().publish(subject, to_bytes(payload), group_headers(headers), index=self._index)

    def publish_json(self, subject: str, value: Any, headers: HeadersLike = None) -> None:
        """Queues `value` as compact JSON, with `Content-Type: application/json`, when this message succeeds."""
        try:
            body = _json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as e:
            raise InvalidPublish(str(e)) from None
        grouped = group_headers(headers)
        if not any(name.lower() == "content-type" for name, _ in grouped):
            grouped.insert(0, ("Content-Type", ["application/json"]))
        _host.current().publish(subject, body.encode("utf-8"), grouped, index=self._index)

    def bucket(self, name: str) -> Bucket:
        """The bucket `name` as this message reaches it.

        Its reads see this message's staged writes (and no other message's);
        its writes are this message's, applied only if it succeeds. One
        conditional write per message.
        """
        return Bucket(name, index=self._index)

    def __repr__(self) -> str:
        return f"BatchMessage(index={self._index}, {super().__repr__()})"


class Batch(Sequence[BatchMessage]):
    """The messages of one call of a batch handler, in delivery order.

    A batch handler returns one result per message, in this order: None for
    success, or a `Retry` or `Reject` (an exception instance, not raised).
    `map` calls a function per message and collects those results for you.
    """

    def __init__(self, raws: Sequence[Any]):
        self._messages = [BatchMessage(raw, i) for i, raw in enumerate(raws)]

    def __len__(self) -> int:
        return len(self._messages)

    @overload
    def __getitem__(self, i: int) -> BatchMessage: ...

    @overload
    def __getitem__(self, i: slice) -> List[BatchMessage]: ...

    def __getitem__(self, i):
        return self._messages[i]

    def __iter__(self) -> Iterator[BatchMessage]:
        return iter(self._messages)

    def map(self, func: Callable[[BatchMessage], object]) -> List[Optional[BaseException]]:
        """Calls `func(msg)` for each message in order and returns the batch's results.

        A message whose call returns succeeds (None). `Retry`, `Reject`, a
        `PublishError` and a `KvError` settle that message as they would
        settle a message handled alone. Any other exception settles only its
        own message, as a trap would: its traceback goes to stderr, and the
        message is retried after the handler's backoff, or, on its final
        attempt, rejected with the exception's last line (the batch world
        has no trap of one message). An exception outside `func`, or a
        `BaseException` such as `SystemExit`, traps the whole batch.
        """
        from . import _dispatch

        return [_dispatch.settle_one(func, msg) for msg in self._messages]

    def __repr__(self) -> str:
        return f"Batch({len(self._messages)} messages)"
