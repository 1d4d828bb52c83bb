"""Unit-testing handlers without the host.

`run` calls a handler on a `Message.for_test(...)` exactly as the component
would, and reports how the delivery would settle, what it published and what
it logged:

    from wharf import Message
    from wharf.testing import run

    result = run(handle, Message.for_test("orders.new", b'{"id": "A-1", "items": []}'))
    assert result.kind == "reject"
    assert result.reason == "order A-1 has no items"

`TestHost` is the recording host underneath, for tests that call a handler
(or any code that publishes) directly:

    with TestHost(config={"region": "eu"}, allow=["billing.>"]) as host:
        handle(msg)
    assert host.published[0].subject == "billing.charge"

Both start from what the host gives a handler whose `wharf.toml` entry sets
nothing: an empty publish allow-list (every publish is refused with
`PublishNotAllowed`, as the host refuses it), no `Nats-*` headers besides
`Nats-Msg-Id`, no config values, and an outbox of at most 100 messages and
1 MiB. Pass the handler's settings (`allow`, `allow_headers`, `config`, ...)
to test it as it is configured.

Outside a component and outside a `TestHost`, publishes and log lines go to
a default recording host, `default_host()`, which has the same defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from . import _dispatch, _host
from ._host import MAX_OUTBOX_BYTES, MAX_OUTBOX_MESSAGES, LogLine, Published, RecordingHost
from ._message import Message

__all__ = ["LogLine", "Published", "Result", "TestHost", "default_host", "run"]


class TestHost(RecordingHost):
    """A recording host; used as a context manager it is the current host inside the block.

    `allow` mirrors the handler's `publish` allow-list (NATS wildcards) and
    `allow_headers` its `allow_headers`; both are empty unless given, as in
    the host, so a publish the handler's configuration does not allow fails
    here as it fails there.
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
    ):
        super().__init__(
            config=dict(config or {}),
            allow=_patterns(allow, "allow"),
            allow_headers=_patterns(allow_headers, "allow_headers"),
            max_outbox_messages=max_outbox_messages,
            max_outbox_bytes=max_outbox_bytes,
            handler_name=handler_name,
        )
        self._previous: List[object] = []

    def __enter__(self) -> "TestHost":
        self._previous.append(_host.install(self))
        return self

    def __exit__(self, *exc_info) -> None:
        _host.install(self._previous.pop())


@dataclass
class Result:
    """How a delivery would settle, and what the handler did on the way.

    `kind` is `ok`, `retry`, `reject` or `trap` (an uncaught exception,
    kept in `exception`). The host publishes `published` only when `kind`
    is `ok`; otherwise it discards them.
    """

    kind: str
    delay_ms: Optional[int] = None
    reason: Optional[str] = None
    exception: Optional[BaseException] = None
    published: List[Published] = field(default_factory=list)
    logs: List[LogLine] = field(default_factory=list)

    @property
    def delay(self) -> Optional[float]:
        """The retry delay in seconds, or None."""
        return None if self.delay_ms is None else self.delay_ms / 1000


def run(
    handler: Optional[Callable[[Message], object]],
    msg: Message,
    *,
    config: Optional[Dict[str, str]] = None,
    allow: Optional[Sequence[str]] = None,
    max_outbox_messages: int = MAX_OUTBOX_MESSAGES,
    allow_headers: Optional[Sequence[str]] = None,
    max_outbox_bytes: int = MAX_OUTBOX_BYTES,
) -> Result:
    """Runs `handler` (or the registered one, when None) on `msg` against a fresh `TestHost`.

    The settings mirror the handler's entry in `wharf.toml`, with the host's
    defaults: `allow` is its `publish` allow-list (NATS wildcards), empty
    unless given, so that without it every publish is refused as the host
    refuses it; `config` is its `[handler.config]`, empty unless given. An
    uncaught exception does not trap the test process: it comes back as
    `kind == "trap"`.
    """
    func = handler or _dispatch.registered()
    if func is None:
        raise RuntimeError("no handler given and none registered with @wharf.handler")
    host = TestHost(
        config=config,
        allow=allow,
        max_outbox_messages=max_outbox_messages,
        allow_headers=allow_headers,
        max_outbox_bytes=max_outbox_bytes,
    )
    with host:
        try:
            outcome = _dispatch.settle(func, msg)
        except Exception as e:
            # The component would trap here; a test wants to see it instead.
            return Result("trap", reason=_dispatch.summary_line(e), exception=e,
                          published=list(host.published), logs=list(host.logs))
    return Result(
        outcome.kind,
        delay_ms=outcome.delay_ms,
        reason=outcome.reason,
        published=list(host.published),
        logs=list(host.logs),
    )


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
