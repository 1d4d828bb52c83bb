// Unit tests of the component glue of the `batch-handler` world
// (src/batch-component.js) against a stand-in for the
// `wharf:handler/batch-host@0.2.0` import. Building and running the fixtures
// checks it against the real bindings.

import assert from 'node:assert/strict';
import { register as registerHooks } from 'node:module';
import { test } from 'node:test';

import { config, kv, log, Message, publish, publishJson, Reject, Retry } from 'wharf-guest';
import { register, unregister } from '../src/dispatch.js';

registerHooks('./fixtures/host-hooks.mjs', import.meta.url);
const { handleBatch } = await import('../src/batch-component.js');
const { calls } = await import('./fixtures/fake-host.js');

const utf8 = (s) => new TextEncoder().encode(s);

async function handleBatchWith(fn, count = 2) {
  unregister();
  register(fn, 'batch');
  calls.length = 0;
  return handleBatch(Array.from({ length: count }, (_, i) => Message.forTest(`in.${i}`, String(i))._raw));
}

test("each message's calls reach the batch host with its index; config and log need none", async () => {
  const results = await handleBatchWith((batch) => {
    log.info(`batch of ${batch.length}`);
    const region = config('region');
    for (const msg of batch) {
      msg.publish('out', msg.payload, { region });
      const bucket = msg.bucket('totals');
      bucket.get('a');
      bucket.put('k', 'v', { expected: 3 });
      bucket.create('c', '');
      bucket.delete('d', { expected: 4n });
    }
    return [undefined, new Reject('second')];
  });
  assert.deepEqual(results, [
    { tag: 'ok', val: undefined },
    { tag: 'err', val: { tag: 'reject', val: 'second' } },
  ]);
  const header = [{ name: 'region', values: ['eu'] }];
  const perMessage = (i) => [
    ['batch.publish', i, 'out', utf8(String(i)), header],
    ['batch.kvGet', i, 'totals', 'a'],
    ['batch.kvPut', i, 'totals', 'k', utf8('v'), 3n],
    ['batch.kvCreate', i, 'totals', 'c', utf8('')],
    ['batch.kvDelete', i, 'totals', 'd', 4n],
  ];
  assert.deepEqual(calls, [
    ['batch.log', 'info', 'batch of 2'],
    ['batch.config', 'region'],
    ...perMessage(0),
    ...perMessage(1),
  ]);
});

test('per-message results, refusals included, become the WIT results in order', async () => {
  const results = await handleBatchWith(
    (batch) =>
      batch.map(async (msg) => {
        if (msg.index === 0) {
          throw new Retry({ delay: 500 });
        }
        if (msg.index === 1) {
          msg.publish('denied', '');
        }
        if (msg.index === 2) {
          msg.bucket('b').get('unavailable');
        }
      }),
    4,
  );
  assert.deepEqual(results, [
    { tag: 'err', val: { tag: 'retry', val: 500n } },
    { tag: 'err', val: { tag: 'reject', val: 'publish not allowed: denied refused' } },
    { tag: 'err', val: { tag: 'retry', val: undefined } },
    { tag: 'ok', val: undefined },
  ]);
});

test('single-message calls are refused in a batch, naming the message methods to use', () => {
  calls.length = 0;
  assert.throws(() => publish('out', ''), /msg\.publish\(\.\.\.\)/);
  assert.throws(() => publishJson('out', {}), /msg\.publishJson\(\.\.\.\)/);
  assert.throws(() => kv.bucket('b'), /msg\.bucket\(name\)/);
  assert.deepEqual(calls, []);
});

test('what escapes the batch handler traps the whole batch through fetch', async () => {
  const written = [];
  const saved = { error: console.error, fetch: globalThis.fetch };
  class Trapped extends Error {}
  console.error = (text) => written.push(String(text));
  globalThis.fetch = () => {
    throw new Trapped();
  };
  try {
    await assert.rejects(
      handleBatchWith(() => [undefined]),
      Trapped,
    );
  } finally {
    console.error = saved.error;
    globalThis.fetch = saved.fetch;
  }
  assert.match(written[0].split('\n').at(-1), /^Error: the batch handler returned 1 results for a batch of 2 messages/);
});
