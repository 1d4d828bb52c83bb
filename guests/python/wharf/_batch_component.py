"""The component's side of the SDK for the `batch-handler` world: the `handle-batch` export and the `batch-host` imports.

Imported only by the entry module `scripts/build-python-handler.sh` generates
for a module that registers `@wharf.batch_handler`, after that module, while
componentize-py pre-initialises the component. Every call a message makes
names the message by its index in the batch, which `BatchMessage` keeps.
"""

from __future__ import annotations

from typing import List

import wit_world
from wit_world.imports import batch_host as _wit_batch
from wit_world.imports import types as _wit_types

from . import _dispatch, _host, _wit


def _one_message(what: str, how: str) -> RuntimeError:
    return RuntimeError(f"{what} is for handlers of one message at a time; in a batch handler, {how}")


class BatchComponentHost:
    """Forwards each message's calls to the `wharf:handler/batch-host` imports, with its index."""

    in_batch = True

    def publish(self, subject, payload, headers, index=None):
        if index is None:
            raise _one_message("wharf.publish", "publish through the message: msg.publish(...)")
        _wit.call_publish(_wit_batch.publish, index, subject, payload, _wit.headers(headers))

    def get_config(self, key):
        return _wit_batch.config(key)

    def log(self, level, message):
        _wit_batch.log(_wit.LEVELS[level], message)

    def read_key(self, bucket, key, index=None):
        return _wit.entry(_wit.call_kv(_wit_batch.kv_get, self._index(index), bucket, key))

    def stage_put(self, bucket, key, value, expected, index=None):
        _wit.call_kv(_wit_batch.kv_put, self._index(index), bucket, key, value, expected)

    def stage_create(self, bucket, key, value, index=None):
        _wit.call_kv(_wit_batch.kv_create, self._index(index), bucket, key, value)

    def stage_delete(self, bucket, key, expected, index=None):
        _wit.call_kv(_wit_batch.kv_delete, self._index(index), bucket, key, expected)

    @staticmethod
    def _index(index):
        if index is None:
            raise _one_message("wharf.kv.bucket", "open the bucket through the message: msg.bucket(name)")
        return index


_host.install(BatchComponentHost())


class WitWorld(wit_world.WitWorld):
    """The `handle-batch` export componentize-py looks for in the app module."""

    def handle_batch(self, messages: List[_wit_types.Message]) -> list:
        return [
            _wit.Ok(None) if outcome.kind == "ok" else _wit.Err(_wit.handler_error(outcome))
            for outcome in _dispatch.run_batch(messages)
        ]
