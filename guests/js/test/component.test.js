// Unit tests of the component glue of the `handler` world (src/component.js)
// against stand-ins for the `wharf:handler/host@0.2.0` and `kv@0.2.0`
// imports. Building and running the fixtures and examples checks it against
// the real bindings.

import assert from 'node:assert/strict';
import { register as registerHooks } from 'node:module';
import { test } from 'node:test';

import {
  config,
  InvalidPublish,
  KvDenied,
  KvInvalid,
  KvLimit,
  KvUnavailable,
  kv,
  log,
  Message,
  OutboxFull,
  publish,
  PublishNotAllowed,
  Reject,
  Retry,
} from 'wharf-guest';
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

test('key-value calls reach the kv imports with bytes and BigInt revisions; entries come back', () => {
  calls.length = 0;
  const accounts = kv.bucket('accounts');
  const entry = accounts.get('a');
  assert.deepEqual([new TextDecoder().decode(entry.value), entry.revision], ['10', 7]);
  assert.equal(accounts.get('b'), undefined);
  accounts.put('a', '11', { expected: entry.revision });
  accounts.create('c', new Uint8Array([1]));
  accounts.delete('d');
  accounts.putJson('e', { n: 1 });
  const utf8 = (s) => new TextEncoder().encode(s);
  assert.deepEqual(calls, [
    ['get', 'accounts', 'a'],
    ['get', 'accounts', 'b'],
    ['put', 'accounts', 'a', utf8('11'), 7n],
    ['create', 'accounts', 'c', new Uint8Array([1])],
    ['delete', 'accounts', 'd', undefined],
    ['put', 'accounts', 'e', utf8('{"n":1}'), undefined],
  ]);
});

test('refused key-value calls become KvError subclasses with the host text', () => {
  for (const [key, cls] of [
    ['denied', KvDenied],
    ['invalid', KvInvalid],
    ['limit', KvLimit],
    ['unavailable', KvUnavailable],
  ]) {
    assert.throws(
      () => kv.bucket('b').get(key),
      (e) => e instanceof cls && e.detail === `${key} refused` && e.kind === key,
    );
  }
});

test('uncaught key-value errors retry when unavailable and reject otherwise', async () => {
  assert.deepEqual(await handleWith(() => kv.bucket('b').get('unavailable')), {
    tag: 'err',
    val: { tag: 'retry', val: undefined },
  });
  assert.deepEqual(await handleWith(() => kv.bucket('b').put('denied', '')), {
    tag: 'err',
    val: { tag: 'reject', val: 'key-value access denied: denied refused' },
  });
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
