// Unit tests of the component glue (src/component.js) against a stand-in for
// the `wharf:handler/host@0.1.0` import. Building and running the examples
// checks it against the real bindings.

import assert from 'node:assert/strict';
import { register as registerHooks } from 'node:module';
import { test } from 'node:test';

import { InvalidPublish, log, Message, OutboxFull, publish, PublishNotAllowed, Reject, Retry, config } from 'wharf-guest';
import { register, unregister } from '../src/dispatch.js';

registerHooks('./fixtures/host-hooks.mjs', import.meta.url);
const { handle } = await import('../src/component.js');
const { calls } = await import('./fixtures/fake-host.js');

const raw = Message.forTest('orders.new', '{}')._raw;

async function handleWith(fn) {
  unregister();
  register(fn);
  return handle(raw);
}

test('importing the glue routes publish, config and log to the host imports', () => {
  calls.length = 0;
  publish('a.b', 'x', [
    ['K', '1'],
    ['K', '2'],
  ]);
  assert.equal(config('region'), 'eu');
  log.warn('careful');
  assert.deepEqual(calls, [
    ['publish', 'a.b', new TextEncoder().encode('x'), [{ name: 'K', values: ['1', '2'] }]],
    ['config', 'region'],
    ['log', 'warn', 'careful'],
  ]);
});

test('refused publishes become PublishError subclasses with the host text', () => {
  for (const [subject, cls] of [
    ['denied', PublishNotAllowed],
    ['full', OutboxFull],
    ['bad', InvalidPublish],
  ]) {
    assert.throws(
      () => publish(subject, ''),
      (e) => e instanceof cls && e.detail === `${subject} refused`,
    );
  }
});

test('outcomes map to the WIT result the bindings expect', async () => {
  assert.deepEqual(await handleWith(() => {}), { tag: 'ok', val: undefined });
  assert.deepEqual(
    await handleWith(() => {
      throw new Retry({ delay: 250 });
    }),
    { tag: 'err', val: { tag: 'retry', val: 250n } },
  );
  assert.deepEqual(
    await handleWith(() => {
      throw new Retry();
    }),
    { tag: 'err', val: { tag: 'retry', val: undefined } },
  );
  assert.deepEqual(
    await handleWith(async () => {
      throw new Reject('no items');
    }),
    { tag: 'err', val: { tag: 'reject', val: 'no items' } },
  );
  assert.deepEqual(
    await handleWith(() => publish('denied', '')),
    { tag: 'err', val: { tag: 'reject', val: 'publish not allowed: denied refused' } },
  );
});

test('an uncaught error writes its stack, then Name: message (at file:line:column) last, then traps through fetch', async () => {
  const written = [];
  const savedError = console.error;
  const savedFetch = globalThis.fetch;
  class Trapped extends Error {}
  console.error = (text) => written.push(String(text));
  globalThis.fetch = () => {
    written.push('<trap>');
    throw new Trapped();
  };
  let thrown;
  try {
    await assert.rejects(
      handleWith(() => {
        thrown = new TypeError('boom');
        throw thrown;
      }),
      Trapped,
    );
  } finally {
    console.error = savedError;
    globalThis.fetch = savedFetch;
  }
  assert.equal(written.length, 2);
  const lines = written[0].split('\n');
  const [, place] = /\/(component\.test\.js:\d+:\d+)\)?$/.exec(thrown.stack.split('\n')[1]);
  assert.equal(lines.at(-1), `TypeError: boom (at ${place})`);
  assert.ok(lines.length > 1, 'the stack comes before the summary');
  // The SDK's own callers (settle, handle) end the stack: they are left out.
  assert.ok(!lines.slice(0, -1).at(-1).includes('/src/'), lines.join('\n'));
  assert.equal(written[1], '<trap>');
});
