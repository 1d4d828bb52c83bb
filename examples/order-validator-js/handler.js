// An order validator, as a Wharf handler in JavaScript.
//
// The same handler as examples/order-validator (Rust):
//
// - Malformed orders (not JSON, not shaped like an order, no items, a zero
//   quantity) are rejected and land in the dead-letter stream with the reason.
// - An order for a SKU the inventory service calls "busy" is retried: the
//   first attempt asks for a redelivery after a short delay, the next succeeds.
// - Valid orders are published to `orders.accepted` with their total.

import { config, handler, log, publishJson, Reject, Retry } from 'wharf-guest';

const U32_MAX = 2 ** 32 - 1;
// JSON.parse reads every number as a double, so this is as far as a price can be exact.
const PRICE_MAX = Number.MAX_SAFE_INTEGER;

export const handle = handler((msg) => {
  const order = parseOrder(msg.json());
  if (order.items.length === 0) {
    throw new Reject(`order ${order.id} has no items`);
  }
  const empty = order.items.find((item) => item.qty === 0);
  if (empty) {
    throw new Reject(`order ${order.id}: item ${empty.sku} has quantity 0`);
  }
  // Stands in for a call to an inventory service that is briefly busy.
  const busyPrefix = config('busy_sku_prefix', 'BUSY-');
  if (msg.attempt === 1 && order.items.some((item) => item.sku.startsWith(busyPrefix))) {
    log.warn(`inventory busy for order ${order.id}; retrying`);
    throw new Retry({ delay: 200 });
  }
  const accepted = {
    id: order.id,
    customer: order.customer,
    total_cents: order.items.reduce((sum, item) => sum + item.qty * item.price_cents, 0),
    lines: order.items.length,
  };
  publishJson('orders.accepted', accepted, { 'Order-Id': order.id });
});

/** Checks the decoded JSON has an order's shape, the way the Rust handler's serde types do. */
export function parseOrder(value) {
  const order = expectObject(value, 'struct Order');
  const items = field(order, 'items');
  if (!Array.isArray(items)) {
    throw invalid(items, 'a sequence');
  }
  return {
    id: expectString(field(order, 'id')),
    customer: expectString(field(order, 'customer')),
    items: items.map(parseItem),
  };
}

function parseItem(value) {
  const item = expectObject(value, 'struct Item');
  return {
    sku: expectString(field(item, 'sku')),
    qty: expectUint(field(item, 'qty'), U32_MAX, 'u32'),
    price_cents: expectUint(field(item, 'price_cents'), PRICE_MAX, 'u64'),
  };
}

function field(obj, name) {
  if (!Object.prototype.hasOwnProperty.call(obj, name)) {
    throw notForHandler(`missing field \`${name}\``);
  }
  return obj[name];
}

function expectObject(value, expected) {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw invalid(value, expected);
  }
  return value;
}

function expectString(value) {
  if (typeof value !== 'string') {
    throw invalid(value, 'a string');
  }
  return value;
}

function expectUint(value, max, expected) {
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw invalid(value, expected);
  }
  if (value < 0 || value > max) {
    throw notForHandler(`invalid value: integer \`${value}\`, expected ${expected}`);
  }
  return value;
}

function invalid(value, expected) {
  return notForHandler(`invalid type: ${describe(value)}, expected ${expected}`);
}

function notForHandler(detail) {
  // The same prefix as Message.json()'s own parse errors, and the Rust SDK's.
  return new Reject(`payload is not valid JSON for this handler: ${detail}`);
}

function describe(value) {
  if (value === null) return 'null';
  if (typeof value === 'boolean') return `boolean \`${value}\``;
  if (typeof value === 'number') return Number.isInteger(value) ? `integer \`${value}\`` : `floating point \`${value}\``;
  if (typeof value === 'string') return `string "${value}"`;
  if (Array.isArray(value)) return 'sequence';
  return 'map';
}
