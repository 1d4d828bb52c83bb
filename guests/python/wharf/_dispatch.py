"""Runs the registered handler on one delivery and turns what it did into a settlement."""

from __future__ import annotations

import inspect
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Callable, Optional

from ._errors import PublishError, Reject, Retry
from ._message import Message

#: The user's handler, set once by `@wharf.handler`.
_handler: Optional[Callable[[Message], object]] = None

#: How much of a traceback goes to stderr. The host keeps only the first
#: `max_output_bytes` (64 KiB by default) of a delivery's output and puts the
#: end of it in the dead-letter reason, so a runaway traceback must not push
#: the final line out.
MAX_TRACEBACK_CHARS = 16 * 1024

#: How much of the exception's message goes on the final line, so that the
#: whole line, type included, fits in the tail the host keeps for the reason.
MAX_SUMMARY_CHARS = 500


@dataclass(frozen=True)
class Outcome:
    """How a delivery settles: `ok`, `retry` (with a delay in ms or None) or `reject` (with a reason)."""

    kind: str
    delay_ms: Optional[int] = None
    reason: Optional[str] = None


OK = Outcome("ok")


def register(func: Callable[[Message], object]) -> None:
    global _handler
    if not callable(func):
        raise TypeError(f"@wharf.handler needs a function, got {func!r}")
    if inspect.iscoroutinefunction(func):
        # Nothing would drive the coroutine: the message would be acked unhandled.
        raise TypeError(f"@wharf.handler needs a plain function; {_name(func)} is async")
    if _handler is not None and _handler is not func:
        raise RuntimeError(f"a handler is already registered ({_name(_handler)}); a component has exactly one")
    _handler = func


def _name(func) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


def registered() -> Optional[Callable[[Message], object]]:
    return _handler


def settle(func: Callable[[Message], object], msg: Message) -> Outcome:
    """Calls `func` and maps `Retry`, `Reject` and a refused publish; anything else propagates."""
    try:
        result = func(msg)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError(f"the handler returned {type(result).__name__}: handlers are plain functions, not async")
    except Retry as e:
        return Outcome("retry", delay_ms=e.delay_ms)
    except Reject as e:
        return Outcome("reject", reason=e.reason)
    except PublishError as e:
        # Like the Rust SDK's `?` on a PublishError: retrying would meet the same refusal.
        return Outcome("reject", reason=str(e))
    return OK


def run(raw) -> Outcome:
    """Handles one delivery inside a component: an uncaught exception traps the instance."""
    if _handler is None:
        return trap_with(
            RuntimeError("no handler registered: decorate the handler function with @wharf.handler")
        )
    try:
        return settle(_handler, Message(raw))
    except BaseException as e:
        # Anything uncaught traps, as a Rust panic does; SystemExit included.
        return trap_with(e)


def trap_with(exc: BaseException):
    """Writes the traceback to stderr, its last line `Type: message`, and traps the instance.

    The host settles a trap like a Rust panic: a nak with backoff, and on the
    final attempt a dead-letter copy of kind `trap` whose reason ends with the
    end of the guest's stderr, which is why the summary line comes last.
    """
    write_traceback(exc, sys.stderr)
    try:
        sys.stderr.flush()
    except Exception:
        # A broken stderr must not keep the instance from trapping.
        pass
    # abort() in wasi-libc is a WebAssembly `unreachable`: a real trap that
    # unwinds the instance, printing nothing after the summary line. (Letting
    # the exception escape instead makes componentize-py print a Rust panic
    # message of its own last.)
    _abort()


#: What ends the instance; unit tests of the trap path replace it.
_abort = os.abort


def write_traceback(exc: BaseException, out) -> None:
    # The SDK's own frames (run, settle) come first; the reader wants the handler's.
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    if len(text) > MAX_TRACEBACK_CHARS:
        # The innermost frames are at the end of a Python traceback: keep those.
        text = "[traceback cut]\n" + text[-MAX_TRACEBACK_CHARS:]
    summary = summary_line(exc)
    lines = text.rstrip("\n").split("\n")
    if lines[-1] != summary:
        text = text.rstrip("\n") + "\n" + summary + "\n"
    out.write(text if text.endswith("\n") else text + "\n")


def summary_line(exc: BaseException) -> str:
    """`Type: message` on one line, the way Python ends a traceback."""
    cls = type(exc)
    name = cls.__qualname__
    if cls.__module__ not in ("builtins", "__main__"):
        name = f"{cls.__module__}.{name}"
    try:
        message = str(exc)
    except Exception:
        # An exception whose __str__ fails still gets a summary line.
        message = "<exception str() failed>"
    message = " ".join(message.splitlines())
    if len(message) > MAX_SUMMARY_CHARS:
        message = message[:MAX_SUMMARY_CHARS] + "…"
    return f"{name}: {message}" if message else name
