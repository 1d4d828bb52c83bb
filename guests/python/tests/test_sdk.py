"""Unit tests of the Python SDK outside a component: messages, errors, publish, config, log, testing."""

import datetime
import inspect
import io
import json
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
        with TestHost(allow=["a.*"]) as host:
            wharf.publish("a.b", b"\x00\x01")
            wharf.publish("a.c", "text", headers=[("X", "1"), ("X", "2"), ("Y", "3")])
        self.assertEqual(host.published[0].payload, b"\x00\x01")
        self.assertEqual(host.published[1].payload, b"text")
        self.assertEqual(host.published[1].headers, {"X": ["1", "2"], "Y": ["3"]})

    def test_publish_json_is_compact_with_a_content_type(self):
        """publish_json writes compact UTF-8 JSON and puts Content-Type first."""
        with TestHost(allow=["a.b"]) as host:
            wharf.publish_json("a.b", {"id": "é", "n": [1, 2]}, headers={"Order-Id": "7"})
        out = host.published[0]
        self.assertEqual(out.payload, '{"id":"é","n":[1,2]}'.encode())
        self.assertEqual(list(out.headers.items()), [("Content-Type", ["application/json"]), ("Order-Id", ["7"])])

    def test_publish_json_keeps_a_content_type_given_by_the_handler(self):
        """A handler's own Content-Type wins over the default."""
        with TestHost(allow=["a.b"]) as host:
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
                'publish not allowed: subject "billing.x" is not in handler "test"\'s publish allow-list '
                '["orders.*"] (its publish setting in wharf.toml; tests pass allow=[...])',
            )
            with self.assertRaises(InvalidPublish):
                wharf.publish("orders..x", b"")
            with self.assertRaises(InvalidPublish):
                wharf.publish("orders.x", b"", headers={"X": "a\nb"})
            with self.assertRaises(InvalidPublish):
                wharf.publish("orders.x", b"", headers={"X": "a\x00b"})
            wharf.publish("orders.x", b"")
            with self.assertRaises(OutboxFull):
                wharf.publish("orders.y", b"")

    def test_outside_a_test_host_publishes_go_to_the_default_host(self):
        """Without a TestHost, publish and log reach the default recording host, which allows no subject unless told."""
        host = default_host()
        host.clear()
        with self.assertRaises(PublishNotAllowed):
            wharf.publish("a.b", "x")
        host.allow = ["a.b"]
        try:
            wharf.publish("a.b", "x")
            log.info("hello %s", "there")
            self.assertEqual(host.published[0].subject, "a.b")
            self.assertEqual(host.logs[0].message, "hello there")
        finally:
            host.allow = []
            host.clear()

    def test_wildcards_never_reach_reserved_subjects(self):
        """As in the host, `$…` and `_INBOX…` subjects need a literal entry, and `$JS`, `$SYS`, … are never allowed."""
        host = TestHost(allow=[">", "$KV.b.k", "$JS.API.INFO"])
        self.assertTrue(host.allows("orders.new"))
        self.assertTrue(host.allows("$KV.b.k"))
        self.assertFalse(host.allows("$KV.b.other"))
        self.assertFalse(host.allows("_INBOX.abc"))
        self.assertFalse(host.allows("$JS.API.INFO"))

    def test_reserved_headers_are_refused_as_the_host_refuses_them(self):
        """Wharf-* headers never, Nats-* ones only when allow_headers names them, Nats-Msg-Id always (not the host's ids)."""
        with TestHost(allow=["out"]) as host:
            for headers in ({"Wharf-Handler": "x"}, {"Nats-Rollup": "sub"}, {"Nats-Msg-Id": "wharf:IN:c:1:0"}):
                with self.subTest(headers=headers), self.assertRaises(PublishNotAllowed):
                    wharf.publish("out", b"", headers=headers)
            with self.assertRaises(InvalidPublish):
                wharf.publish("out", b"", headers=[("Nats-Msg-Id", "a"), ("Nats-Msg-Id", "b")])
            wharf.publish("out", b"", headers={"nats-msg-id": "order-7"})
        self.assertEqual(host.published[0].headers, {"nats-msg-id": ["order-7"]})
        with TestHost(allow=["out"], allow_headers=["Nats-Rollup"]) as host:
            wharf.publish("out", b"", headers={"nats-rollup": "sub"})
        self.assertEqual(len(host.published), 1)


class ConfigAndLogTest(unittest.TestCase):
    def test_config_with_a_default(self):
        """config returns the configured value, else the default, else None."""
        with TestHost(config={"region": "eu"}):
            self.assertEqual(wharf.config("region"), "eu")
            self.assertEqual(wharf.config("missing"), None)
            self.assertEqual(wharf.config("missing", "us"), "us")

    def test_no_config_values_unless_given(self):
        """Like a handler without [handler.config], a TestHost or run without config has no values."""
        with TestHost():
            self.assertIsNone(wharf.config("region"))
        result = run(lambda msg: log.info("%s", wharf.config("region", "default")), Message.for_test("a"))
        self.assertEqual(result.logs[0].message, "default")

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


class HostDefaultsTest(unittest.TestCase):
    """The test helpers start from what the host gives a handler whose wharf.toml entry sets nothing."""

    def test_run_without_allow_refuses_every_publish_like_the_host(self):
        """Without allow, a publish is refused with the host's PublishNotAllowed, and left uncaught it rejects."""

        def handle(msg):
            wharf.publish("orders.accepted", msg.payload)

        result = run(handle, Message.for_test("orders.new", b"{}"))
        self.assertEqual(result.kind, "reject")
        self.assertEqual(
            result.reason,
            'publish not allowed: subject "orders.accepted" is not in handler "test"\'s publish allow-list [] '
            "(its publish setting in wharf.toml; tests pass allow=[...])",
        )
        self.assertEqual(result.published, [])
        self.assertEqual(run(handle, Message.for_test("orders.new", b"{}"), allow=["orders.*"]).kind, "ok")

    def test_a_caught_refusal_is_the_error_the_host_gives(self):
        """The refusal is a PublishNotAllowed of kind not-allowed, the type the SDK raises for the host's refusal."""
        caught = []

        def handle(msg):
            try:
                wharf.publish("billing.x", b"")
            except PublishError as e:
                caught.append(e)

        self.assertEqual(run(handle, Message.for_test("a")).kind, "ok")
        (error,) = caught
        self.assertIs(type(error), PublishNotAllowed)
        self.assertEqual(error.kind, "not-allowed")
        self.assertTrue(str(error).startswith('publish not allowed: subject "billing.x" is not in'), str(error))

    def test_test_host_without_allow_refuses_every_publish(self):
        """A TestHost without allow has an empty allow-list, as the host does; None means the same."""
        for host in (TestHost(), TestHost(allow=None)):
            with host, self.assertRaises(PublishNotAllowed) as cm:
                wharf.publish("a.b", b"")
            self.assertIn("publish allow-list []", str(cm.exception))

    def test_allow_must_be_a_list(self):
        """A lone string for allow is a mistake the helper names, not a list of one-letter patterns."""
        with self.assertRaises(TypeError):
            run(lambda msg: None, Message.for_test("a"), allow="orders.>")

    def test_the_outbox_holds_100_messages_by_default(self):
        """The default message limit is the host's: 100 per delivery."""

        def handle(msg):
            for i in range(101):
                wharf.publish("out", str(i))

        result = run(handle, Message.for_test("a"), allow=["out"])
        self.assertEqual((result.kind, result.reason), ("reject", "outbox full: at most 100 messages per delivery"))
        self.assertEqual(len(result.published), 100)

    def test_the_outbox_holds_1_mib_by_default_counting_the_hosts_headers(self):
        """The default byte limit is the host's 1 MiB, counted with the headers the host adds to each output."""
        per_message = _host.TEST_HOST_HEADER_BYTES + len("out") + len("NATS/1.0\r\n\r\n")
        fits = 1024 * 1024 - per_message

        def handle(msg):
            wharf.publish("out", b"x" * int(msg.text()))

        self.assertEqual(run(handle, Message.for_test("a", str(fits)), allow=["out"]).kind, "ok")
        result = run(handle, Message.for_test("a", str(fits + 1)), allow=["out"])
        self.assertEqual(
            (result.kind, result.reason),
            ("reject", "outbox full: at most 1048576 bytes per delivery, the host's headers included"),
        )
        self.assertEqual(run(handle, Message.for_test("a", "10"), allow=["out"], max_outbox_bytes=10).kind, "reject")

    def test_host_header_bytes_match_the_hosts_count(self):
        """The host's own headers on an output of stream TEST through consumer test take 739 bytes, as the host counts them."""
        self.assertEqual(_host.TEST_HOST_HEADER_BYTES, 739)
        self.assertEqual(_host.host_header_bytes("ORDERS", "wharf-orders"), 727 + 2 * 6 + 12)


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

        result = run(handle, Message.for_test("in", b"x"), config={"region": "eu"}, allow=["out"])
        self.assertEqual(result.kind, "ok")
        self.assertEqual(result.published[0].payload, b"x")
        self.assertEqual(result.logs[0].message, "region eu")


class TrapTest(unittest.TestCase):
    """The component path: an uncaught exception writes its traceback and traps."""

    def setUp(self):
        self.stderr = io.StringIO()
        self.aborted = 0
        self.saved = (_dispatch._handler, _dispatch._kind, _dispatch._abort, _dispatch.sys.stderr)
        _dispatch.unregister()

        def abort():
            self.aborted += 1

        _dispatch._abort = abort
        _dispatch.sys.stderr = self.stderr

    def tearDown(self):
        _dispatch._handler, _dispatch._kind, _dispatch._abort, _dispatch.sys.stderr = self.saved

    def dispatch(self, func):
        _dispatch.unregister()
        _dispatch.register(func)
        return _dispatch.run(Message.for_test("a")._raw)

    def last_line(self):
        return self.stderr.getvalue().rstrip("\n").split("\n")[-1]

    def test_uncaught_exception_ends_stderr_with_type_message_and_place(self):
        """The traceback goes to stderr, its last line is `Type: message (at file.py:line)`, then the instance traps."""
        line = inspect.currentframe().f_lineno + 3

        def handle(msg):
            raise ValueError("boom")

        self.dispatch(handle)
        self.assertEqual(self.aborted, 1)
        lines = self.stderr.getvalue().rstrip("\n").split("\n")
        self.assertEqual(lines[0], "Traceback (most recent call last):")
        self.assertEqual(lines[-2], "ValueError: boom")
        self.assertEqual(lines[-1], f"ValueError: boom (at test_sdk.py:{line})")
        self.assertIn("in handle", self.stderr.getvalue())
        self.assertNotIn("_dispatch.py", self.stderr.getvalue())

    def test_the_place_is_the_innermost_frame_of_the_handlers_code(self):
        """Raised in a helper the handler calls, the place is the helper's line, not the handler's call."""
        line = inspect.currentframe().f_lineno + 3

        def lookup(order):
            return order["amount"]

        def handle(msg):
            lookup({})

        self.dispatch(handle)
        self.assertEqual(self.last_line(), f"KeyError: 'amount' (at test_sdk.py:{line})")

    def test_the_place_of_a_library_error_is_the_handlers_call(self):
        """Raised inside the standard library, the place is the handler's line that called it."""
        line = inspect.currentframe().f_lineno + 3

        def handle(msg):
            json.loads("{")

        self.dispatch(handle)
        self.assertRegex(
            self.last_line(),
            rf"^json\.decoder\.JSONDecodeError: Expecting property name .* \(at test_sdk\.py:{line}\)$",
        )
        self.assertIn("decoder.py", self.stderr.getvalue())

    def test_summary_is_one_line_and_qualified(self):
        """A multi-line message is joined onto one last line; non-builtin types keep their module."""

        class Oops(Exception):
            pass

        def handle(msg):
            raise Oops("first\nsecond")

        self.dispatch(handle)
        self.assertRegex(
            self.last_line(),
            rf"^{__name__}\.TrapTest\.test_summary_is_one_line_and_qualified\.<locals>\.Oops: first second "
            r"\(at test_sdk\.py:\d+\)$",
        )

    def test_a_long_message_is_cut_to_fit_the_reason(self):
        """The last line stays short enough for the tail the host keeps, and keeps the place."""
        line = inspect.currentframe().f_lineno + 3

        def handle(msg):
            raise RuntimeError("x" * 5000)

        self.dispatch(handle)
        self.assertEqual(
            self.last_line(),
            "RuntimeError: " + "x" * _dispatch.MAX_SUMMARY_CHARS + f"… (at test_sdk.py:{line})",
        )

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
        # Raised by the SDK, the error has no place in the handler's code.
        self.assertEqual(
            self.last_line(),
            "RuntimeError: no handler registered: decorate the handler function with @wharf.handler",
        )

    def test_async_handlers_are_refused(self):
        """An async handler is refused at registration, and an awaitable result traps, never acks."""

        async def handle(msg):
            pass

        with self.assertRaises(_dispatch.InvalidHandler) as cm:
            _dispatch.register(handle)
        self.assertEqual(
            str(cm.exception),
            "test_sdk.py: TrapTest.test_async_handlers_are_refused.<locals>.handle is an async def; "
            "Wharf handlers are plain functions",
        )
        self.assertIsInstance(cm.exception, TypeError)

        def sneaky(msg):
            return handle(msg)

        self.dispatch(sneaky)
        self.assertEqual(self.aborted, 1)
        self.assertTrue(self.last_line().startswith("TypeError: the handler returned coroutine"))

    def test_generator_handlers_are_refused(self):
        """A handler that yields (async or not) is refused at registration, and a generator result traps."""

        async def agen(msg):
            yield

        def gen(msg):
            yield

        with self.assertRaisesRegex(_dispatch.InvalidHandler, r"^test_sdk\.py: .*agen is an async def;"):
            _dispatch.register(agen)
        with self.assertRaisesRegex(_dispatch.InvalidHandler, r"^test_sdk\.py: .*gen is a generator function"):
            _dispatch.register(gen)

        self.dispatch(lambda msg: gen(msg))
        self.assertEqual(self.aborted, 1)
        self.assertTrue(self.last_line().startswith("TypeError: the handler returned generator"))

    def test_registering_a_second_handler_fails(self):
        """A component has exactly one handler, of one kind: a second one fails the build with one line."""
        _dispatch.register(lambda msg: None)
        with self.assertRaisesRegex(_dispatch.InvalidHandler, "a handler is already registered"):
            _dispatch.register(lambda msg: None)
        _dispatch.unregister()
        first = lambda batch: []  # noqa: E731
        _dispatch.register(first, "batch")
        _dispatch.register(first, "batch")
        with self.assertRaisesRegex(_dispatch.InvalidHandler, r"with @wharf\.batch_handler"):
            _dispatch.register(first, "handler")


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
