// Unit tests of the order validator, without the host.
//
// Run from this directory: `npm ci` (links the SDK from guests/js), then `node --test`.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Message } from 'wharf-guest';
import { run } from 'wharf-guest/testing';

import { handle } from './handler.js';

// The handler's `publish` allow-list in wharf.toml. Like the host, the test
// helpers allow no subject unless given one.
const ALLOW = ['orders.accepted'];

function orderMsg(body, { attempt = 1, maxAttempts = 4 } = {}) {
  const payload = typeof body === 'string' ? body : JSON.stringify(body);
  return Message.forTest('orders.new', payload, { attempt, maxAttempts });
}

test('a valid order publishes its total to orders.accepted with the order id header', async () => {
  const msg = orderMsg({ id: 'A-1', customer: 'ada', items: [{ sku: 'BOOK-1', qty: 2, price_cents: 1250 }] });
  const result = await run(handle, msg, { allow: ALLOW });
  assert.equal(result.kind, 'ok');
  assert.equal(result.published.length, 1);
  const [out] = result.published;
  assert.equal(out.subject, 'orders.accepted');
  assert.equal(out.text(), '{"id":"A-1","customer":"ada","total_cents":2500,"lines":1}');
  assert.deepEqual(out.headers, { 'Content-Type': ['application/json'], 'Order-Id': ['A-1'] });
});

test('without its allow-list a valid order is refused, as the host would refuse it', async () => {
  const msg = orderMsg({ id: 'A-1', customer: 'ada', items: [{ sku: 'BOOK-1', qty: 2, price_cents: 1250 }] });
  const result = await run(handle, msg);
  assert.equal(result.kind, 'reject');
  assert.ok(result.reason.startsWith('publish not allowed: subject "orders.accepted"'), result.reason);
});

test('a busy SKU asks for a 200 ms retry on attempt 1 and is accepted on attempt 2', async () => {
  const body = { id: 'A-2', customer: 'bob', items: [{ sku: 'BUSY-7', qty: 1, price_cents: 999 }] };
  const first = await run(handle, orderMsg(body, { attempt: 1 }), { allow: ALLOW });
  assert.equal(first.kind, 'retry');
  assert.equal(first.delayMs, 200);
  assert.deepEqual(first.logs, [{ level: 'warn', message: 'inventory busy for order A-2; retrying' }]);
  const second = await run(handle, orderMsg(body, { attempt: 2 }), { allow: ALLOW });
  assert.equal(second.kind, 'ok');
  assert.equal(second.published[0].json().total_cents, 999);
});

test('the busy prefix is the handler\'s busy_sku_prefix config value', async () => {
  const body = { id: 'A-7', customer: 'fay', items: [{ sku: 'SLOW-1', qty: 1, price_cents: 5 }] };
  assert.equal((await run(handle, orderMsg(body), { allow: ALLOW })).kind, 'ok');
  const slow = await run(handle, orderMsg(body), { allow: ALLOW, config: { busy_sku_prefix: 'SLOW-' } });
  assert.equal(slow.kind, 'retry');
});

test('malformed orders are rejected with the same reasons as the Rust example', async () => {
  const prefix = 'payload is not valid JSON for this handler: ';
  const cases = [
    [{ id: 'A-4', customer: 'cy', items: [] }, 'order A-4 has no items'],
    [{ id: 'A-5', customer: 'di', items: [{ sku: 'PEN', qty: 0, price_cents: 100 }] }, 'order A-5: item PEN has quantity 0'],
    [{ id: 'A-8', items: [] }, `${prefix}missing field \`customer\``],
    [{ id: 8, customer: 'x', items: [] }, `${prefix}invalid type: integer \`8\`, expected a string`],
    [
      { id: 'A-9', customer: 'x', items: [{ sku: 'P', qty: -1, price_cents: 1 }] },
      `${prefix}invalid value: integer \`-1\`, expected u32`,
    ],
    [[1, 2], `${prefix}invalid type: sequence, expected struct Order`],
  ];
  for (const [body, reason] of cases) {
    const result = await run(handle, orderMsg(body), { allow: ALLOW });
    assert.equal(result.kind, 'reject', reason);
    assert.equal(result.reason, reason);
    assert.deepEqual(result.published, []);
  }
});

test('a payload that is not JSON is rejected with the parse error', async () => {
  const result = await run(handle, orderMsg('{"id":"A-3","customer":'), { allow: ALLOW });
  assert.equal(result.kind, 'reject');
  assert.ok(result.reason.startsWith('payload is not valid JSON for this handler: '), result.reason);
});
