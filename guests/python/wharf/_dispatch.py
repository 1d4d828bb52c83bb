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


class InvalidHandler(TypeError):
    """What `@wharf.handler` refuses to register.

    Raised while componentize-py imports the handler's module, it fails the
    build; `scripts/build-python-handler.sh` then prints its message alone,
    as `error: <message>`, instead of the import's traceback.
    """


def register(func: Callable[[Message], object]) -> None:
    global _handler
    if not callable(func):
        raise InvalidHandler(f"@wharf.handler needs a function, got {func!r}")
    if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
        # Nothing would drive the coroutine: the message would be acked unhandled.
        raise InvalidHandler(f"{_where(func)}{_name(func)} is an async def; Wharf handlers are plain functions")
    if inspect.isgeneratorfunction(func):
        # Calling it would only create the generator, running none of its body.
        raise InvalidHandler(
            f"{_where(func)}{_name(func)} is a generator function (it yields); Wharf handlers are plain functions"
        )
    if _handler is not None and _handler is not func:
        raise RuntimeError(f"a handler is already registered ({_name(_handler)}); a component has exactly one")
    _handler = func


def _name(func) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


def _where(func) -> str:
    """`file.py: ` for the file that defines `func`, or nothing when it has no source file."""
    code = getattr(inspect.unwrap(func), "__code__", None)
    if code is None or code.co_filename.startswith("<"):
        return ""
    return f"{os.path.basename(code.co_filename)}: "


def registered() -> Optional[Callable[[Message], object]]:
    return _handler


def settle(func: Callable[[Message], object], msg: Message) -> Outcome:
    """Calls `func` and maps `Retry`, `Reject` and a refused publish; anything else propagates."""
    try:
        result = func(msg)
        if inspect.isawaitable(result) or inspect.isasyncgen(result) or inspect.isgenerator(result):
            if inspect.iscoroutine(result) or inspect.isgenerator(result):
                result.close()
            raise TypeError(
                f"the handler returned {type(result).__name__}: handlers are plain functions, not async or generators"
            )
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
    """Writes the traceback to stderr, then `Type: message (at file.py:line)`, and traps the instance.

    The host settles a trap like a Rust panic: a nak with backoff, and on the
    final attempt a dead-letter copy of kind `trap` whose reason is built
    from the end of the guest's stderr, its last line above all, which is
    why the one-line summary comes last.
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
    summary = crash_line(exc)
    lines = text.rstrip("\n").split("\n")
    if lines[-1] != summary:
        text = text.rstrip("\n") + "\n" + summary + "\n"
    out.write(text if text.endswith("\n") else text + "\n")


def crash_line(exc: BaseException) -> str:
    """The last line on stderr before a trap: `Type: message (at file.py:line)`.

    The location is where the exception was raised in the handler's own
    code (see `raise_site`), and is left out when no frame has a source file.
    """
    site = raise_site(exc)
    summary = summary_line(exc)
    return f"{summary} (at {site})" if site else summary


def raise_site(exc: BaseException) -> Optional[str]:
    """`file.py:line` (the file's base name) of the innermost frame of the handler's code in the traceback.

    The handler's code is any file outside the SDK, the standard library and
    installed packages; when the exception came from a library the handler
    called, that is the handler's line that called it. Without such a frame
    it is the innermost frame outside the SDK, and without that, None.
    """
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not _is_sdk(f.filename)]
    own = [f for f in frames if not _is_library(f.filename)]
    for frame in reversed(own or frames):
        if frame.filename.startswith("<"):
            continue
        return f"{os.path.basename(frame.filename)}:{frame.lineno}"
    return None


#: The SDK's own directory: frames in its files are never the handler's.
_SDK_DIR = os.path.dirname(os.path.abspath(__file__))

#: The standard library's directory, where `inspect` lives. (Not `os`: it is
#: a frozen module, whose file name in a component is not where the rest are.)
_STDLIB_DIR = os.path.dirname(os.path.abspath(inspect.__file__))


def _is_sdk(filename: str) -> bool:
    return os.path.dirname(filename) == _SDK_DIR


def _is_library(filename: str) -> bool:
    """Whether `filename` is Python's own or an installed package's: code the handler calls, not the handler."""
    if filename.startswith("<"):
        # Frozen modules (`<frozen importlib._bootstrap>`) and code built from strings.
        return True
    parts = filename.replace("\\", "/").split("/")
    if "site-packages" in parts or "dist-packages" in parts:
        return True
    return filename.startswith(_STDLIB_DIR + os.sep)


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
