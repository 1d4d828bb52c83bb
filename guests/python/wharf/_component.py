"""The component's side of the SDK for the `handler` world: the `handle` export and the host imports.

Imported only by the entry module `scripts/build-python-handler.sh` generates,
after the user's module, while componentize-py pre-initialises the component.
`wit_world` is the package componentize-py generates from `wit/0.2.0` at build
time; nothing here copies a WIT type by hand.
"""

from __future__ import annotations

import wit_world
from wit_world.imports import host as _wit_host
from wit_world.imports import kv as _wit_kv
from wit_world.imports import types as _wit_types

from . import _dispatch, _host, _wit


class ComponentHost:
    """Forwards publish, config, log and key-value calls to the `wharf:handler/host` and `kv` imports."""

    in_batch = False

    def publish(self, subject, payload, headers, index=None):
        _wit.call_publish(_wit_host.publish, subject, payload, _wit.headers(headers))

    def get_config(self, key):
        return _wit_host.config(key)

    def log(self, level, message):
        _wit_host.log(_wit.LEVELS[level], message)

    def read_key(self, bucket, key, index=None):
        return _wit.entry(_wit.call_kv(_wit_kv.get, bucket, key))

    def stage_put(self, bucket, key, value, expected, index=None):
        _wit.call_kv(_wit_kv.put, bucket, key, value, expected)

    def stage_create(self, bucket, key, value, index=None):
        _wit.call_kv(_wit_kv.create, bucket, key, value)

    def stage_delete(self, bucket, key, expected, index=None):
        _wit.call_kv(_wit_kv.delete, bucket, key, expected)


_host.install(ComponentHost())


class WitWorld(wit_world.WitWorld):
    """The `handle` export componentize-py looks for in the app module."""

    def handle(self, msg: _wit_types.Message) -> None:
        outcome = _dispatch.run(msg)
        if outcome.kind != "ok":
            raise _wit.Err(_wit.handler_error(outcome))
