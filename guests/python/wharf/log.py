"""Structured logging into the host's log, tagged with the handler and the delivery.

    from wharf import log

    log.info("order %s accepted", order_id)

Arguments are formatted with `%`, as the standard `logging` module does. The
host cuts lines longer than 4 KiB and stops logging a delivery that has
written more than its `max_output_bytes`.
"""

from __future__ import annotations

from . import _host


def trace(message: object, *args: object) -> None:
    """Logs at trace level."""
    _log("trace", message, args)


def debug(message: object, *args: object) -> None:
    """Logs at debug level."""
    _log("debug", message, args)


def info(message: object, *args: object) -> None:
    """Logs at info level."""
    _log("info", message, args)


def warn(message: object, *args: object) -> None:
    """Logs at warn level."""
    _log("warn", message, args)


#: The spelling the standard `logging` module uses.
warning = warn


def error(message: object, *args: object) -> None:
    """Logs at error level."""
    _log("error", message, args)


def _log(level: str, message: object, args: tuple) -> None:
    text = str(message)
    if args:
        try:
            text = text % args
        except (TypeError, ValueError):
            # A bad format string must not fail the delivery: log it with its arguments.
            text = f"{text} {args!r}"
    _host.current().log(level, text)
