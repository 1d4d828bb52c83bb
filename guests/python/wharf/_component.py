"""The component's side of the SDK: the WIT export and the host imports.

Imported only by the entry module `scripts/build-python-handler.sh` generates,
after the user's module, while componentize-py pre-initialises the component.
`wit_world` is the package componentize-py generates from `wit/` at build
time; nothing here copies a WIT type by hand.
"""

from __future__ import annotations

import wit_world
from componentize_py_types import Err
from wit_world.imports import host as _wit_host
from wit_world.imports import types as _wit_types

from . import _dispatch, _host
from ._errors import InvalidPublish, OutboxFull, PublishNotAllowed

_LEVELS = {
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


class ComponentHost:
    """Forwards publish, config and log to the `wharf:handler/host` imports."""

    def publish(self, subject, payload, headers):
        wit_headers = [_wit_types.Header(name, list(values)) for name, values in headers]
        try:
            _wit_host.publish(subject, payload, wit_headers)
        except Err as e:
            raise _PUBLISH_ERRORS[type(e.value)](e.value.value) from None

    def get_config(self, key):
        return _wit_host.config(key)

    def log(self, level, message):
        _wit_host.log(_LEVELS[level], message)


_host.install(ComponentHost())


class WitWorld(wit_world.WitWorld):
    """The `handle` export componentize-py looks for in the app module."""

    def handle(self, msg: _wit_types.Message) -> None:
        outcome = _dispatch.run(msg)
        if outcome.kind == "retry":
            raise Err(_wit_types.HandlerError_Retry(outcome.delay_ms))
        if outcome.kind == "reject":
            raise Err(_wit_types.HandlerError_Reject(outcome.reason))
