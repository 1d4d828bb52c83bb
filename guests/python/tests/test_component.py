"""Unit tests of the component glue (`wharf._component`) against stand-ins for the generated bindings.

The stand-ins have the shapes componentize-py generates from `wit/` (dataclass
records, one class per variant case, `Err` carrying the error value); building
and running the examples checks the glue against the real bindings.
"""

import enum
import importlib
import sys
import types
import unittest
from dataclasses import dataclass

from wharf import InvalidPublish, Message, OutboxFull, PublishNotAllowed, Reject, Retry
from wharf import _dispatch, _host
import wharf


def fake_bindings(calls):
    """Modules shaped like componentize-py's output for the `handler` world, recording host calls."""

    @dataclass(frozen=True)
    class Err(Exception):
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

    wit_host = types.ModuleType("wit_world.imports.host")

    def publish(subject, payload, headers):
        calls.append(("publish", subject, payload, headers))
        refusal = {
            "denied": wit_types.PublishError_NotAllowed,
            "full": wit_types.PublishError_OutboxFull,
            "bad": wit_types.PublishError_Invalid,
        }.get(subject)
        if refusal is not None:
            raise Err(refusal(f"{subject} refused"))

    def config(key):
        calls.append(("config", key))
        return {"region": "eu"}.get(key)

    def log(level, message):
        calls.append(("log", level, message))

    wit_host.publish, wit_host.config, wit_host.log = publish, config, log

    imports = types.ModuleType("wit_world.imports")
    imports.host, imports.types = wit_host, wit_types
    world = types.ModuleType("wit_world")
    world.imports = imports
    world.WitWorld = type("WitWorld", (), {})
    runtime_types = types.ModuleType("componentize_py_types")
    runtime_types.Err = Err
    return {
        "wit_world": world,
        "wit_world.imports": imports,
        "wit_world.imports.host": wit_host,
        "wit_world.imports.types": wit_types,
        "componentize_py_types": runtime_types,
    }


class ComponentGlueTest(unittest.TestCase):
    def setUp(self):
        self.calls = []
        self.modules = fake_bindings(self.calls)
        self.saved_modules = {name: sys.modules.get(name) for name in self.modules}
        sys.modules.update(self.modules)
        self.saved_host = _host.current()
        self.saved_handler = _dispatch._handler
        sys.modules.pop("wharf._component", None)
        self.component = importlib.import_module("wharf._component")
        self.types = self.modules["wit_world.imports.types"]
        self.Err = self.modules["componentize_py_types"].Err

    def tearDown(self):
        sys.modules.pop("wharf._component", None)
        for name, module in self.saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        _host.install(self.saved_host)
        _dispatch._handler = self.saved_handler

    def handle(self, func):
        _dispatch._handler = func
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

    def test_outcomes_map_to_the_wit_result(self):
        """ok returns, Retry and Reject raise Err with the matching handler-error case."""
        self.assertIsNone(self.handle(lambda msg: None))

        def retry(msg):
            raise Retry(0.25)

        with self.assertRaises(self.Err) as cm:
            self.handle(retry)
        self.assertEqual(cm.exception.value, self.types.HandlerError_Retry(250))

        def reject(msg):
            raise Reject("no items")

        with self.assertRaises(self.Err) as cm:
            self.handle(reject)
        self.assertEqual(cm.exception.value, self.types.HandlerError_Reject("no items"))

        def refused(msg):
            wharf.publish("denied", b"")

        with self.assertRaises(self.Err) as cm:
            self.handle(refused)
        self.assertEqual(cm.exception.value, self.types.HandlerError_Reject("publish not allowed: denied refused"))


if __name__ == "__main__":
    unittest.main()
