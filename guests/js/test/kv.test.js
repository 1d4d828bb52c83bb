// Unit tests of key-value state: the `kv` API over the test host, which
// follows the host's rules.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { KvDenied, KvInvalid, KvLimit, kv, Message, Reject, Retry } from 'wharf-guest';
import { Conflict, run, TestHost, Write } from 'wharf-guest/testing';

const utf8 = (s) => new TextEncoder().encode(s);

/** A running total per account: reads, then writes expecting the revision it read (or creates). */
function total(msg) {
  const totals = kv.bucket('totals');
  const account = msg.header('account');
  const entry = totals.getJson(account);
  const { cents } = msg.json();
  if (entry === undefined) {
    totals.createJson(account, cents);
  } else {
    totals.putJson(account, entry.value + cents, { expected: entry.revision });
  }
}

const payment = (account, cents) => Message.forTest('payments', `{"cents": ${cents}}`, { headers: { account } });

test('a running total accumulates across runs, at the bucket\'s next revision', async () => {
  const host = new TestHost({ buckets: { totals: 'read-write' } });
  for (const cents of [5, 7, 30]) {
    assert.equal((await host.run(total, payment('a1', cents))).kind, 'ok');
  }
  const entry = host.kvGet('totals', 'a1');
  assert.deepEqual([entry.text(), entry.revision], ['42', 3]);
  assert.deepEqual(host.kvKeys('totals'), ['a1']);
});

test('reads see the delivery\'s own writes, with the revision their condition names', async () => {
  const seen = [];
  const host = new TestHost({ buckets: { b: 'read-write' }, kv: { b: { k: 'old' } } });
  const result = await host.run(() => {
    const b = kv.bucket('b');
    const first = b.get('k');
    b.put('k', 'new', { expected: first.revision });
    seen.push(b.get('k'));
    b.put('other', 'x');
    seen.push(b.get('other'));
    b.delete('k');
    seen.push(b.get('k'));
  }, Message.forTest('a'));
  assert.equal(result.kind, 'ok');
  assert.deepEqual(
    seen.map((e) => e && [e.text(), e.revision]),
    [['new', 1], ['x', 0], undefined],
  );
  assert.deepEqual(result.writes, [
    new Write('b', 'k', undefined, { expected: 1 }),
    new Write('b', 'other', utf8('x')),
  ]);
  assert.equal(host.kvGet('b', 'k'), undefined);
});

test('only the declared buckets, in their mode, with valid keys', async () => {
  const host = new TestHost({ buckets: { prices: 'read' } });
  await host.use(() => {
    assert.throws(
      () => kv.bucket('other').get('k'),
      (e) => e instanceof KvDenied && e.detail === 'bucket "other" is not in handler "test"\'s `kv` table',
    );
    assert.throws(
      () => kv.bucket('prices').put('k', 'v'),
      (e) => e instanceof KvDenied && e.detail === 'bucket "prices" is read-only for handler "test"',
    );
    assert.equal(kv.bucket('prices').get('k'), undefined);
    for (const bad of ['', '.a', 'a.', 'a..b', 'a b', 'a*', 'ü', 'k'.repeat(1025)]) {
      assert.throws(() => kv.bucket('prices').get(bad), KvInvalid, bad);
    }
    assert.throws(() => kv.bucket('prices').get('a\nb'), /"a\\nb" is not a valid key: letters, digits and -\/_=\. only/);
  });
});

test('staged writes are limited in count and bytes; one conditional write per delivery', async () => {
  await new TestHost({ buckets: { b: 'read-write' }, maxKvWrites: 2 }).use(() => {
    const b = kv.bucket('b');
    b.put('a', '1');
    b.put('b', '1');
    b.put('a', '2');
    assert.throws(() => b.put('c', '1'), (e) => e instanceof KvLimit && /at most 2 keys written per delivery/.test(e.message));
  });
  await new TestHost({ buckets: { b: 'read-write' }, maxKvWriteBytes: 10 }).use(() => {
    const b = kv.bucket('b');
    b.put('a', '123456789');
    assert.throws(() => b.put('b', '1'), /at most 10 bytes of keys and values staged per delivery/);
    b.put('a', '12345678');
  });
  const host = new TestHost({ buckets: { b: 'read-write' } });
  await assert.rejects(
    host.use(() => {
      const b = kv.bucket('b');
      b.put('a', '1', { expected: 7 });
      b.put('b', '1');
      assert.throws(() => b.create('c', '1'), /one conditional write per delivery .*key "a" in bucket "b"/);
      b.put('a', '2', { expected: 7 });
      b.put('a', '3');
      assert.throws(() => b.put('a', '4', { expected: 8 }), /already written in this delivery under another condition/);
      assert.deepEqual(host.stagedWrites()[0], new Write('b', 'a', utf8('3'), { expected: 7 }));
    }),
    Conflict,
  );
});

test('a stale condition conflicts at commit and applies nothing', async () => {
  const host = new TestHost({ buckets: { totals: 'read-write' }, kv: { totals: { a1: '5' } } });
  const result = await host.call((msg) => {
    total(msg);
    kv.bucket('totals').put('last', msg.header('account'));
  }, payment('a1', 7));
  assert.equal(result.kind, 'ok');
  host.kvPut('totals', 'a1', '100');
  host.commitResult(result);
  assert.equal(result.kind, 'conflict');
  assert.equal(result.reason, 'key "a1" in bucket "totals" moved on; the write expected revision 1');
  assert.equal(host.kvGet('totals', 'a1').text(), '100');
  assert.equal(host.kvGet('totals', 'last'), undefined);
});

test('creates and revisions follow delete markers', async () => {
  const host = new TestHost({ buckets: { b: 'read-write' } });
  const create = (msg) => kv.bucket('b').create('k', msg.payload);
  assert.equal((await host.run(create, Message.forTest('a', '1'))).kind, 'ok');
  assert.equal((await host.run(create, Message.forTest('a', '2'))).kind, 'conflict');
  assert.equal(host.kvDelete('b', 'k'), 2);
  assert.equal((await host.run(create, Message.forTest('a', '3'))).kind, 'ok');
  assert.equal(host.kvGet('b', 'k').revision, 3);
  const putNew = () => kv.bucket('b').put('new', 'x', { expected: 0 });
  assert.equal((await host.run(putNew, Message.forTest('a'))).kind, 'ok');
  assert.equal((await host.run(putNew, Message.forTest('a'))).kind, 'conflict');
});

test('a run that does not succeed applies nothing', async () => {
  const host = new TestHost({ buckets: { b: 'read-write' } });
  for (const [error, kind] of [
    [new Retry(), 'retry'],
    [new Reject('no'), 'reject'],
    [new TypeError('boom'), 'trap'],
  ]) {
    const result = await host.run(() => {
      kv.bucket('b').put('k', 'v');
      throw error;
    }, Message.forTest('a'));
    assert.equal(result.kind, kind);
    assert.equal(result.writes.length, 1);
    assert.equal(host.kvGet('b', 'k'), undefined);
  }
});

test('uncaught key-value errors retry when unavailable and reject otherwise', async () => {
  const read = (msg) => kv.bucket(msg.subject).get('k');
  assert.equal((await run(read, Message.forTest('b'), { buckets: { b: 'read' } })).kind, 'ok');
  const unavailable = await run(read, Message.forTest('b'), { buckets: { b: 'read' }, unavailable: ['b'] });
  assert.deepEqual([unavailable.kind, unavailable.delayMs], ['retry', undefined]);
  const denied = await run(read, Message.forTest('other'));
  assert.equal(denied.kind, 'reject');
  assert.equal(denied.reason, 'key-value access denied: bucket "other" is not in handler "test"\'s `kv` table');
});

test('values are bytes and text and JSON', async () => {
  const host = new TestHost({ buckets: { b: 'read-write' }, kv: { b: { bin: new Uint8Array([0xff]), json: '{"n": 2}' } } });
  await host.use(() => {
    const b = kv.bucket('b');
    assert.deepEqual(b.get('json').json(), { n: 2 });
    assert.deepEqual([b.getJson('json').value, b.getJson('json').revision], [{ n: 2 }, 2]);
    assert.throws(() => b.get('bin').text(), (e) => e instanceof Reject && /stored value is not UTF-8/.test(e.reason));
    assert.throws(() => b.getJson('bin'), /stored value is not valid JSON/);
    assert.throws(() => b.putJson('x', 1n), (e) => e instanceof KvInvalid && /cannot be encoded as JSON/.test(e.message));
    assert.throws(() => b.put('x', 5), TypeError);
    assert.throws(() => b.put('x', 'v', { expected: -1 }), TypeError);
    b.createJson('made', [1]);
  });
  assert.equal(host.kvGet('b', 'made').text(), '[1]');
});

test('use applies its writes when the function returns and drops them when it throws', async () => {
  const host = new TestHost({ buckets: { b: 'read-write' } });
  await host.use(() => kv.bucket('b').put('k', '1'));
  assert.equal(host.kvGet('b', 'k').text(), '1');
  await assert.rejects(
    host.use(() => {
      kv.bucket('b').put('k', '2');
      throw new Reject('no');
    }),
    Reject,
  );
  assert.equal(host.kvGet('b', 'k').text(), '1');
  await assert.rejects(host.use(() => kv.bucket('b').create('k', '3')), /expected no value/);
  assert.throws(() => new TestHost({ buckets: { b: 'write' } }), /unknown mode "write"/);
});
