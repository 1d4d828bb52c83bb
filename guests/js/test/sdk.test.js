// Unit tests of the JavaScript SDK outside a component: messages, errors,
// publish, config, log and the testing helpers.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  config,
  handler,
  InvalidPublish,
  log,
  Message,
  OutboxFull,
  publish,
  PublishError,
  publishJson,
  PublishNotAllowed,
  Reject,
  Retry,
} from 'wharf-guest';
import { defaultHost, run, TestHost } from 'wharf-guest/testing';
import { crashReport, summaryLine, MAX_SUMMARY_CHARS } from '../src/dispatch.js';
import { TEST_HOST_HEADER_BYTES, hostHeaderBytes } from '../src/host.js';

const decode = (bytes) => new TextDecoder().decode(bytes);

test('Message.forTest fills delivery metadata like the Rust SDK', () => {
  const msg = Message.forTest('orders.new', '{}');
  assert.equal(msg.subject, 'orders.new');
  assert.equal(decode(msg.payload), '{}');
  assert.equal(msg.stream, 'TEST');
  assert.equal(msg.consumer, 'test');
  assert.equal(msg.streamSequence, 1);
  assert.equal(msg.consumerSequence, 1);
  assert.equal(msg.attempt, 1);
  assert.equal(msg.maxAttempts, 1);
  assert.equal(msg.isFinalAttempt, true);
  assert.equal(msg.publishedAtNanos, 0n);
  assert.equal(msg.publishedAt.getTime(), 0);
});

test('isFinalAttempt is true from maxAttempts on', () => {
  assert.equal(Message.forTest('a', '', { attempt: 1, maxAttempts: 3 }).isFinalAttempt, false);
  assert.equal(Message.forTest('a', '', { attempt: 3, maxAttempts: 3 }).isFinalAttempt, true);
});

test('sequences come from the bindings as BigInt and read as numbers', () => {
  const msg = new Message({
    subject: 's',
    payload: new Uint8Array(),
    headers: [],
    delivery: {
      stream: 'S',
      consumer: 'c',
      streamSequence: 42n,
      consumerSequence: 43n,
      attempt: 2,
      maxAttempts: 5,
      publishedAtNanos: 1_700_000_000_123_456_789n,
    },
  });
  assert.equal(msg.streamSequence, 42);
  assert.equal(msg.consumerSequence, 43);
  assert.equal(msg.publishedAt.toISOString(), '2023-11-14T22:13:20.123Z');
});

test('text() rejects a payload that is not UTF-8', () => {
  assert.equal(Message.forTest('a', 'hé').text(), 'hé');
  assert.throws(
    () => Message.forTest('a', new Uint8Array([0xff])).text(),
    (e) => e instanceof Reject && e.reason.startsWith('payload is not UTF-8: '),
  );
});

test('json() rejects malformed JSON with the Rust SDK prefix', () => {
  assert.deepEqual(Message.forTest('a', '{"id": 7}').json(), { id: 7 });
  assert.throws(
    () => Message.forTest('a', '{').json(),
    (e) => e instanceof Reject && e.reason.startsWith('payload is not valid JSON for this handler: '),
  );
});

test('headers are multi-valued and header() matches without case', () => {
  const msg = Message.forTest('a', '', {
    headers: [
      ['Tag', 'x'],
      ['tag', 'y'],
      ['Tenant', 'acme'],
    ],
  }).withHeader('Tag', 'z');
  assert.equal(msg.header('tenant'), 'acme');
  assert.equal(msg.header('TAG'), 'x');
  assert.equal(msg.header('missing'), undefined);
  assert.deepEqual(msg.headerValues('tag'), ['x', 'z', 'y']);
  assert.deepEqual(msg.headers, { Tag: ['x', 'z'], tag: ['y'], Tenant: ['acme'] });
  assert.deepEqual(Message.forTest('a', '', { headers: { A: '1', B: ['2', '3'] } }).headers, { A: ['1'], B: ['2', '3'] });
});

test('Retry takes milliseconds and keeps whole ones', () => {
  assert.equal(new Retry().delayMs, undefined);
  assert.equal(new Retry({ delay: 200 }).delayMs, 200);
  assert.equal(new Retry({ delay: 200.9 }).delayMs, 200);
  assert.equal(new Retry(1500).delayMs, 1500);
  assert.equal(new Retry({ delay: 5n }).delayMs, 5);
  assert.throws(() => new Retry({ delay: -1 }), RangeError);
  assert.throws(() => new Retry({ delay: '1s' }), TypeError);
  assert.equal(new Reject('bad').reason, 'bad');
});

test('publish errors read like the Rust SDK', () => {
  for (const [error, kind, text] of [
    [new PublishNotAllowed('x'), 'not-allowed', 'publish not allowed: x'],
    [new OutboxFull('x'), 'outbox-full', 'outbox full: x'],
    [new InvalidPublish('x'), 'invalid', 'invalid publish: x'],
  ]) {
    assert.ok(error instanceof PublishError);
    assert.equal(error.kind, kind);
    assert.equal(error.message, text);
    assert.equal(error.detail, 'x');
  }
});

test('publish takes bytes or text and groups headers given twice', async () => {
  const host = new TestHost({ allow: ['a.*'] });
  await host.use(() => {
    publish('a.b', new Uint8Array([0, 1]));
    publish('a.c', 'text', [
      ['X', '1'],
      ['X', '2'],
      ['Y', '3'],
    ]);
    publish('a.d', new Uint8Array([1, 2, 3, 4]).buffer, new Map([['Z', ['4', '5']]]));
  });
  assert.deepEqual([...host.published[0].payload], [0, 1]);
  assert.equal(host.published[1].text(), 'text');
  assert.deepEqual(host.published[1].headers, { X: ['1', '2'], Y: ['3'] });
  assert.deepEqual([...host.published[2].payload], [1, 2, 3, 4]);
  assert.deepEqual(host.published[2].headers, { Z: ['4', '5'] });
});

test('publishJson writes JSON with Content-Type first, unless the handler set one', async () => {
  const host = new TestHost({ allow: ['a.*'] });
  await host.use(() => {
    publishJson('a.b', { id: 'é', n: [1, 2] }, { 'Order-Id': '7' });
    publishJson('a.c', 1, { 'content-type': 'application/vnd.x+json' });
  });
  assert.equal(host.published[0].text(), '{"id":"é","n":[1,2]}');
  assert.deepEqual(Object.entries(host.published[0].headers), [
    ['Content-Type', ['application/json']],
    ['Order-Id', ['7']],
  ]);
  assert.deepEqual(host.published[1].headers, { 'content-type': ['application/vnd.x+json'] });
});

test('publishJson of a value JSON cannot encode is invalid', async () => {
  const cyclic = {};
  cyclic.self = cyclic;
  await new TestHost().use(() => {
    assert.throws(() => publishJson('a.b', { n: 1n }), InvalidPublish);
    assert.throws(() => publishJson('a.b', cyclic), InvalidPublish);
    assert.throws(() => publishJson('a.b', undefined), InvalidPublish);
  });
});

test('the test host refuses what the host would', async () => {
  await new TestHost({ allow: ['orders.*'], maxOutboxMessages: 1 }).use(() => {
    assert.throws(
      () => publish('billing.x', ''),
      (e) =>
        e instanceof PublishNotAllowed &&
        e.message ===
          'publish not allowed: subject "billing.x" is not in handler "test"\'s publish allow-list ["orders.*"] ' +
            '(its publish setting in wharf.toml; tests pass the allow option)',
    );
    assert.throws(() => publish('orders..x', ''), InvalidPublish);
    assert.throws(() => publish('orders.>', ''), InvalidPublish);
    assert.throws(() => publish('orders.x', '', { X: 'a\nb' }), InvalidPublish);
    assert.throws(() => publish('orders.x', '', { X: 'a\u0000b' }), InvalidPublish);
    publish('orders.x', '');
    assert.throws(() => publish('orders.y', ''), OutboxFull);
  });
});

test('outside a test host, publish and log reach the default host, which allows no subject unless told', () => {
  defaultHost.clear();
  assert.throws(() => publish('a.b', 'x'), PublishNotAllowed);
  defaultHost.allow = ['a.b'];
  try {
    publish('a.b', 'x');
    log.info('hello', { n: 1 }, 2n);
    assert.equal(defaultHost.published[0].subject, 'a.b');
    assert.deepEqual(defaultHost.logs, [{ level: 'info', message: 'hello {"n":1} 2' }]);
  } finally {
    defaultHost.allow = [];
    defaultHost.clear();
  }
});

test('wildcards never reach reserved subjects, as in the host', () => {
  const host = new TestHost({ allow: ['>', '$KV.b.k', '$JS.API.INFO'] });
  assert.equal(host.allows('orders.new'), true);
  assert.equal(host.allows('$KV.b.k'), true);
  assert.equal(host.allows('$KV.b.other'), false);
  assert.equal(host.allows('_INBOX.abc'), false);
  assert.equal(host.allows('$JS.API.INFO'), false);
});

test('reserved headers are refused as the host refuses them', async () => {
  const host = new TestHost({ allow: ['out'] });
  await host.use(() => {
    for (const headers of [{ 'Wharf-Handler': 'x' }, { 'Nats-Rollup': 'sub' }, { 'Nats-Msg-Id': 'wharf:IN:c:1:0' }]) {
      assert.throws(() => publish('out', '', headers), PublishNotAllowed, JSON.stringify(headers));
    }
    assert.throws(
      () =>
        publish('out', '', [
          ['Nats-Msg-Id', 'a'],
          ['Nats-Msg-Id', 'b'],
        ]),
      InvalidPublish,
    );
    publish('out', '', { 'nats-msg-id': 'order-7' });
  });
  assert.deepEqual(host.published[0].headers, { 'nats-msg-id': ['order-7'] });
  const allowed = new TestHost({ allow: ['out'], allowHeaders: ['Nats-Rollup'] });
  await allowed.use(() => publish('out', '', { 'nats-rollup': 'sub' }));
  assert.equal(allowed.published.length, 1);
});

test('without allow, run refuses every publish like the host, and an uncaught refusal rejects', async () => {
  const handle = (msg) => publish('orders.accepted', msg.payload);
  const result = await run(handle, Message.forTest('orders.new', '{}'));
  assert.equal(result.kind, 'reject');
  assert.equal(
    result.reason,
    'publish not allowed: subject "orders.accepted" is not in handler "test"\'s publish allow-list [] ' +
      '(its publish setting in wharf.toml; tests pass the allow option)',
  );
  assert.deepEqual(result.published, []);
  assert.equal((await run(handle, Message.forTest('orders.new', '{}'), { allow: ['orders.*'] })).kind, 'ok');
});

test('a caught refusal is the error the SDK raises for the host\'s refusal', async () => {
  let caught;
  const result = await run(() => {
    try {
      publish('billing.x', '');
    } catch (e) {
      caught = e;
    }
  }, Message.forTest('a'));
  assert.equal(result.kind, 'ok');
  assert.equal(caught.constructor, PublishNotAllowed);
  assert.equal(caught.kind, 'not-allowed');
  assert.ok(caught.message.startsWith('publish not allowed: subject "billing.x" is not in'), caught.message);
});

test('a TestHost without allow has an empty allow-list; a lone string is refused', async () => {
  for (const host of [new TestHost(), new TestHost({ allow: undefined })]) {
    await host.use(() => assert.throws(() => publish('a.b', ''), /publish allow-list \[\]/));
  }
  assert.throws(() => new TestHost({ allow: 'orders.>' }), TypeError);
});

test('no config values unless given', async () => {
  await new TestHost().use(() => assert.equal(config('region'), undefined));
  const result = await run(() => log.info(config('region', 'default')), Message.forTest('a'));
  assert.equal(result.logs[0].message, 'default');
});

test('the outbox holds 100 messages by default', async () => {
  const result = await run(
    () => {
      for (let i = 0; i < 101; i++) publish('out', String(i));
    },
    Message.forTest('a'),
    { allow: ['out'] },
  );
  assert.deepEqual([result.kind, result.reason], ['reject', 'outbox full: at most 100 messages per delivery']);
  assert.equal(result.published.length, 100);
});

test('the outbox holds 1 MiB by default, counting the headers the host adds', async () => {
  const fits = 1024 * 1024 - TEST_HOST_HEADER_BYTES - 'out'.length - 'NATS/1.0\r\n\r\n'.length;
  const handle = (msg) => publish('out', new Uint8Array(Number(msg.text())));
  assert.equal((await run(handle, Message.forTest('a', String(fits)), { allow: ['out'] })).kind, 'ok');
  const over = await run(handle, Message.forTest('a', String(fits + 1)), { allow: ['out'] });
  assert.deepEqual(
    [over.kind, over.reason],
    ['reject', "outbox full: at most 1048576 bytes per delivery, the host's headers included"],
  );
  assert.equal((await run(handle, Message.forTest('a', '10'), { allow: ['out'], maxOutboxBytes: 10 })).kind, 'reject');
});

test('the host\'s own headers on an output are counted as the host counts them', () => {
  assert.equal(TEST_HOST_HEADER_BYTES, 739);
  assert.equal(hostHeaderBytes('ORDERS', 'wharf-orders'), 727 + 2 * 6 + 12);
});

test('config returns the value, else the fallback, else undefined', async () => {
  await new TestHost({ config: { region: 'eu' } }).use(() => {
    assert.equal(config('region'), 'eu');
    assert.equal(config('missing'), undefined);
    assert.equal(config('missing', 'us'), 'us');
    assert.equal(config('toString'), undefined);
  });
});

test('each log level reaches the host', async () => {
  const host = new TestHost();
  await host.use(() => {
    log.trace('t');
    log.debug('d', 1);
    log.info('i');
    log.warn('w');
    log.error(new TypeError('e'));
  });
  assert.deepEqual(host.logs, [
    { level: 'trace', message: 't' },
    { level: 'debug', message: 'd 1' },
    { level: 'info', message: 'i' },
    { level: 'warn', message: 'w' },
    { level: 'error', message: 'TypeError: e' },
  ]);
});

test('each way out of a handler settles like the Rust SDK', async () => {
  const raising = (error) => () => {
    if (error !== undefined) throw error;
  };
  const cases = [
    [undefined, 'ok', undefined, undefined],
    [new Retry(), 'retry', undefined, undefined],
    [new Retry({ delay: 1500 }), 'retry', 1500, undefined],
    [new Reject('bad'), 'reject', undefined, 'bad'],
    [new PublishNotAllowed('nope'), 'reject', undefined, 'publish not allowed: nope'],
  ];
  for (const [error, kind, delayMs, reason] of cases) {
    const result = await run(raising(error), Message.forTest('a'));
    assert.deepEqual([result.kind, result.delayMs, result.reason], [kind, delayMs, reason]);
  }
});

test('async handlers settle the same way', async () => {
  const result = await run(async () => {
    await new Promise((resolve) => setTimeout(resolve, 1));
    throw new Retry({ delay: 10 });
  }, Message.forTest('a'));
  assert.equal(result.kind, 'retry');
  assert.equal(result.delayMs, 10);
});

test('run reports an uncaught error as a trap, with what was published and logged', async () => {
  const result = await run(
    (msg) => {
      log.info('region', config('region'));
      publish('out', msg.payload);
      throw new TypeError('boom');
    },
    Message.forTest('in', 'x'),
    { config: { region: 'eu' }, allow: ['out'] },
  );
  assert.equal(result.kind, 'trap');
  assert.equal(result.reason, 'TypeError: boom');
  assert.ok(result.error instanceof TypeError);
  assert.equal(result.published[0].text(), 'x');
  assert.deepEqual(result.logs, [{ level: 'info', message: 'region eu' }]);
});

test('run uses the registered handler when given none', async () => {
  const fn = handler(() => {
    throw new Reject('registered');
  });
  assert.equal(typeof fn, 'function');
  const result = await run(undefined, Message.forTest('a'));
  assert.equal(result.reason, 'registered');
  assert.throws(() => handler(() => {}), /already registered/);
});

test('the crash report ends with Name: message (at file:line:column) on one short line', () => {
  const error = new RangeError('first\nsecond');
  const report = crashReport(error).split('\n');
  assert.match(report.at(-1), /^RangeError: first second \(at sdk\.test\.js:\d+:\d+\)$/);
  assert.equal(report.at(-1), `RangeError: first second (at sdk.test.js:${lineOf(error.stack)})`);
  assert.ok(report.length > 1, 'the stack comes first');
  assert.equal(summaryLine('a plain string'), 'Uncaught: a plain string');
  assert.equal(summaryLine({ code: 7 }), 'Object: {"code":7}');
  assert.equal(summaryLine(new Error('x'.repeat(5000))), `Error: ${'x'.repeat(MAX_SUMMARY_CHARS)}…`);
  const long = crashReport(new Error('x'.repeat(5000))).split('\n').at(-1);
  assert.match(long, /^Error: x+… \(at sdk\.test\.js:\d+:\d+\)$/);
  const caused = crashReport(new Error('outer', { cause: new Error('inner') })).split('\n');
  assert.ok(caused.includes('Caused by: Error: inner'));
  assert.match(caused.at(-1), /^Error: outer \(at sdk\.test\.js:\d+:\d+\)$/);
});

test('an error without a stack ends the report with Name: message alone', () => {
  assert.deepEqual(crashReport('a plain string').split('\n'), ['Uncaught: a plain string']);
  const stackless = { name: 'Error', message: 'x', stack: '' };
  assert.deepEqual(crashReport(stackless).split('\n'), ['Error: x']);
});

/** `line:column` of the first frame of a V8 stack. */
function lineOf(stack) {
  const frame = stack.split('\n').find((line) => /^\s+at /.test(line));
  return /:(\d+:\d+)\)?$/.exec(frame)[1];
}
