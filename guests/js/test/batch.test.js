// Unit tests of batch handlers: per-message results, outputs and writes,
// through the test host.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { batchHandler, config, InvalidPublish, KvUnavailable, kv, log, Message, publish, Reject, Retry } from 'wharf-guest';
import { runBatch, TestHost, Write } from 'wharf-guest/testing';
import { registeredKind, unregister } from '../src/dispatch.js';

const msg = (behave, payload = '', options = {}) =>
  Message.forTest(options.subject ?? 'in.a', payload, { headers: { behave }, ...options });

function handleOne(m) {
  const [verb, ...rest] = m.header('behave').split(':');
  switch (verb) {
    case 'publish':
      m.publish('out', m.payload, { index: String(m.index) });
      return;
    case 'write':
      m.bucket('b').put(m.subject, m.payload);
      return;
    case 'retry':
      throw new Retry({ delay: 100 });
    case 'reject':
      throw new Reject(rest.join(':'));
    case 'raise':
      throw new TypeError(rest.join(':'));
    default:
  }
}

/** Runs `fn` with console.error collected (an isolated error's report goes there). */
async function quietly(fn) {
  const saved = console.error;
  const written = [];
  console.error = (text) => written.push(String(text));
  try {
    return [await fn(), written];
  } finally {
    console.error = saved;
  }
}

test('each message settles by its own result, with its own outputs and writes', async () => {
  const host = new TestHost({ allow: ['out'], buckets: { b: 'read-write' } });
  const { results } = await host.runBatch(
    (batch) => batch.map(handleOne),
    [msg('publish', 'x'), msg('reject:bad'), msg('write', 'v', { subject: 'k' }), msg('retry')],
  );
  assert.deepEqual(
    results.map((r) => r.kind),
    ['ok', 'reject', 'ok', 'retry'],
  );
  assert.equal(results[0].published[0].header('index'), '0');
  assert.equal(results[1].reason, 'bad');
  assert.deepEqual(results[2].writes, [new Write('b', 'k', new TextEncoder().encode('v'))]);
  assert.equal(results[3].delayMs, 100);
  assert.ok(results.slice(1).every((r) => r.published.length === 0));
  assert.equal(host.kvGet('b', 'k').text(), 'v');
});

test('results may be returned directly', async () => {
  const { results } = await runBatch(
    () => [undefined, new Retry(), new Reject('no'), new InvalidPublish('bad'), new KvUnavailable('later')],
    Array.from({ length: 5 }, () => msg('x')),
  );
  assert.deepEqual(
    results.map((r) => r.kind),
    ['ok', 'retry', 'reject', 'reject', 'retry'],
  );
  assert.equal(results[3].reason, 'invalid publish: bad');
});

test('an error in one message settles only that message', async () => {
  const [batch, written] = await quietly(() =>
    runBatch((b) => b.map(handleOne), [msg('publish'), msg('raise:x', '', { maxAttempts: 3 }), msg('raise:y', '', { attempt: 3, maxAttempts: 3 })], {
      allow: ['out'],
    }),
  );
  assert.deepEqual(
    batch.results.map((r) => r.kind),
    ['ok', 'retry', 'reject'],
  );
  assert.ok(batch.results[1].error instanceof TypeError);
  assert.match(batch.results[2].reason, /^TypeError: y \(at batch\.test\.js:\d+:\d+\)$/);
  assert.equal(written.length, 2);
});

test('what escapes the batch handler traps the whole batch', async () => {
  for (const [handler, reason] of [
    [
      () => {
        throw new Error('whole batch');
      },
      'Error: whole batch',
    ],
    [() => [undefined], 'Error: the batch handler returned 1 results for a batch of 2 messages'],
    [() => undefined, 'TypeError: the batch handler returned undefined'],
    [() => ['ok', undefined], 'TypeError: result 0 of the batch is "ok"'],
  ]) {
    const { results } = await runBatch(handler, [msg('a'), msg('b')]);
    assert.deepEqual(
      results.map((r) => r.kind),
      ['trap', 'trap'],
    );
    assert.ok(results[0].reason.startsWith(reason), results[0].reason);
  }
});

test('single-message calls are refused in a batch; config and the log work', async () => {
  const batch = await runBatch(
    (b) => {
      log.info(`batch of ${b.length}`);
      publish('out', config('region'));
    },
    [msg('a')],
    { allow: ['out'], config: { region: 'eu' } },
  );
  assert.equal(batch.results[0].kind, 'trap');
  assert.match(batch.results[0].reason, /in a batch handler, publish through the message/);
  assert.equal(batch.logs[0].message, 'batch of 1');
  const other = await runBatch(() => [kv.bucket('b')], [msg('a')]);
  assert.match(other.results[0].reason, /msg\.bucket\(name\)/);
});

test('messages stage and read on their own and commit in order', async () => {
  const seen = [];
  const host = new TestHost({ buckets: { b: 'read-write' } });
  const { results } = await host.runBatch(
    (batch) =>
      batch.map((m) => {
        const b = m.bucket('b');
        seen.push(b.get('k'));
        b.create('k', m.payload);
        seen.push(b.get('k').text());
      }),
    [msg('a', '1'), msg('b', '2')],
  );
  assert.deepEqual(seen, [undefined, '1', undefined, '2']);
  assert.deepEqual(
    results.map((r) => r.kind),
    ['ok', 'conflict'],
  );
  assert.equal(host.kvGet('b', 'k').text(), '1');
});

test('limits are per message', async () => {
  const { results } = await runBatch(
    (b) =>
      b.map((m) => {
        m.publish('out', '');
        m.bucket('b').put('k', '');
      }),
    [msg('a'), msg('b')],
    { allow: ['out'], buckets: { b: 'read-write' }, maxOutboxMessages: 1, maxKvWrites: 1 },
  );
  assert.deepEqual(
    results.map((r) => r.kind),
    ['ok', 'ok'],
  );
});

test('a batch is iterable, with length, at() and each message\'s index', async () => {
  const captured = [];
  await runBatch(
    (batch) => {
      captured.push(batch.length, batch.at(1).index, [...batch].map((m) => m.subject), batch.at(0) instanceof Message);
      return batch.messages.map(() => undefined);
    },
    [msg('a', '', { subject: 'x' }), msg('b', '', { subject: 'y' })],
  );
  assert.deepEqual(captured, [2, 1, ['x', 'y'], true]);
});

test('batchHandler registers a batch handler, which runBatch uses when given none', async () => {
  unregister();
  batchHandler((batch) => batch.messages.map(() => undefined));
  assert.equal(registeredKind(), 'batch');
  assert.deepEqual(
    (await runBatch(undefined, [msg('a')])).results.map((r) => r.kind),
    ['ok'],
  );
  assert.throws(() => batchHandler(() => []), /a handler is already registered \(anonymous, with batchHandler\(\)\)/);
  unregister();
});
