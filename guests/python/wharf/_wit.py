"""What both component modules share: the WIT types both worlds use, and the mappings to the SDK's.

Imported only inside a component, where `wit_world` is the package
componentize-py generates from `wit/0.2.0` at build time (for either world:
both use the `types` and `kv-types` interfaces).
"""

from __future__ import annotations

from componentize_py_types import Err, Ok
from wit_world.imports import kv_types as _wit_kv_types
from wit_world.imports import types as _wit_types

from ._errors import KV_ERRORS, InvalidPublish, OutboxFull, PublishNotAllowed

__all__ = ["Err", "Ok", "LEVELS", "call_kv", "call_publish", "handler_error", "headers"]

LEVELS = {
    "trace": _wit_types.Level.TRACE,
    "debug": _wit_types.Level.DEBUG,
    "info": _wit_types.Level.INFO,
    "warn": _wit_types.Level.WARN,
    "error": _wit_types.Level.ERROR,
}

_PUBLISH_ERRORS = {
    _wit_types.PublishError_NotAllowed: PublishNotAllowed,
    _wit_types.PublishError_OutboxFull: OutboxFull,
    _wit_types.PublishError_Invalid: InvalidPublish,
}

_KV_ERRORS = {
    _wit_kv_types.KvError_Denied: KV_ERRORS["denied"],
    _wit_kv_types.KvError_Invalid: KV_ERRORS["invalid"],
    _wit_kv_types.KvError_Limit: KV_ERRORS["limit"],
    _wit_kv_types.KvError_Unavailable: KV_ERRORS["unavailable"],
}


def headers(grouped):
    """The SDK's (name, values) pairs as WIT header records."""
    return [_wit_types.Header(name, list(values)) for name, values in grouped]


def call_publish(func, *args):
    """Calls a WIT publish import, raising the `PublishError` subclass of a refusal."""
    try:
        func(*args)
    except Err as e:
        raise _PUBLISH_ERRORS[type(e.value)](e.value.value) from None


def call_kv(func, *args):
    """Calls a WIT key-value import, raising the `KvError` subclass of a refusal."""
    try:
        return func(*args)
    except Err as e:
        raise _KV_ERRORS[type(e.value)](e.value.value) from None


def entry(found):
    """A WIT `option<entry>` as the SDK's hosts return it: (value, revision) or None."""
    return None if found is None else (bytes(found.value), found.revision)


def handler_error(outcome):
    """A settlement that is not `ok` as the WIT `handler-error` value."""
    if outcome.kind == "retry":
        return _wit_types.HandlerError_Retry(outcome.delay_ms)
    return _wit_types.HandlerError_Reject(outcome.reason)
