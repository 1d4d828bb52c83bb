"""Unit tests of the component glue (`wharf._component`, `wharf._batch_component`) against stand-ins for the generated bindings.

The stand-ins have the shapes componentize-py generates from `wit/0.2.0`
(dataclass records, one class per variant case, `Err` carrying the error
value, `Ok` for a result inside a list); building and running the fixtures
and examples checks the glue against the real bindings.
"""

import enum
import importlib
import sys
import types
import unittest
from dataclasses import dataclass

import wharf
from wharf import (
    InvalidPublish,
    KvDenied,
    KvInvalid,
    KvLimit,
    KvUnavailable,
    Message,
    OutboxFull,
    PublishNotAllowed,
    Reject,
    Retry,
    _dispatch,
    _host,
    kv,
)

#: The SDK modules that import the bindings, imported afresh by each test.
GLUE = ("wharf._wit", "wharf._component", "wharf._batch_component")


def forget_glue():
    """Drops the glue modules, so the next import binds them to the current stand-ins."""
    for name in GLUE:
        sys.modules.pop(name, None)
        # `from . import _wit` finds a submodule on its package before it imports.
        if hasattr(wharf, name.split(".")[-1]):
            delattr(wharf, name.split(".")[-1])


def fake_bindings(calls):
    """Modules shaped like componentize-py's output for both worlds, recording host calls."""

    @dataclass(frozen=True)
    class Err(Exception):
        value: object

    @dataclass
    class Ok:
        value: object

    def case(name):
        return dataclass(type(name, (), {"__annotations__": {"value": object}}))

    wit_types = types.ModuleType("wit_world.imports.types")

    @dataclass
    class Header:
        name: str
        values: list

    class Level(enum.Enum):
        TRACE = 0
        DEBUG = 1
        INFO = 2
        WARN = 3
        ERROR = 4

    wit_types.Header = Header
    wit_types.Level = Level
    for name in (
        "HandlerError_Retry",
        "HandlerError_Reject",
        "PublishError_NotAllowed",
        "PublishError_OutboxFull",
        "PublishError_Invalid",
    ):
        setattr(wit_types, name, case(name))

    kv_types = types.ModuleType("wit_world.imports.kv_types")

    @dataclass
    class Entry:
        value: bytes
        revision: int

    kv_types.Entry = Entry
    for name in ("KvError_Denied", "KvError_Invalid", "KvError_Limit", "KvError_Unavailable"):
        setattr(kv_types, name, case(name))

    def publish_refusal(subject):
        refusal = {
            "denied": wit_types.PublishError_NotAllowed,
            "full": wit_types.PublishError_OutboxFull,
            "bad": wit_types.PublishError_Invalid,
        }.get(subject)
        if refusal is not None:
            raise Err(refusal(f"{subject} refused"))

    def kv_refusal(key):
        refusal = {
            "denied": kv_types.KvError_Denied,
            "invalid": kv_types.KvError_Invalid,
            "limit": kv_types.KvError_Limit,
            "unavailable": kv_types.KvError_Unavailable,
        }.get(key)
        if refusal is not None:
            raise Err(refusal(f"{key} refused"))

    def recorder(module, name, answer=None, refuse=None, at=1):
        def call(*args):
            calls.append((name, *args))
            if refuse is not None:
                refuse(args[at])
            return answer(*args) if answer else None

        setattr(module, name.split(".")[-1], call)

    host = types.ModuleType("wit_world.imports.host")
    recorder(host, "publish", refuse=publish_refusal, at=0)
    recorder(host, "config", answer=lambda key: {"region": "eu"}.get(key))
    recorder(host, "log")

    kv_module = types.ModuleType("wit_world.imports.kv")
    recorder(kv_module, "get", answer=lambda b, k: Entry(b"10", 7) if k == "a" else None, refuse=kv_refusal)
    for name in ("put", "create", "delete"):
        recorder(kv_module, name, refuse=kv_refusal)

    batch_host = types.ModuleType("wit_world.imports.batch_host")
    recorder(batch_host, "batch.publish", refuse=publish_refusal, at=1)
    recorder(batch_host, "batch.config", answer=lambda key: {"region": "eu"}.get(key))
    recorder(batch_host, "batch.log")
    recorder(batch_host, "batch.kv_get", answer=lambda i, b, k: Entry(b"10", 7) if k == "a" else None, refuse=kv_refusal, at=2)
    for name in ("kv_put", "kv_create", "kv_delete"):
        recorder(batch_host, f"batch.{name}", refuse=kv_refusal, at=2)

    imports = types.ModuleType("wit_world.imports")
    imports.host, imports.types, imports.kv, imports.kv_types = host, wit_types, kv_module, kv_types
    imports.batch_host = batch_host
    world = types.ModuleType("wit_world")
    world.imports = imports
    world.WitWorld = type("WitWorld", (), {})
    runtime_types = types.ModuleType("componentize_py_types")
    runtime_types.Err = Err
    runtime_types.Ok = Ok
    return {
        "wit_world": world,
        "wit_world.imports": imports,
        "wit_world.imports.host": host,
        "wit_world.imports.kv": kv_module,
        "wit_world.imports.kv_types": kv_types,
        "wit_world.imports.batch_host": batch_host,
        "wit_world.imports.types": wit_types,
        "componentize_py_types": runtime_types,
    }


class GlueTest(unittest.TestCase):
    """Imports one glue module against the stand-ins; restores everything afterwards."""

    module = ""

    def setUp(self):
        self.calls = []
        self.modules = fake_bindings(self.calls)
        self.saved_modules = {name: sys.modules.get(name) for name in self.modules}
        sys.modules.update(self.modules)
        self.saved_host = _host.current()
        self.saved_handler = (_dispatch._handler, _dispatch._kind)
        forget_glue()
        self.component = importlib.import_module(self.module)
        self.types = self.modules["wit_world.imports.types"]
        self.Err = self.modules["componentize_py_types"].Err
        self.Ok = self.modules["componentize_py_types"].Ok

    def tearDown(self):
        forget_glue()
        for name, module in self.saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        _host.install(self.saved_host)
        _dispatch._handler, _dispatch._kind = self.saved_handler


class ComponentGlueTest(GlueTest):
    module = "wharf._component"

    def handle(self, func):
        _dispatch.unregister()
        _dispatch.register(func)
        raw = Message.for_test("orders.new", b"{}")._raw
        return self.component.WitWorld().handle(raw)

    def test_importing_the_glue_installs_the_component_host(self):
        """Once imported, publish, config and log reach the host imports."""
        self.assertIsInstance(_host.current(), self.component.ComponentHost)
        wharf.publish("a.b", "x", headers=[("K", "1"), ("K", "2")])
        self.assertEqual(wharf.config("region"), "eu")
        wharf.log.warn("careful")
        publish, config, log = self.calls
        self.assertEqual(publish, ("publish", "a.b", b"x", [self.types.Header("K", ["1", "2"])]))
        self.assertEqual(config, ("config", "region"))
        self.assertEqual(log, ("log", self.types.Level.WARN, "careful"))

    def test_refused_publishes_become_publish_error_subclasses(self):
        """Each WIT publish-error case raises its PublishError subclass with the host's text."""
        for subject, cls in (("denied", PublishNotAllowed), ("full", OutboxFull), ("bad", InvalidPublish)):
            with self.assertRaises(cls) as cm:
                wharf.publish(subject, b"")
            self.assertEqual(cm.exception.detail, f"{subject} refused")

    def test_key_value_calls_reach_the_kv_imports(self):
        """A bucket's calls reach `kv` with the bucket, key, bytes and expected revision; entries come back."""
        accounts = kv.bucket("accounts")
        self.assertEqual(accounts.get("a"), kv.Entry(b"10", 7))
        self.assertIsNone(accounts.get("b"))
        accounts.put("a", "11", expected=7)
        accounts.create("c", b"1")
        accounts.delete("d")
        accounts.put_json("e", {"n": 1})
        self.assertEqual(
            self.calls,
            [
                ("get", "accounts", "a"),
                ("get", "accounts", "b"),
                ("put", "accounts", "a", b"11", 7),
                ("create", "accounts", "c", b"1"),
                ("delete", "accounts", "d", None),
                ("put", "accounts", "e", b'{"n":1}', None),
            ],
        )

    def test_refused_key_value_calls_become_kv_error_subclasses(self):
        """Each WIT kv-error case raises its KvError subclass with the host's text."""
        for key, cls in (("denied", KvDenied), ("invalid", KvInvalid), ("limit", KvLimit), ("unavailable", KvUnavailable)):
            with self.assertRaises(cls) as cm:
                kv.bucket("b").get(key)
            self.assertEqual(cm.exception.detail, f"{key} refused")
            self.assertEqual(cm.exception.kind, key)

    def test_outcomes_map_to_the_wit_result(self):
        """ok returns; Retry, Reject and refusals raise Err with the matching handler-error case."""
        self.assertIsNone(self.handle(lambda msg: None))

        def retry(msg):
            raise Retry(0.25)

        def reject(msg):
            raise Reject("no items")

        def refused(msg):
            wharf.publish("denied", b"")

        def kv_unavailable(msg):
            kv.bucket("b").get("unavailable")

        def kv_denied(msg):
            kv.bucket("b").put("denied", b"")

        for func, expected in (
            (retry, self.types.HandlerError_Retry(250)),
            (reject, self.types.HandlerError_Reject("no items")),
            (refused, self.types.HandlerError_Reject("publish not allowed: denied refused")),
            (kv_unavailable, self.types.HandlerError_Retry(None)),
            (kv_denied, self.types.HandlerError_Reject("key-value access denied: denied refused")),
        ):
            with self.assertRaises(self.Err) as cm:
                self.handle(func)
            self.assertEqual(cm.exception.value, expected, func.__name__)


class BatchComponentGlueTest(GlueTest):
    module = "wharf._batch_component"

    def handle_batch(self, func, count=2):
        _dispatch.unregister()
        _dispatch.register(func, "batch")
        raws = [Message.for_test(f"in.{i}", str(i))._raw for i in range(count)]
        return self.component.WitWorld().handle_batch(raws)

    def test_each_message_reaches_the_batch_host_with_its_index(self):
        """A message's publish and bucket calls carry its index; config and log need none."""

        def handle_batch(batch):
            wharf.log.info("batch of %d", len(batch))
            region = wharf.config("region")
            for msg in batch:
                msg.publish("out", msg.payload, headers={"region": region})
                bucket = msg.bucket("totals")
                bucket.get("a")
                bucket.put("k", b"v", expected=3)
                bucket.create("c", b"")
                bucket.delete("d", expected=4)
            return [None, Reject("second")]

        results = self.handle_batch(handle_batch)
        self.assertEqual(results, [self.Ok(None), self.Err(self.types.HandlerError_Reject("second"))])
        header = [self.types.Header("region", ["eu"])]
        self.assertEqual(
            self.calls,
            [
                ("batch.log", self.types.Level.INFO, "batch of 2"),
                ("batch.config", "region"),
                ("batch.publish", 0, "out", b"0", header),
                ("batch.kv_get", 0, "totals", "a"),
                ("batch.kv_put", 0, "totals", "k", b"v", 3),
                ("batch.kv_create", 0, "totals", "c", b""),
                ("batch.kv_delete", 0, "totals", "d", 4),
                ("batch.publish", 1, "out", b"1", header),
                ("batch.kv_get", 1, "totals", "a"),
                ("batch.kv_put", 1, "totals", "k", b"v", 3),
                ("batch.kv_create", 1, "totals", "c", b""),
                ("batch.kv_delete", 1, "totals", "d", 4),
            ],
        )

    def test_results_map_to_the_wit_results(self):
        """Per-message results, refusals included, become Ok and Err values in the batch's order."""

        def handle_one(msg):
            if msg.index == 0:
                raise Retry(0.5)
            if msg.index == 1:
                msg.publish("denied", b"")
            if msg.index == 2:
                msg.bucket("b").get("unavailable")

        results = self.handle_batch(lambda batch: batch.map(handle_one), count=4)
        self.assertEqual(
            results,
            [
                self.Err(self.types.HandlerError_Retry(500)),
                self.Err(self.types.HandlerError_Reject("publish not allowed: denied refused")),
                self.Err(self.types.HandlerError_Retry(None)),
                self.Ok(None),
            ],
        )

    def test_single_message_calls_are_refused_in_a_batch(self):
        """wharf.publish and wharf.kv.bucket name the message's methods to use instead."""
        with self.assertRaisesRegex(RuntimeError, r"msg\.publish\(\.\.\.\)"):
            wharf.publish("out", b"")
        with self.assertRaisesRegex(RuntimeError, r"msg\.publish_json\(\.\.\.\)"):
            wharf.publish_json("out", {})
        with self.assertRaisesRegex(RuntimeError, r"msg\.bucket\(name\)"):
            kv.bucket("b")
        self.assertEqual(self.calls, [])


if __name__ == "__main__":
    unittest.main()
