"""Unit-testing handlers without the host.

`run` calls a handler on a `Message.for_test(...)` exactly as the component
would, and reports how the delivery would settle, what it published, what
key-value writes it staged and what it logged:

    from wharf import Message
    from wharf.testing import run

    result = run(handle, Message.for_test("orders.new", b'{"id": "A-1", "items": []}'))
    assert result.kind == "reject"
    assert result.reason == "order A-1 has no items"

`TestHost` is the recording host underneath. Its key-value buckets keep
their state from one run to the next, so a test can run several messages
and look at the state they leave:

    host = TestHost(buckets={"totals": "read-write"})
    host.kv_put("totals", "a1", b"5")
    assert host.run(handle, msg).kind == "ok"
    assert host.kv_get("totals", "a1").value == b"12"

Used as a context manager it is the current host inside the block, for
tests that call a handler (or any code that publishes) directly; the block's
key-value writes are applied when it ends without an exception:

    with TestHost(config={"region": "eu"}, allow=["billing.>"]) as host:
        handle(msg)
    assert host.published[0].subject == "billing.charge"

Both start from what the host gives a handler whose `wharf.toml` entry sets
nothing: an empty publish allow-list (every publish is refused with
`PublishNotAllowed`, as the host refuses it), no `Nats-*` headers besides
`Nats-Msg-Id`, no config values, no key-value buckets (every key-value call
is refused with `KvDenied`), an outbox of at most 100 messages and 1 MiB,
and at most 64 key-value writes and 256 KiB staged per delivery. Pass the
handler's settings (`allow`, `allow_headers`, `config`, `buckets`, ...) to
test it as it is configured.

Key-value calls follow the host's rules: reads see the buckets and the
delivery's own staged writes; writes are staged, at most one of them
conditional, and applied only when the handler succeeds. When a
conditional write's condition no longer holds at that point, the result's
kind is `conflict` and nothing is applied: the host would run the handler
again on fresh state (up to 16 times within a delivery). To play a writer
that gets there first, split `run` into `call` and `commit` and write in
between (`host.kv_put`).

`run_batch` and `TestHost.run_batch` do the same for a batch handler, with
one `Result` per message.

Outside a component and outside a `TestHost`, publishes and log lines go to
a default recording host, `default_host()`, which has the same defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

from . import _dispatch, _host
from ._batch import Batch
from ._host import MAX_OUTBOX_BYTES, MAX_OUTBOX_MESSAGES, LogLine, Published, RecordingHost
from ._memory import MAX_KV_WRITE_BYTES, MAX_KV_WRITES, Write, is_valid_key
from ._message import Message, to_bytes
from .kv import Entry

__all__ = [
    "BatchResult",
    "Conflict",
    "Entry",
    "LogLine",
    "Published",
    "Result",
    "TestHost",
    "Write",
    "default_host",
    "run",
    "run_batch",
]

#: Initial bucket contents: bucket name to key to value (bytes, or text as UTF-8).
Seed = Mapping[str, Mapping[str, Union[bytes, str]]]


class Conflict(Exception):
    """A `TestHost` block's conditional key-value write no longer held when the block ended: nothing was applied."""


@dataclass
class Result:
    """How a delivery would settle, and what the handler did on the way.

    `kind` is `ok`, `retry`, `reject`, `conflict` (it succeeded, but a
    conditional write's condition no longer held when it was committed:
    nothing was applied, and `reason` says which) or `trap` (an uncaught
    exception, kept in `exception`). The host publishes `published` and
    applies `writes` only when `kind` is `ok`. For a message of a batch
    whose result came from an exception other than Wharf's (see
    `Batch.map`), `exception` is that exception.
    """

    kind: str
    delay_ms: Optional[int] = None
    reason: Optional[str] = None
    exception: Optional[BaseException] = None
    published: List[Published] = field(default_factory=list)
    logs: List[LogLine] = field(default_factory=list)
    #: The key-value writes staged, in the order first staged (a key written twice is one write).
    writes: List[Write] = field(default_factory=list)
    _committed: bool = field(default=False, repr=False, compare=False)

    @property
    def delay(self) -> Optional[float]:
        """The retry delay in seconds, or None."""
        return None if self.delay_ms is None else self.delay_ms / 1000


@dataclass
class BatchResult:
    """What a batch handler did: one `Result` per message, in the batch's order, and the batch's log.

    When the batch handler raised (a trap of the whole batch), every
    message's kind is `trap`.
    """

    results: List[Result]
    logs: List[LogLine] = field(default_factory=list)

    @property
    def kinds(self) -> List[str]:
        """Each message's kind, in the batch's order."""
        return [r.kind for r in self.results]


class TestHost(RecordingHost):
    """A recording host with key-value buckets; used as a context manager it is the current host inside the block.

    `allow` mirrors the handler's `publish` allow-list (NATS wildcards),
    `allow_headers` its `allow_headers`, and `buckets` its `kv` table
    (bucket name to `"read"` or `"read-write"`); all are empty unless given,
    as in the host, so a call the handler's configuration does not allow
    fails here as it fails there. `kv` seeds the buckets' contents, and
    `unavailable` names buckets whose reads fail with `KvUnavailable`.
    """

    # Keeps unittest's and pytest's collectors from taking this for a test case.
    __test__ = False

    def __init__(
        self,
        config: Optional[Mapping[str, str]] = None,
        allow: Optional[Sequence[str]] = None,
        max_outbox_messages: int = MAX_OUTBOX_MESSAGES,
        handler_name: str = "test",
        *,
        allow_headers: Optional[Sequence[str]] = None,
        max_outbox_bytes: int = MAX_OUTBOX_BYTES,
        buckets: Optional[Mapping[str, str]] = None,
        max_kv_writes: int = MAX_KV_WRITES,
        max_kv_write_bytes: int = MAX_KV_WRITE_BYTES,
        kv: Optional[Seed] = None,
        unavailable: Sequence[str] = (),
    ):
        super().__init__(
            config=dict(config or {}),
            allow=_patterns(allow, "allow"),
            allow_headers=_patterns(allow_headers, "allow_headers"),
            max_outbox_messages=max_outbox_messages,
            max_outbox_bytes=max_outbox_bytes,
            handler_name=handler_name,
            buckets=buckets,
            max_kv_writes=max_kv_writes,
            max_kv_write_bytes=max_kv_write_bytes,
            unavailable=_patterns(unavailable, "unavailable"),
        )
        for bucket, keys in (kv or {}).items():
            for key, value in keys.items():
                self.kv_put(bucket, key, value)
        self._previous: List[object] = []

    def __enter__(self) -> "TestHost":
        self._previous.append(_host.install(self))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        _host.install(self._previous.pop())
        if exc_type is not None:
            self.discard()
            return
        conflict = self.commit()
        if conflict is not None:
            raise Conflict(conflict)

    def kv_get(self, bucket: str, key: str) -> Optional[Entry]:
        """The key's value and revision in the test host's bucket, or None when it has none."""
        found = self.kv_state.get(bucket, key)
        return None if found is None else Entry(found[0], found[1])

    def kv_put(self, bucket: str, key: str, value: Union[bytes, str]) -> int:
        """Writes a key at once, as another writer would (seeding a bucket, or getting there before a run commits); returns its revision.

        The revision is the bucket's next sequence, as in JetStream.
        """
        if not is_valid_key(key):
            raise ValueError(f'"{key}" is not a valid key')
        return self.kv_state.write(bucket, key, to_bytes(value))

    def kv_delete(self, bucket: str, key: str) -> int:
        """Deletes a key at once, as another writer would; returns the revision of its delete marker."""
        if not is_valid_key(key):
            raise ValueError(f'"{key}" is not a valid key')
        return self.kv_state.write(bucket, key, None)

    def kv_keys(self, bucket: str) -> List[str]:
        """The keys of a bucket that hold a value, sorted."""
        return self.kv_state.keys(bucket)

    def run(self, handler: Optional[Callable[[Message], object]], msg: Message) -> Result:
        """Runs `handler` (or the registered one, when None) on `msg`, and commits it: `call`, then `commit`."""
        result = self.call(handler, msg)
        self.commit_result(result)
        return result

    def call(self, handler: Optional[Callable[[Message], object]], msg: Message) -> Result:
        """Runs `handler` on `msg` without applying its key-value writes (see `commit_result`).

        Each run starts with an empty outbox and log. An uncaught exception
        does not escape: it comes back as `kind == "trap"`.
        """
        func = _handler(handler, "handler")
        self.begin(msg)
        self.logs.clear()
        previous = _host.install(self)
        try:
            try:
                outcome = _dispatch.settle(func, msg)
                exception = None
            except Exception as e:
                # The component would trap here; a test wants to see it instead.
                outcome = _dispatch.Outcome("trap", reason=_dispatch.summary_line(e))
                exception = e
        finally:
            _host.install(previous)
        result = Result(
            outcome.kind,
            delay_ms=outcome.delay_ms,
            reason=outcome.reason,
            exception=exception,
            published=list(self.published),
            logs=list(self.logs),
            writes=self.staged_writes(),
        )
        self.discard()
        return result

    def commit_result(self, result: Result) -> Result:
        """Applies what a run staged, as the host does when the message succeeded.

        The conditional write goes first, and nothing at all is applied when
        its condition no longer holds: `result.kind` becomes `conflict`. A
        result that did not succeed, or was committed before, applies nothing.
        Returns `result`.
        """
        if result._committed:
            return result
        result._committed = True
        if result.kind == "ok":
            conflict = self.kv_state.apply(result.writes)
            if conflict is not None:
                result.kind = "conflict"
                result.reason = conflict
        return result

    def run_batch(self, handler: Optional[Callable[[Batch], object]], messages: Sequence[Message]) -> BatchResult:
        """Runs a batch handler (or the registered one) on `messages`, and commits each message that succeeded, in order."""
        batch = self.call_batch(handler, messages)
        self.commit_batch(batch)
        return batch

    def call_batch(self, handler: Optional[Callable[[Batch], object]], messages: Sequence[Message]) -> BatchResult:
        """Runs a batch handler on `messages` without applying anything.

        Each message has its own outbox, staged writes and limits, and its
        reads see its own staged writes only. An exception that escapes the
        batch handler, or results that are not one per message, trap the
        whole batch: every message's kind is `trap`.
        """
        func = _handler(handler, "batch")
        messages = list(messages)
        self.logs.clear()
        self.begin_batch(messages)
        previous = _host.install(self)
        trap: Optional[Exception] = None
        try:
            try:
                outcomes = _dispatch.settle_batch(func, Batch([m._raw for m in messages]))
            except Exception as e:
                trap = e
        finally:
            _host.install(previous)
            outboxes = self.end_batch()
        results = []
        for i, outbox in enumerate(outboxes):
            common = dict(published=list(outbox.published), writes=outbox.staging.writes())
            if trap is not None:
                results.append(Result("trap", reason=_dispatch.summary_line(trap), exception=trap, **common))
            else:
                o = outcomes[i]
                results.append(Result(o.kind, delay_ms=o.delay_ms, reason=o.reason, exception=o.cause, **common))
        return BatchResult(results, logs=list(self.logs))

    def commit_batch(self, batch: BatchResult) -> BatchResult:
        """Commits each message of a batch, in order (as `commit_result`).

        A message whose condition no longer holds, because an earlier
        message of the batch wrote its key, becomes a `conflict` on its own.
        """
        for result in batch.results:
            self.commit_result(result)
        return batch


def _handler(handler, kind: str):
    func = handler or (_dispatch.registered() if _dispatch.registered_kind() == kind else None)
    if func is None:
        decorator = "@wharf.handler" if kind == "handler" else "@wharf.batch_handler"
        raise RuntimeError(f"no handler given and none registered with {decorator}")
    return func


def run(
    handler: Optional[Callable[[Message], object]],
    msg: Message,
    *,
    config: Optional[Dict[str, str]] = None,
    allow: Optional[Sequence[str]] = None,
    max_outbox_messages: int = MAX_OUTBOX_MESSAGES,
    allow_headers: Optional[Sequence[str]] = None,
    max_outbox_bytes: int = MAX_OUTBOX_BYTES,
    buckets: Optional[Mapping[str, str]] = None,
    kv: Optional[Seed] = None,
    max_kv_writes: int = MAX_KV_WRITES,
    max_kv_write_bytes: int = MAX_KV_WRITE_BYTES,
) -> Result:
    """Runs `handler` (or the registered one, when None) on `msg` against a fresh `TestHost`.

    The settings mirror the handler's entry in `wharf.toml`, with the host's
    defaults: `allow` is its `publish` allow-list (NATS wildcards), empty
    unless given, so that without it every publish is refused as the host
    refuses it; `config` is its `[handler.config]`, and `buckets` its `kv`
    table, both empty unless given; `kv` seeds the buckets. An uncaught
    exception does not trap the test process: it comes back as
    `kind == "trap"`.
    """
    host = TestHost(
        config=config,
        allow=allow,
        max_outbox_messages=max_outbox_messages,
        allow_headers=allow_headers,
        max_outbox_bytes=max_outbox_bytes,
        buckets=buckets,
        kv=kv,
        max_kv_writes=max_kv_writes,
        max_kv_write_bytes=max_kv_write_bytes,
    )
    return host.run(handler, msg)


def run_batch(
    handler: Optional[Callable[[Batch], object]],
    messages: Sequence[Message],
    **settings,
) -> BatchResult:
    """Runs a batch handler (or the registered one) on `messages` against a fresh `TestHost`.

    `settings` are `TestHost`'s (`allow`, `config`, `buckets`, `kv`, ...).
    """
    return TestHost(**settings).run_batch(handler, messages)


def _patterns(value: Optional[Sequence[str]], name: str) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):
        # A lone string would otherwise be taken letter by letter.
        raise TypeError(f"{name} takes a list, not a string: {name}=[{value!r}]")
    return list(value)


def default_host() -> RecordingHost:
    """The recording host that publishes and log lines go to outside a component and any `TestHost`."""
    return _host._default
