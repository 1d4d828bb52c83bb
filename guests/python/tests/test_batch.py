"""Unit tests of batch handlers: per-message results, outputs and writes, through the test host."""

import io
import unittest

import wharf
from wharf import Batch, BatchMessage, InvalidPublish, KvUnavailable, Message, Reject, Retry, _dispatch, kv
from wharf.testing import TestHost, Write, run_batch


def msg(behave: str, payload: str = "", subject: str = "in.a", **kwargs) -> Message:
    return Message.for_test(subject, payload, {"behave": behave}, **kwargs)


def handle_one(m: BatchMessage) -> None:
    verb, _, arg = m.header("behave").partition(":")
    if verb == "publish":
        m.publish("out", m.payload, headers={"index": str(m.index)})
    elif verb == "write":
        m.bucket("b").put(m.subject, m.payload)
    elif verb == "retry":
        raise Retry(0.1)
    elif verb == "reject":
        raise Reject(arg)
    elif verb == "raise":
        raise KeyError(arg)


class QuietStderr:
    """Collects what the SDK writes to stderr (the traceback of an isolated exception)."""

    def __enter__(self):
        self.saved = _dispatch.sys.stderr
        _dispatch.sys.stderr = self.text = io.StringIO()
        return self

    def __exit__(self, *exc):
        _dispatch.sys.stderr = self.saved


class BatchTest(unittest.TestCase):
    def test_each_message_settles_by_its_own_result(self):
        """Results come back per message; outputs and writes are each message's own."""
        host = TestHost(allow=["out"], buckets={"b": "read-write"})
        batch = host.run_batch(
            lambda batch: batch.map(handle_one),
            [msg("publish", "x"), msg("reject:bad"), msg("write", "v", subject="k"), msg("retry")],
        )
        self.assertEqual(batch.kinds, ["ok", "reject", "ok", "retry"])
        first, second, third, fourth = batch.results
        self.assertEqual(first.published[0].header("index"), "0")
        self.assertEqual(second.reason, "bad")
        self.assertEqual(third.writes, [Write("b", "k", b"v")])
        self.assertEqual(fourth.delay_ms, 100)
        self.assertTrue(all(not r.published for r in batch.results[1:]))
        self.assertEqual(host.kv_get("b", "k").value, b"v")

    def test_results_may_be_returned_directly(self):
        """None succeeds; Retry, Reject and refusal instances settle as if raised."""
        results = [None, Retry(), Reject("no"), InvalidPublish("bad"), KvUnavailable("later")]
        batch = run_batch(lambda b: results, [msg("x")] * 5)
        self.assertEqual(batch.kinds, ["ok", "retry", "reject", "reject", "retry"])
        self.assertEqual(batch.results[3].reason, "invalid publish: bad")

    def test_an_exception_in_one_message_settles_only_that_message(self):
        """Batch.map turns another exception into a retry, or on the final attempt a rejection with its line."""
        with QuietStderr() as err:
            batch = run_batch(
                lambda b: b.map(handle_one),
                [msg("publish"), msg("raise:x", max_attempts=3), msg("raise:y", attempt=3, max_attempts=3)],
                allow=["out"],
            )
        self.assertEqual(batch.kinds, ["ok", "retry", "reject"])
        self.assertIsInstance(batch.results[1].exception, KeyError)
        self.assertRegex(batch.results[2].reason, r"^KeyError: 'y' \(at test_batch\.py:\d+\)$")
        self.assertIn("Traceback", err.text.getvalue())

    def test_what_escapes_the_batch_handler_traps_the_whole_batch(self):
        """An exception outside map, a wrong number of results or no list traps every message."""

        def raises(batch):
            raise ValueError("whole batch")

        for handler, reason in (
            (raises, "ValueError: whole batch"),
            (lambda b: [None], "RuntimeError: the batch handler returned 1 results for a batch of 2 messages"),
            (lambda b: None, "TypeError: the batch handler returned NoneType"),
            (lambda b: ["ok", None], "TypeError: result 0 of the batch is 'ok'"),
        ):
            batch = run_batch(handler, [msg("a"), msg("b")])
            self.assertEqual(batch.kinds, ["trap", "trap"])
            self.assertTrue(batch.results[0].reason.startswith(reason), batch.results[0].reason)

    def test_single_message_calls_are_refused_in_a_batch_and_config_and_log_work(self):
        """wharf.publish and kv.bucket point at the message's methods; config and the log work as in a handler."""

        def handle_batch(batch):
            wharf.log.info("batch of %d", len(batch))
            wharf.publish("out", wharf.config("region"))

        batch = run_batch(handle_batch, [msg("a")], allow=["out"], config={"region": "eu"})
        self.assertEqual(batch.kinds, ["trap"])
        self.assertIn("in a batch handler, publish through the message", batch.results[0].reason)
        self.assertEqual(batch.logs[0].message, "batch of 1")
        batch = run_batch(lambda b: [kv.bucket("b")], [msg("a")])
        self.assertIn("msg.bucket(name)", batch.results[0].reason)

    def test_messages_stage_and_read_on_their_own_and_commit_in_order(self):
        """Each message reads its own staged writes only; a second create of one key conflicts on its own."""
        seen = []

        def handle_one(m):
            b = m.bucket("b")
            seen.append(b.get("k"))
            b.create("k", m.payload)
            seen.append(b.get("k").value)

        host = TestHost(buckets={"b": "read-write"})
        batch = host.run_batch(lambda b: b.map(handle_one), [msg("a", "1"), msg("b", "2")])
        self.assertEqual(seen, [None, b"1", None, b"2"])
        self.assertEqual(batch.kinds, ["ok", "conflict"])
        self.assertEqual(host.kv_get("b", "k").value, b"1")

    def test_limits_are_per_message(self):
        """Every message has its own outbox and key-value limits."""

        def handle_one(m):
            m.publish("out", b"")
            m.bucket("b").put("k", b"")

        batch = run_batch(
            lambda b: b.map(handle_one),
            [msg("a"), msg("b")],
            allow=["out"],
            buckets={"b": "read-write"},
            max_outbox_messages=1,
            max_kv_writes=1,
        )
        self.assertEqual(batch.kinds, ["ok", "ok"])

    def test_a_batch_is_a_sequence_of_batch_messages(self):
        """len, indexing, iteration and each message's index."""
        captured = []

        def handle_batch(batch: Batch):
            captured.extend([len(batch), batch[1].index, [m.subject for m in batch], isinstance(batch[0], Message)])
            return [None] * len(batch)

        run_batch(handle_batch, [msg("a", subject="x"), msg("b", subject="y")])
        self.assertEqual(captured, [2, 1, ["x", "y"], True])

    def test_the_decorator_registers_a_batch_handler(self):
        """@wharf.batch_handler registers the function as the component's batch handler and returns it."""
        saved = (_dispatch._handler, _dispatch._kind)
        try:
            _dispatch.unregister()

            @wharf.batch_handler
            def handle_batch(batch):
                return [None] * len(batch)

            self.assertEqual(_dispatch.registered_kind(), "batch")
            self.assertEqual(run_batch(None, [msg("a")]).kinds, ["ok"])
        finally:
            _dispatch._handler, _dispatch._kind = saved


if __name__ == "__main__":
    unittest.main()
