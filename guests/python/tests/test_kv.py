"""Unit tests of key-value state: the `wharf.kv` API over the test host, which follows the host's rules."""

import unittest

import wharf
from wharf import KvDenied, KvError, KvInvalid, KvLimit, KvUnavailable, Message, Reject, kv
from wharf.testing import Conflict, TestHost, Write, run


def total(msg: Message) -> None:
    """A running total per account: reads, then writes expecting the revision it read (or creates)."""
    totals = kv.bucket("totals")
    account = msg.header("account")
    entry = totals.get_json(account)
    cents = msg.json()["cents"]
    if entry is None:
        totals.create_json(account, cents)
    else:
        totals.put_json(account, entry.value + cents, expected=entry.revision)


def payment(account: str, cents: int) -> Message:
    return Message.for_test("payments", f'{{"cents": {cents}}}', {"account": account})


class KeyValueTest(unittest.TestCase):
    def test_a_running_total_accumulates_across_runs(self):
        """Each successful run's writes are applied, so the next run reads them, at the bucket's next revision."""
        host = TestHost(buckets={"totals": "read-write"})
        for cents in (5, 7, 30):
            self.assertEqual(host.run(total, payment("a1", cents)).kind, "ok")
        entry = host.kv_get("totals", "a1")
        self.assertEqual((entry.value, entry.revision), (b"42", 3))
        self.assertEqual(host.kv_keys("totals"), ["a1"])

    def test_reads_see_the_deliverys_own_writes_with_the_revision_their_condition_names(self):
        """Before commit a read sees the staged value; its revision is the one the condition names (0 without one)."""
        seen = []

        def handle(msg):
            b = kv.bucket("b")
            first = b.get("k")
            b.put("k", "new", expected=first.revision)
            seen.append(b.get("k"))
            b.put("other", "x")
            seen.append(b.get("other"))
            b.delete("k")
            seen.append(b.get("k"))

        host = TestHost(buckets={"b": "read-write"}, kv={"b": {"k": "old"}})
        result = host.run(handle, Message.for_test("a"))
        self.assertEqual(result.kind, "ok")
        self.assertEqual(seen, [kv.Entry(b"new", 1), kv.Entry(b"x", 0), None])
        self.assertEqual(
            result.writes,
            [Write("b", "k", None, expected=1), Write("b", "other", b"x")],
        )
        self.assertIsNone(host.kv_get("b", "k"))

    def test_only_the_declared_buckets_in_their_mode(self):
        """Like the host, a bucket not in the `kv` table is denied, a read-only one refuses writes."""
        host = TestHost(buckets={"prices": "read"})
        for call, cls, text in (
            (lambda: kv.bucket("other").get("k"), KvDenied, 'bucket "other" is not in handler "test"\'s `kv` table'),
            (lambda: kv.bucket("prices").put("k", "v"), KvDenied, 'bucket "prices" is read-only for handler "test"'),
        ):
            with host, self.assertRaises(cls) as cm:
                call()
            self.assertEqual(cm.exception.detail, text)
        with host:
            self.assertIsNone(kv.bucket("prices").get("k"))

    def test_keys_follow_the_key_value_grammar(self):
        """Letters, digits and -/_=. only, not starting or ending with '.', no empty token."""
        host = TestHost(buckets={"b": "read-write"})
        with host:
            for good in ("a", "acct.42", "a/b=c_d-e"):
                kv.bucket("b").put(good, "v")
            for bad in ("", ".a", "a.", "a..b", "a b", "a*", "ü", "k" * 1025):
                with self.assertRaises(KvInvalid, msg=bad) as cm:
                    kv.bucket("b").get(bad)
            self.assertIn("is not a valid key: letters, digits and -/_=. only", str(cm.exception))
            with self.assertRaises(KvInvalid) as cm:
                kv.bucket("b").get("a\nb")
            self.assertIn('"a\\nb" is not a valid key', str(cm.exception))

    def test_staged_writes_are_limited_in_count_and_bytes(self):
        """`max_kv_writes` keys and `max_kv_write_bytes` of keys and values; rewriting a key counts its new size only."""
        with TestHost(buckets={"b": "read-write"}, max_kv_writes=2):
            b = kv.bucket("b")
            b.put("a", "1")
            b.put("b", "1")
            b.put("a", "2")
            with self.assertRaisesRegex(KvLimit, "at most 2 keys written per delivery"):
                b.put("c", "1")
            b.delete("b")
        with TestHost(buckets={"b": "read-write"}, max_kv_write_bytes=10):
            b = kv.bucket("b")
            b.put("a", "123456789")
            with self.assertRaisesRegex(KvLimit, "at most 10 bytes of keys and values staged per delivery"):
                b.put("b", "1")
            b.put("a", "12345678")

    def test_one_conditional_write_per_delivery(self):
        """A second conditional key is a limit; a conditional key may be rewritten with its condition or none."""
        host = TestHost(buckets={"b": "read-write"})
        with host:
            b = kv.bucket("b")
            b.put("a", "1", expected=7)
            b.put("b", "1")
            with self.assertRaisesRegex(KvLimit, 'one conditional write per delivery .*key "a" in bucket "b"'):
                b.create("c", "1")
            b.put("a", "2", expected=7)
            b.put("a", "3")
            with self.assertRaisesRegex(KvInvalid, "already written in this delivery under another condition"):
                b.put("a", "4", expected=8)
            self.assertEqual(host.staged_writes()[0], Write("b", "a", b"3", expected=7))
            # A plain key may not take a condition while another key holds one.
            with self.assertRaises(KvLimit):
                b.create("b", "1")
            host.discard()
        with TestHost(buckets={"b": "read-write"}) as other:
            kv.bucket("b").put("x", "1")
            kv.bucket("b").create("x", "1")
            self.assertEqual(other.staged_writes(), [Write("b", "x", b"1", create=True)])

    def test_a_stale_condition_conflicts_at_commit_and_applies_nothing(self):
        """Another writer between the run and its commit: the outcome is `conflict`, and nothing of the run is applied."""
        host = TestHost(buckets={"totals": "read-write"}, kv={"totals": {"a1": "5"}})

        def handle(msg):
            total(msg)
            kv.bucket("totals").put("last", msg.header("account"))

        result = host.call(handle, payment("a1", 7))
        self.assertEqual(result.kind, "ok")
        host.kv_put("totals", "a1", "100")
        host.commit_result(result)
        self.assertEqual(result.kind, "conflict")
        self.assertEqual(result.reason, 'key "a1" in bucket "totals" moved on; the write expected revision 1')
        self.assertEqual(host.kv_get("totals", "a1").value, b"100")
        self.assertIsNone(host.kv_get("totals", "last"))
        # Committing again changes nothing.
        host.commit_result(result)
        self.assertEqual(result.kind, "conflict")

    def test_creates_and_revisions_follow_delete_markers(self):
        """A create holds while the key has no value, a deleted one included; a delete marker has a revision of its own."""
        host = TestHost(buckets={"b": "read-write"})

        def create(msg):
            kv.bucket("b").create("k", msg.payload)

        self.assertEqual(host.run(create, Message.for_test("a", "1")).kind, "ok")
        self.assertEqual(host.run(create, Message.for_test("a", "2")).kind, "conflict")
        marker = host.kv_delete("b", "k")
        self.assertEqual(marker, 2)
        self.assertEqual(host.run(create, Message.for_test("a", "3")).kind, "ok")
        self.assertEqual(host.kv_get("b", "k"), kv.Entry(b"3", 3))

        def put_never_written(msg):
            kv.bucket("b").put("new", "x", expected=0)

        self.assertEqual(host.run(put_never_written, Message.for_test("a")).kind, "ok")
        self.assertEqual(host.run(put_never_written, Message.for_test("a")).kind, "conflict")

    def test_a_failed_run_applies_nothing(self):
        """Writes staged by a run that retries, rejects or traps are never applied."""
        host = TestHost(buckets={"b": "read-write"})

        def staged_then(outcome):
            def handle(msg):
                kv.bucket("b").put("k", "v")
                raise outcome

            return handle

        for outcome, kind in ((wharf.Retry(), "retry"), (Reject("no"), "reject"), (ValueError("boom"), "trap")):
            result = host.run(staged_then(outcome), Message.for_test("a"))
            self.assertEqual(result.kind, kind)
            self.assertEqual(result.writes, [Write("b", "k", b"v")])
            self.assertIsNone(host.kv_get("b", "k"))

    def test_uncaught_key_value_errors_retry_when_unavailable_and_reject_otherwise(self):
        """`KvUnavailable` left uncaught retries after the backoff; every other `KvError` rejects with its text."""

        def read(msg):
            kv.bucket(msg.subject).get("k")

        result = run(read, Message.for_test("b"), buckets={"b": "read"}, kv=None)
        self.assertEqual(result.kind, "ok")
        host = TestHost(buckets={"b": "read"}, unavailable=["b"])
        result = host.run(read, Message.for_test("b"))
        self.assertEqual((result.kind, result.delay_ms), ("retry", None))
        result = run(read, Message.for_test("other"))
        self.assertEqual(result.kind, "reject")
        self.assertEqual(result.reason, 'key-value access denied: bucket "other" is not in handler "test"\'s `kv` table')
        for cls in (KvDenied, KvInvalid, KvLimit, KvUnavailable):
            self.assertTrue(issubclass(cls, KvError))

    def test_values_are_bytes_and_text_and_json(self):
        """put takes bytes or text; an entry decodes as text or JSON, and a bad stored value rejects."""
        host = TestHost(buckets={"b": "read-write"}, kv={"b": {"bin": b"\xff", "json": '{"n": 2}'}})
        with host:
            b = kv.bucket("b")
            self.assertEqual(b.get("json").json(), {"n": 2})
            self.assertEqual(b.get_json("json"), kv.Entry({"n": 2}, 2))
            self.assertEqual(b.get("json").text(), '{"n": 2}')
            with self.assertRaisesRegex(Reject, "stored value is not UTF-8"):
                b.get("bin").text()
            with self.assertRaisesRegex(Reject, "stored value is not valid JSON"):
                b.get_json("bin")
            with self.assertRaisesRegex(KvInvalid, "cannot be encoded as JSON"):
                b.put_json("x", object())
            with self.assertRaises(TypeError):
                b.put("x", 5)
            with self.assertRaises(TypeError):
                b.put("x", "v", expected="7")
            b.create_json("made", [1])
        self.assertEqual(host.kv_get("b", "made").value, b"[1]")

    def test_a_test_host_block_applies_its_writes_when_it_ends_cleanly(self):
        """Used as a context manager, a TestHost commits on a clean exit, discards on an exception, and raises Conflict."""
        host = TestHost(buckets={"b": "read-write"})
        with host:
            kv.bucket("b").put("k", "1")
            self.assertIsNone(host.kv_get("b", "k"))
        self.assertEqual(host.kv_get("b", "k").value, b"1")
        with self.assertRaises(Reject):
            with host:
                kv.bucket("b").put("k", "2")
                raise Reject("no")
        self.assertEqual(host.kv_get("b", "k").value, b"1")
        with self.assertRaisesRegex(Conflict, "expected no value"):
            with host:
                kv.bucket("b").create("k", "3")

    def test_without_buckets_every_call_is_denied(self):
        """A test host, like the host, reaches no bucket unless its `kv` table names it."""
        with TestHost():
            with self.assertRaises(KvDenied):
                kv.bucket("anything").get("k")
        with self.assertRaisesRegex(ValueError, "unknown mode 'write'"):
            TestHost(buckets={"b": "write"})


if __name__ == "__main__":
    unittest.main()
