"""An order validator, as a Wharf handler in Python.

The same handler as examples/order-validator (Rust):

- Malformed orders (not JSON, not shaped like an order, no items, a zero
  quantity) are rejected and land in the dead-letter stream with the reason.
- An order for a SKU the inventory service calls "busy" is retried: the first
  attempt asks for a redelivery after a short delay, the next succeeds.
- Valid orders are published to `orders.accepted` with their total.
"""

from datetime import timedelta

import wharf
from wharf import Message, Reject, Retry, log

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1


@wharf.handler
def handle(msg: Message) -> None:
    order = parse_order(msg.json())
    if not order["items"]:
        raise Reject(f"order {order['id']} has no items")
    for item in order["items"]:
        if item["qty"] == 0:
            raise Reject(f"order {order['id']}: item {item['sku']} has quantity 0")
    # Stands in for a call to an inventory service that is briefly busy.
    busy_prefix = wharf.config("busy_sku_prefix", "BUSY-")
    if msg.attempt == 1 and any(item["sku"].startswith(busy_prefix) for item in order["items"]):
        log.warn("inventory busy for order %s; retrying", order["id"])
        raise Retry(timedelta(milliseconds=200))
    accepted = {
        "id": order["id"],
        "customer": order["customer"],
        "total_cents": sum(item["qty"] * item["price_cents"] for item in order["items"]),
        "lines": len(order["items"]),
    }
    wharf.publish_json("orders.accepted", accepted, headers={"Order-Id": order["id"]})


def parse_order(value: object) -> dict:
    """Checks the decoded JSON has an order's shape, the way the Rust handler's serde types do."""
    order = expect_object(value, "struct Order")
    items = field(order, "items")
    if not isinstance(items, list):
        raise invalid(items, "a sequence")
    return {
        "id": expect_str(field(order, "id")),
        "customer": expect_str(field(order, "customer")),
        "items": [parse_item(item) for item in items],
    }


def parse_item(value: object) -> dict:
    item = expect_object(value, "struct Item")
    return {
        "sku": expect_str(field(item, "sku")),
        "qty": expect_uint(field(item, "qty"), U32_MAX, "u32"),
        "price_cents": expect_uint(field(item, "price_cents"), U64_MAX, "u64"),
    }


def field(obj: dict, name: str) -> object:
    if name not in obj:
        raise not_for_handler(f"missing field `{name}`")
    return obj[name]


def expect_object(value: object, expected: str) -> dict:
    if not isinstance(value, dict):
        raise invalid(value, expected)
    return value


def expect_str(value: object) -> str:
    if not isinstance(value, str):
        raise invalid(value, "a string")
    return value


def expect_uint(value: object, maximum: int, expected: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(value, expected)
    if not 0 <= value <= maximum:
        raise not_for_handler(f"invalid value: integer `{value}`, expected {expected}")
    return value


def invalid(value: object, expected: str) -> Reject:
    return not_for_handler(f"invalid type: {describe(value)}, expected {expected}")


def not_for_handler(detail: str) -> Reject:
    # The same prefix as Message.json's own parse errors, and the Rust SDK's.
    return Reject(f"payload is not valid JSON for this handler: {detail}")


def describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, list):
        return "sequence"
    return "map"
