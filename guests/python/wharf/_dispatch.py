"""Runs the registered handler on a delivery (or a batch) and turns what it did into settlements."""

from __future__ import annotations

import inspect
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence

from ._errors import HandlerError, KvError, PublishError, Reject, Retry
from ._message import Message

#: The user's handler, set once by `@wharf.handler` or `@wharf.batch_handler`.
_handler: Optional[Callable[[Any], object]] = None

#: Which decorator registered it: "handler" or "batch".
_kind: Optional[str] = None

#: The decorator of each kind, for messages.
_DECORATORS = {"handler": "@wharf.handler", "batch": "@wharf.batch_handler"}

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
    """How a delivery settles: `ok`, `retry` (with a delay in ms or None) or `reject` (with a reason).

    `cause` is the exception a batch message's result was made from, when
    it was (see `isolate`), for the test helpers to show.
    """

    kind: str
    delay_ms: Optional[int] = None
    reason: Optional[str] = None
    cause: Optional[BaseException] = None


OK = Outcome("ok")


class InvalidHandler(TypeError):
    """What `@wharf.handler` refuses to register.

    Raised while componentize-py imports the handler's module, it fails the
    build; `scripts/build-python-handler.sh` then prints its message alone,
    as `error: <message>`, instead of the import's traceback.
    """


def register(func: Callable[[Any], object], kind: str = "handler") -> None:
    """Registers the component's one handler: `kind` is "handler" (one message per call) or "batch"."""
    global _handler, _kind
    decorator = _DECORATORS[kind]
    if not callable(func):
        raise InvalidHandler(f"{decorator} needs a function, got {func!r}")
    if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
        # Nothing would drive the coroutine: the message would be acked unhandled.
        raise InvalidHandler(f"{_where(func)}{_name(func)} is an async def; Wharf handlers are plain functions")
    if inspect.isgeneratorfunction(func):
        # Calling it would only create the generator, running none of its body.
        raise InvalidHandler(
            f"{_where(func)}{_name(func)} is a generator function (it yields); Wharf handlers are plain functions"
        )
    if _handler is not None and (_handler is not func or _kind != kind):
        raise InvalidHandler(
            f"{_where(func)}{_name(func)}: a handler is already registered ({_name(_handler)}, with "
            f"{_DECORATORS[_kind]}); a component has exactly one, made by @wharf.handler or "
            "@wharf.batch_handler"
        )
    _handler = func
    _kind = kind


def _name(func) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


def _where(func) -> str:
    """`file.py: ` for the file that defines `func`, or nothing when it has no source file."""
    code = getattr(inspect.unwrap(func), "__code__", None)
    if code is None or code.co_filename.startswith("<"):
        return ""
    return f"{os.path.basename(code.co_filename)}: "


def registered() -> Optional[Callable[[Any], object]]:
    return _handler


def registered_kind() -> Optional[str]:
    """"handler", "batch", or None when nothing is registered: the world the component must implement."""
    return _kind


def unregister() -> None:
    """Forgets the registered handler; for tests of the SDK itself."""
    global _handler, _kind
    _handler = None
    _kind = None


def outcome_of(error: BaseException) -> Optional[Outcome]:
    """The settlement a Wharf exception asks for, or None for any other exception.

    `Retry` and `Reject` settle as they say. A `PublishError` rejects, like
    the Rust SDK's `?` on one: retrying would meet the same refusal. A
    `KvError` rejects too, except `KvUnavailable`, which retries after the
    handler's backoff (the bucket may answer later).
    """
    if isinstance(error, Retry):
        return Outcome("retry", delay_ms=error.delay_ms)
    if isinstance(error, Reject):
        return Outcome("reject", reason=error.reason)
    if isinstance(error, PublishError):
        return Outcome("reject", reason=str(error))
    if isinstance(error, KvError):
        if error.kind == "unavailable":
            return Outcome("retry")
        return Outcome("reject", reason=str(error))
    return None


def _check_plain(result: object, what: str) -> None:
    """Refuses what an async def or a generator function returned: nothing would run its body."""
    if inspect.isawaitable(result) or inspect.isasyncgen(result) or inspect.isgenerator(result):
        if inspect.iscoroutine(result) or inspect.isgenerator(result):
            result.close()
        raise TypeError(
            f"{what} returned {type(result).__name__}: handlers are plain functions, not async or generators"
        )


def settle(func: Callable[[Message], object], msg: Message) -> Outcome:
    """Calls `func` and maps `Retry`, `Reject` and a refused publish; anything else propagates."""
    try:
        _check_plain(func(msg), "the handler")
    except (Retry, Reject, PublishError, KvError) as e:
        return outcome_of(e)
    return OK


def settle_one(func: Callable[[Any], object], msg) -> Optional[BaseException]:
    """One message of `Batch.map`: None when `func(msg)` returns, else the result that settles it.

    Wharf's exceptions are the result as they are. Any other `Exception`
    settles only this message, as a trap would (see `isolate`); a
    `BaseException` (SystemExit, KeyboardInterrupt) propagates and traps the
    whole batch.
    """
    try:
        _check_plain(func(msg), "the function given to Batch.map")
    except (Retry, Reject, PublishError, KvError) as e:
        return e
    except Exception as e:
        return isolate(e, msg)
    return None


def isolate(error: Exception, msg) -> HandlerError:
    """The result of one message of a batch that raised `error`: what a trap would do, for this message alone.

    The traceback goes to stderr (the host's log). The message is retried
    after the handler's backoff, or on its final attempt rejected with the
    exception's last line (`Type: message (at file.py:line)`): the batch
    world has no trap of one message. The result's `__cause__` is `error`.
    """
    write_traceback(error, sys.stderr)
    result: HandlerError = Reject(crash_line(error)) if msg.is_final_attempt else Retry()
    result.__cause__ = error
    return result


def result_outcome(value: object, msg, i: int) -> Outcome:
    """The settlement of message `i` of a batch from the result the batch handler returned for it."""
    if value is None:
        return OK
    if isinstance(value, Exception):
        if not isinstance(value, (Retry, Reject, PublishError, KvError)):
            value = isolate(value, msg)
        outcome = outcome_of(value)
        if value.__cause__ is not None:
            outcome = Outcome(outcome.kind, outcome.delay_ms, outcome.reason, value.__cause__)
        return outcome
    raise TypeError(
        f"result {i} of the batch is {value!r}: return None for a message that succeeded, "
        "or a Retry or Reject for one that did not"
    )


def settle_batch(func: Callable[[Any], object], batch) -> List[Outcome]:
    """Calls a batch handler and maps its results, one per message; anything wrong with them propagates (a trap)."""
    results = func(batch)
    _check_plain(results, "the batch handler")
    if results is None or isinstance(results, (str, bytes)) or not isinstance(results, Sequence):
        raise TypeError(
            f"the batch handler returned {type(results).__name__}: return a list with one result per message "
            "(batch.map(func) makes one)"
        )
    if len(results) != len(batch):
        raise RuntimeError(
            f"the batch handler returned {len(results)} results for a batch of {len(batch)} messages; "
            "return one result per message, in the batch's order"
        )
    return [result_outcome(value, msg, i) for i, (value, msg) in enumerate(zip(results, batch))]


def run(raw) -> Outcome:
    """Handles one delivery inside a component: an uncaught exception traps the instance."""
    if _handler is None or _kind == "batch":
        return trap_with(
            RuntimeError("no handler registered: decorate the handler function with @wharf.handler")
        )
    try:
        return settle(_handler, Message(raw))
    except BaseException as e:
        # Anything uncaught traps, as a Rust panic does; SystemExit included.
        return trap_with(e)


def run_batch(raws: Sequence[Any]) -> List[Outcome]:
    """Handles a batch inside a component: what escapes the batch handler traps the instance (the whole batch)."""
    from ._batch import Batch

    if _handler is None or _kind == "handler":
        return trap_with(
            RuntimeError("no batch handler registered: decorate the function with @wharf.batch_handler")
        )
    try:
        return settle_batch(_handler, Batch(raws))
    except BaseException as e:
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
