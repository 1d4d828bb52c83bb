"""Unit tests of the order validator, without the host.

Run from this directory with the SDK on the path:

    PYTHONPATH=../../guests/python python3 -m unittest
"""

import json
import unittest

from wharf import Message
from wharf.testing import run

from handler import handle

# The handler's `publish` allow-list in wharf.toml. Like the host, the test
# helpers allow no subject unless given one.
ALLOW = ["orders.accepted"]


def order_msg(body, attempt=1, max_attempts=4):
    payload = body if isinstance(body, str) else json.dumps(body)
    return Message.for_test("orders.new", payload, attempt=attempt, max_attempts=max_attempts)


class OrderValidatorTest(unittest.TestCase):
    def test_valid_order_is_published_with_total_and_headers(self):
        """A valid order publishes its total to orders.accepted with the order id header."""
        msg = order_msg({"id": "A-1", "customer": "ada", "items": [{"sku": "BOOK-1", "qty": 2, "price_cents": 1250}]})
        result = run(handle, msg, allow=ALLOW)
        self.assertEqual(result.kind, "ok")
        self.assertEqual(len(result.published), 1)
        out = result.published[0]
        self.assertEqual(out.subject, "orders.accepted")
        self.assertEqual(out.payload, b'{"id":"A-1","customer":"ada","total_cents":2500,"lines":1}')
        self.assertEqual(out.headers, {"Content-Type": ["application/json"], "Order-Id": ["A-1"]})

    def test_without_its_allow_list_a_valid_order_is_refused_like_the_host_would(self):
        """A handler whose publish setting lacks orders.accepted dead-letters valid orders: run shows it too."""
        msg = order_msg({"id": "A-1", "customer": "ada", "items": [{"sku": "BOOK-1", "qty": 2, "price_cents": 1250}]})
        result = run(handle, msg)
        self.assertEqual(result.kind, "reject")
        self.assertTrue(result.reason.startswith('publish not allowed: subject "orders.accepted"'), result.reason)

    def test_busy_sku_is_retried_after_200ms_on_the_first_attempt_only(self):
        """A SKU with the busy prefix asks for a 200 ms retry on attempt 1 and is accepted on attempt 2."""
        body = {"id": "A-2", "customer": "bob", "items": [{"sku": "BUSY-7", "qty": 1, "price_cents": 999}]}
        first = run(handle, order_msg(body, attempt=1), allow=ALLOW)
        self.assertEqual((first.kind, first.delay_ms), ("retry", 200))
        self.assertEqual(first.logs[0].level, "warn")
        self.assertEqual(first.logs[0].message, "inventory busy for order A-2; retrying")
        second = run(handle, order_msg(body, attempt=2), allow=ALLOW)
        self.assertEqual(second.kind, "ok")
        self.assertEqual(second.published[0].json()["total_cents"], 999)

    def test_busy_prefix_comes_from_config(self):
        """The busy prefix is the handler's busy_sku_prefix config value."""
        body = {"id": "A-7", "customer": "fay", "items": [{"sku": "SLOW-1", "qty": 1, "price_cents": 5}]}
        self.assertEqual(run(handle, order_msg(body), allow=ALLOW).kind, "ok")
        slow = run(handle, order_msg(body), allow=ALLOW, config={"busy_sku_prefix": "SLOW-"})
        self.assertEqual(slow.kind, "retry")

    def test_rejects_with_the_rust_handlers_reasons(self):
        """Malformed orders are rejected with the same reasons as the Rust example."""
        cases = [
            ({"id": "A-4", "customer": "cy", "items": []}, "order A-4 has no items"),
            (
                {"id": "A-5", "customer": "di", "items": [{"sku": "PEN", "qty": 0, "price_cents": 100}]},
                "order A-5: item PEN has quantity 0",
            ),
            ({"id": "A-8", "items": []}, "payload is not valid JSON for this handler: missing field `customer`"),
            (
                {"id": 8, "customer": "x", "items": []},
                "payload is not valid JSON for this handler: invalid type: integer `8`, expected a string",
            ),
            (
                {"id": "A-9", "customer": "x", "items": [{"sku": "P", "qty": -1, "price_cents": 1}]},
                "payload is not valid JSON for this handler: invalid value: integer `-1`, expected u32",
            ),
            ([1, 2], "payload is not valid JSON for this handler: invalid type: sequence, expected struct Order"),
        ]
        for body, reason in cases:
            with self.subTest(reason=reason):
                result = run(handle, order_msg(body), allow=ALLOW)
                self.assertEqual((result.kind, result.reason), ("reject", reason))
                self.assertEqual(result.published, [])

    def test_malformed_json_is_rejected(self):
        """A payload that is not JSON is rejected with the parse error."""
        result = run(handle, order_msg('{"id":"A-3","customer":'), allow=ALLOW)
        self.assertEqual(result.kind, "reject")
        self.assertTrue(result.reason.startswith("payload is not valid JSON for this handler: "), result.reason)


if __name__ == "__main__":
    unittest.main()
