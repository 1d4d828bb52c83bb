"""Unit tests of the Python SDK outside a component: messages, errors, publish, config, log, testing."""

import datetime
import io
import unittest

import wharf
from wharf import (
    InvalidPublish,
    Message,
    OutboxFull,
    PublishError,
    PublishNotAllowed,
    Reject,
    Retry,
    log,
)
from wharf import _dispatch, _host
from wharf.testing import TestHost, default_host, run


class MessageTest(unittest.TestCase):
    def test_for_test_defaults_match_the_rust_sdk(self):
        """Message.for_test fills delivery metadata like the Rust SDK's Message::for_test."""
        msg = Message.for_test("orders.new", b"{}")
        self.assertEqual(msg.subject, "orders.new")
        self.assertEqual(msg.payload, b"{}")
        self.assertEqual((msg.stream, msg.consumer), ("TEST", "test"))
        self.assertEqual((msg.stream_sequence, msg.consumer_sequence), (1, 1))
        self.assertEqual((msg.attempt, msg.max_attempts), (1, 1))
        self.assertTrue(msg.is_final_attempt)
        self.assertEqual(msg.published_at_nanos, 0)
        self.assertEqual(msg.published_at, datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc))

    def test_is_final_attempt_compares_attempt_with_max_attempts(self):
        """is_final_attempt is true from max_attempts on."""
        self.assertFalse(Message.for_test("a", attempt=1, max_attempts=3).is_final_attempt)
        self.assertTrue(Message.for_test("a", attempt=3, max_attempts=3).is_final_attempt)

    def test_payload_from_text_is_utf8(self):
        """A str payload given to for_test is stored as UTF-8 bytes."""
        self.assertEqual(Message.for_test("a", "héllo").payload, "héllo".encode())

    def test_text_rejects_a_payload_that_is_not_utf8(self):
        """text() raises Reject for bytes that are not UTF-8."""
        self.assertEqual(Message.for_test("a", b"hi").text(), "hi")
        with self.assertRaises(Reject) as cm:
            Message.for_test("a", b"\xff").text()
        self.assertTrue(cm.exception.reason.startswith("payload is not UTF-8: "))

    def test_json_rejects_malformed_json_with_the_rust_prefix(self):
        """json() parses, and raises Reject with the Rust SDK's prefix for malformed JSON."""
        self.assertEqual(Message.for_test("a", b'{"id": 7}').json(), {"id": 7})
        with self.assertRaises(Reject) as cm:
            Message.for_test("a", b"{").json()
        self.assertTrue(cm.exception.reason.startswith("payload is not valid JSON for this handler: "))

    def test_headers_are_multi_valued_and_matched_without_case(self):
        """header() is the first value of a name in any case; headers keeps every value."""
        msg = Message.for_test("a", headers=[("Tag", "x"), ("tag", "y"), ("Tenant", "acme")]).with_header("Tag", "z")
        self.assertEqual(msg.header("tenant"), "acme")
        self.assertEqual(msg.header("TAG"), "x")
        self.assertEqual(msg.header("missing"), None)
        self.assertEqual(msg.header_values("tag"), ["x", "z", "y"])
        self.assertEqual(msg.headers, {"Tag": ["x", "z"], "tag": ["y"], "Tenant": ["acme"]})

    def test_headers_from_a_mapping_with_lists(self):
        """for_test takes headers as a mapping of name to a value or a list of values."""
        msg = Message.for_test("a", headers={"A": "1", "B": ["2", "3"]})
        self.assertEqual(msg.headers, {"A": ["1"], "B": ["2", "3"]})

    def test_published_at_from_nanos(self):
        """published_at turns the nanosecond timestamp into an aware UTC datetime."""
        msg = Message.for_test("a", published_at_nanos=1_700_000_000_123_456_789)
        self.assertEqual(msg.published_at, datetime.datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=datetime.timezone.utc))


class ErrorsTest(unittest.TestCase):
    def test_retry_delay_in_seconds_or_timedelta(self):
        """Retry takes seconds or a timedelta and keeps whole milliseconds."""
        self.assertIsNone(Retry().delay_ms)
        self.assertEqual(Retry(0.2).delay_ms, 200)
        self.assertEqual(Retry(delay=4.35).delay_ms, 4350)
        self.assertEqual(Retry(2).delay_ms, 2000)
        self.assertEqual(Retry(datetime.timedelta(milliseconds=1500, microseconds=999)).delay_ms, 1500)
        self.assertEqual(Retry(0.2).delay, 0.2)

    def test_retry_refuses_negative_or_odd_delays(self):
        """A negative, NaN or non-numeric delay is a programming error."""
        for bad in (-1, float("nan"), datetime.timedelta(seconds=-1)):
            with self.assertRaises(ValueError):
                Retry(bad)
        for bad in ("1s", True):
            with self.assertRaises(TypeError):
                Retry(bad)

    def test_publish_errors_read_like_the_rust_sdks(self):
        """Each PublishError kind has its subclass, kind and the Rust SDK's text."""
        cases = [
            (PublishNotAllowed("x"), "not-allowed", "publish not allowed: x"),
            (OutboxFull("x"), "outbox-full", "outbox full: x"),
            (InvalidPublish("x"), "invalid", "invalid publish: x"),
        ]
        for err, kind, text in cases:
            self.assertIsInstance(err, PublishError)
            self.assertEqual((err.kind, str(err), err.detail), (kind, text, "x"))


class PublishTest(unittest.TestCase):
    def test_publish_bytes_or_text_with_grouped_headers(self):
        """publish takes bytes or str and groups headers given twice under one name."""
        with TestHost() as host:
            wharf.publish("a.b", b"\x00\x01")
            wharf.publish("a.c", "text", headers=[("X", "1"), ("X", "2"), ("Y", "3")])
        self.assertEqual(host.published[0].payload, b"\x00\x01")
        self.assertEqual(host.published[1].payload, b"text")
        self.assertEqual(host.published[1].headers, {"X": ["1", "2"], "Y": ["3"]})

    def test_publish_json_is_compact_with_a_content_type(self):
        """publish_json writes compact UTF-8 JSON and puts Content-Type first."""
        with TestHost() as host:
            wharf.publish_json("a.b", {"id": "é", "n": [1, 2]}, headers={"Order-Id": "7"})
        out = host.published[0]
        self.assertEqual(out.payload, '{"id":"é","n":[1,2]}'.encode())
        self.assertEqual(list(out.headers.items()), [("Content-Type", ["application/json"]), ("Order-Id", ["7"])])

    def test_publish_json_keeps_a_content_type_given_by_the_handler(self):
        """A handler's own Content-Type wins over the default."""
        with TestHost() as host:
            wharf.publish_json("a.b", 1, headers={"content-type": "application/vnd.x+json"})
        self.assertEqual(host.published[0].headers, {"content-type": ["application/vnd.x+json"]})

    def test_publish_json_of_an_unencodable_value_is_invalid(self):
        """A value json cannot encode raises InvalidPublish."""
        with TestHost():
            with self.assertRaises(InvalidPublish):
                wharf.publish_json("a.b", {"x": object()})

    def test_test_host_mirrors_the_hosts_refusals(self):
        """The test host refuses what the host would: allow-list, full outbox, bad subject or header."""
        with TestHost(allow=["orders.*"], max_outbox_messages=1):
            with self.assertRaises(PublishNotAllowed) as cm:
                wharf.publish("billing.x", b"")
            self.assertEqual(
                str(cm.exception),
                'publish not allowed: subject "billing.x" is not in handler "test"\'s publish allow-list',
            )
            with self.assertRaises(InvalidPublish):
                wharf.publish("orders..x", b"")
            with self.assertRaises(InvalidPublish):
                wharf.publish("orders.x", b"", headers={"X": "a\nb"})
            wharf.publish("orders.x", b"")
            with self.assertRaises(OutboxFull):
                wharf.publish("orders.y", b"")

    def test_outside_a_test_host_publishes_go_to_the_default_host(self):
        """Without a TestHost, publish and log reach the default recording host."""
        default_host().clear()
        wharf.publish("a.b", "x")
        log.info("hello %s", "there")
        self.assertEqual(default_host().published[0].subject, "a.b")
        self.assertEqual(default_host().logs[0].message, "hello there")
        default_host().clear()


class ConfigAndLogTest(unittest.TestCase):
    def test_config_with_a_default(self):
        """config returns the configured value, else the default, else None."""
        with TestHost(config={"region": "eu"}):
            self.assertEqual(wharf.config("region"), "eu")
            self.assertEqual(wharf.config("missing"), None)
            self.assertEqual(wharf.config("missing", "us"), "us")

    def test_log_levels_and_formatting(self):
        """Each level reaches the host; %-arguments are formatted, a bad format is kept readable."""
        with TestHost() as host:
            log.trace("t")
            log.debug("d %d", 1)
            log.info("i")
            log.warn("w")
            log.warning("w2")
            log.error("e %s %s", "only-one")
        self.assertEqual(
            [(line.level, line.message) for line in host.logs],
            [("trace", "t"), ("debug", "d 1"), ("info", "i"), ("warn", "w"), ("warn", "w2"),
             ("error", "e %s %s ('only-one',)")],
        )


class SettlementTest(unittest.TestCase):
    def test_each_way_out_of_a_handler_settles_like_the_rust_sdk(self):
        """Return, Retry, Reject and an uncaught PublishError map to ok, retry, reject, reject."""

        def raising(exc):
            def handle(msg):
                if exc is not None:
                    raise exc

            return handle

        cases = [
            (None, ("ok", None, None)),
            (Retry(), ("retry", None, None)),
            (Retry(1.5), ("retry", 1500, None)),
            (Reject("bad"), ("reject", None, "bad")),
            (PublishNotAllowed("nope"), ("reject", None, "publish not allowed: nope")),
        ]
        for exc, expected in cases:
            result = run(raising(exc), Message.for_test("a"))
            self.assertEqual((result.kind, result.delay_ms, result.reason), expected)

    def test_an_uncaught_exception_is_a_trap_in_tests(self):
        """testing.run reports an uncaught exception as a trap instead of raising it."""

        def broken(msg):
            raise KeyError("sku")

        result = run(broken, Message.for_test("a"))
        self.assertEqual(result.kind, "trap")
        self.assertEqual(result.reason, "KeyError: 'sku'")
        self.assertIsInstance(result.exception, KeyError)

    def test_run_reports_what_was_published_and_logged(self):
        """run collects the handler's publishes and log lines, with the given config."""

        def handle(msg):
            log.info("region %s", wharf.config("region"))
            wharf.publish("out", msg.payload)

        result = run(handle, Message.for_test("in", b"x"), config={"region": "eu"})
        self.assertEqual(result.kind, "ok")
        self.assertEqual(result.published[0].payload, b"x")
        self.assertEqual(result.logs[0].message, "region eu")


class TrapTest(unittest.TestCase):
    """The component path: an uncaught exception writes its traceback and traps."""

    def setUp(self):
        self.stderr = io.StringIO()
        self.aborted = 0
        self.saved = (_dispatch._handler, _dispatch._abort, _dispatch.sys.stderr)
        _dispatch._handler = None

        def abort():
            self.aborted += 1

        _dispatch._abort = abort
        _dispatch.sys.stderr = self.stderr

    def tearDown(self):
        _dispatch._handler, _dispatch._abort, _dispatch.sys.stderr = self.saved

    def dispatch(self, func):
        _dispatch._handler = None
        _dispatch.register(func)
        return _dispatch.run(Message.for_test("a")._raw)

    def test_uncaught_exception_ends_stderr_with_type_and_message(self):
        """The traceback goes to stderr, its last line is `Type: message`, then the instance traps."""

        def handle(msg):
            raise ValueError("boom")

        self.dispatch(handle)
        self.assertEqual(self.aborted, 1)
        lines = self.stderr.getvalue().rstrip("\n").split("\n")
        self.assertEqual(lines[0], "Traceback (most recent call last):")
        self.assertEqual(lines[-1], "ValueError: boom")
        self.assertIn("in handle", self.stderr.getvalue())
        self.assertNotIn("_dispatch.py", self.stderr.getvalue())

    def test_summary_is_one_line_and_qualified(self):
        """A multi-line message is joined onto one last line; non-builtin types keep their module."""

        class Oops(Exception):
            pass

        def handle(msg):
            raise Oops("first\nsecond")

        self.dispatch(handle)
        last = self.stderr.getvalue().rstrip("\n").split("\n")[-1]
        self.assertEqual(last, f"{__name__}.TrapTest.test_summary_is_one_line_and_qualified.<locals>.Oops: first second")

    def test_a_long_message_is_cut_to_fit_the_reason(self):
        """The last line stays short enough for the tail the host keeps."""

        def handle(msg):
            raise RuntimeError("x" * 5000)

        self.dispatch(handle)
        last = self.stderr.getvalue().rstrip("\n").split("\n")[-1]
        self.assertEqual(last, "RuntimeError: " + "x" * _dispatch.MAX_SUMMARY_CHARS + "…")

    def test_retry_and_reject_do_not_trap(self):
        """Retry and Reject settle without writing to stderr or trapping."""

        def handle(msg):
            raise Retry(0.2)

        self.assertEqual(self.dispatch(handle), _dispatch.Outcome("retry", delay_ms=200))
        self.assertEqual((self.aborted, self.stderr.getvalue()), (0, ""))

    def test_no_registered_handler_traps(self):
        """A component whose module never registered a handler traps with a hint."""
        _dispatch.run(Message.for_test("a")._raw)
        self.assertEqual(self.aborted, 1)
        self.assertIn("@wharf.handler", self.stderr.getvalue().rstrip("\n").split("\n")[-1])

    def test_async_handlers_are_refused(self):
        """An async handler is refused at registration, and an awaitable result traps, never acks."""

        async def handle(msg):
            pass

        with self.assertRaises(TypeError):
            _dispatch.register(handle)

        def sneaky(msg):
            return handle(msg)

        self.dispatch(sneaky)
        self.assertEqual(self.aborted, 1)
        self.assertTrue(self.stderr.getvalue().rstrip("\n").split("\n")[-1].startswith("TypeError: the handler returned coroutine"))

    def test_registering_a_second_handler_fails(self):
        """A component has exactly one handler."""
        _dispatch.register(lambda msg: None)
        with self.assertRaises(RuntimeError):
            _dispatch.register(lambda msg: None)


class HostInstallTest(unittest.TestCase):
    def test_test_hosts_nest_and_restore(self):
        """A TestHost is current inside its block only, and nested blocks restore the outer one."""
        before = _host.current()
        with TestHost() as outer:
            with TestHost() as inner:
                self.assertIs(_host.current(), inner)
            self.assertIs(_host.current(), outer)
        self.assertIs(_host.current(), before)


if __name__ == "__main__":
    unittest.main()
