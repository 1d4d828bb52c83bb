// Unit-testing handlers without the host.
//
// `run` calls a handler on a `Message.forTest(...)` exactly as the component
// would, and reports how the delivery would settle, what it published, what
// key-value writes it staged and what it logged:
//
//   import { Message } from 'wharf-guest';
//   import { run } from 'wharf-guest/testing';
//
//   const result = await run(handle, Message.forTest('orders.new', '{"id": "A-1", "items": []}'));
//   assert.equal(result.kind, 'reject');
//   assert.equal(result.reason, 'order A-1 has no items');
//
// `TestHost` is the recording host underneath. Its key-value buckets keep
// their state from one run to the next, so a test can run several messages
// and look at the state they leave:
//
//   const host = new TestHost({ buckets: { totals: 'read-write' } });
//   host.kvPut('totals', 'a1', '5');
//   assert.equal((await host.run(handle, msg)).kind, 'ok');
//   assert.equal(host.kvGet('totals', 'a1').text(), '12');
//
// `await host.use(() => ...)` makes it the current host while a function
// runs, for tests that call a handler (or any code that publishes)
// directly; the function's key-value writes are applied when it returns.
//
// Both start from what the host gives a handler whose `wharf.toml` entry sets
// nothing: an empty publish allow-list (every publish is refused with
// `PublishNotAllowed`, as the host refuses it), no `Nats-*` headers besides
// `Nats-Msg-Id`, no config values, no key-value buckets (every key-value call
// is refused with `KvDenied`), an outbox of at most 100 messages and 1 MiB,
// and at most 64 key-value writes and 256 KiB staged per delivery. Pass the
// handler's settings (`allow`, `allowHeaders`, `config`, `buckets`, ...) to
// test it as it is configured.
//
// Key-value calls follow the host's rules: reads see the buckets and the
// delivery's own staged writes; writes are staged, at most one of them
// conditional, and applied only when the handler succeeds. When a
// conditional write's condition no longer holds at that point, the result's
// kind is `conflict` and nothing is applied: the host would run the handler
// again on fresh state (up to 16 times within a delivery). To play a writer
// that gets there first, split `run` into `call` and `commitResult` and
// write in between (`host.kvPut`).
//
// `runBatch` and `TestHost.runBatch` do the same for a batch handler, with
// one result per message.
//
// Outside a component and outside a TestHost, publishes and log lines go to
// `defaultHost`, which has the same defaults.

import { Batch } from './batch.js';
import { registeredHandler, registeredKind, settle, settleBatch, summaryLine } from './dispatch.js';
import { defaultHost, installHost, Published, RecordingHost } from './host.js';
import { Entry } from './kv.js';
import { isValidKey, Write } from './memory.js';
import { toBytes } from './message.js';

export { defaultHost, Entry, Published, Write };
export { Message } from './message.js';

/** A `TestHost.use` function's conditional key-value write no longer held when it returned: nothing was applied. */
export class Conflict extends Error {
  constructor(message) {
    super(message);
    this.name = 'Conflict';
  }
}

/** Results already committed, so that committing again changes nothing. */
const committed = new WeakSet();

/**
 * A recording host with key-value buckets that keep their state from one
 * run to the next.
 *
 * @param {object} [options] `RecordingHost`'s options, and `kv`: the buckets'
 *   initial contents, bucket name to key to value (a string or bytes).
 */
export class TestHost extends RecordingHost {
  constructor(options = {}) {
    const { kv, ...settings } = options;
    super(settings);
    for (const [bucket, keys] of Object.entries(kv ?? {})) {
      for (const [key, value] of Object.entries(keys)) {
        this.kvPut(bucket, key, value);
      }
    }
  }

  /**
   * Runs `fn` (sync or async) with this host installed, and restores the
   * previous one afterwards. Returns what `fn` returned. The key-value
   * writes staged meanwhile are applied when `fn` returns (a `Conflict` is
   * thrown when the conditional one no longer holds) and dropped when it throws.
   */
  async use(fn) {
    const previous = installHost(this);
    let value;
    try {
      value = await fn();
    } catch (e) {
      this.discard();
      throw e;
    } finally {
      installHost(previous);
    }
    const conflict = this.commit();
    if (conflict !== undefined) {
      throw new Conflict(conflict);
    }
    return value;
  }

  /** The key's value and revision in the test host's bucket, or undefined when it has none. */
  kvGet(bucket, key) {
    const found = this.kvState.get(bucket, key);
    return found === undefined ? undefined : new Entry(found.value, found.revision);
  }

  /**
   * Writes a key at once, as another writer would (seeding a bucket, or
   * getting there before a run commits), and returns its revision: the
   * bucket's next sequence, as in JetStream.
   */
  kvPut(bucket, key, value) {
    if (!isValidKey(key)) {
      throw new RangeError(`"${key}" is not a valid key`);
    }
    return this.kvState.write(bucket, key, Uint8Array.from(toBytes(value)));
  }

  /** Deletes a key at once, as another writer would; returns the revision of its delete marker. */
  kvDelete(bucket, key) {
    if (!isValidKey(key)) {
      throw new RangeError(`"${key}" is not a valid key`);
    }
    return this.kvState.write(bucket, key, undefined);
  }

  /** The keys of a bucket that hold a value, sorted. */
  kvKeys(bucket) {
    return this.kvState.keys(bucket);
  }

  /** Runs `handler` (or the registered one, when undefined) on `msg`, and commits it: `call`, then `commitResult`. */
  async run(handler, msg) {
    return this.commitResult(await this.call(handler, msg));
  }

  /**
   * Runs `handler` on `msg` without applying its key-value writes, and
   * resolves to `{kind, delayMs, reason, error, published, logs, writes}`
   * where `kind` is `ok`, `retry`, `reject` or `trap` (an uncaught error,
   * kept in `error`). Each run starts with an empty outbox and log.
   */
  async call(handler, msg) {
    const fn = handlerFor(handler, 'handler');
    this.begin(msg);
    this.logs.length = 0;
    const previous = installHost(this);
    let outcome;
    try {
      outcome = await settle(fn, msg);
    } catch (error) {
      // The component would trap here; report it instead of failing the test run.
      outcome = { kind: 'trap', reason: summaryLine(error), error };
    } finally {
      installHost(previous);
    }
    const result = {
      kind: outcome.kind,
      delayMs: outcome.delayMs,
      reason: outcome.reason,
      error: outcome.error,
      published: [...this.published],
      logs: [...this.logs],
      writes: this.stagedWrites(),
    };
    this.discard();
    return result;
  }

  /**
   * Applies what a run staged, as the host does when the message succeeded:
   * the conditional write first, and nothing at all when its condition no
   * longer holds (`result.kind` becomes `conflict`, `result.reason` says
   * which). A result that did not succeed, or was committed before, applies
   * nothing. Returns `result`.
   */
  commitResult(result) {
    if (committed.has(result)) {
      return result;
    }
    committed.add(result);
    if (result.kind === 'ok') {
      const conflict = this.kvState.apply(result.writes);
      if (conflict !== undefined) {
        result.kind = 'conflict';
        result.reason = conflict;
      }
    }
    return result;
  }

  /** Runs a batch handler (or the registered one) on `messages`, and commits each message that succeeded, in order. */
  async runBatch(handler, messages) {
    return this.commitBatch(await this.callBatch(handler, messages));
  }

  /**
   * Runs a batch handler on `messages` without applying anything, and
   * resolves to `{results, logs}` with one result per message, in the
   * batch's order. Each message has its own outbox, staged writes and
   * limits, and its reads see its own staged writes only. An error that
   * escapes the batch handler, or results that are not one per message,
   * trap the whole batch: every message's kind is `trap`. A message whose
   * result was made from an error other than Wharf's (see `Batch.map`) has
   * that error in `error`.
   */
  async callBatch(handler, messages) {
    const fn = handlerFor(handler, 'batch');
    const list = [...messages];
    this.logs.length = 0;
    this.beginBatch(list);
    const previous = installHost(this);
    let outcomes;
    let trap;
    try {
      outcomes = await settleBatch(fn, new Batch(list.map((m) => m._raw)));
    } catch (error) {
      trap = error;
    } finally {
      installHost(previous);
    }
    const outboxes = this.endBatch();
    const results = outboxes.map((outbox, i) => {
      const common = { published: [...outbox.published], logs: [], writes: outbox.staging.writes() };
      if (trap !== undefined) {
        return { kind: 'trap', delayMs: undefined, reason: summaryLine(trap), error: trap, ...common };
      }
      const o = outcomes[i];
      return { kind: o.kind, delayMs: o.delayMs, reason: o.reason, error: o.cause, ...common };
    });
    return { results, logs: [...this.logs] };
  }

  /**
   * Commits each message of a batch, in order (as `commitResult`): a message
   * whose condition no longer holds, because an earlier message of the
   * batch wrote its key, becomes a `conflict` on its own.
   */
  commitBatch(batch) {
    for (const result of batch.results) {
      this.commitResult(result);
    }
    return batch;
  }
}

function handlerFor(handler, kind) {
  const fn = handler ?? (registeredKind() === kind ? registeredHandler() : undefined);
  if (fn === undefined) {
    throw new Error(`no handler given and none registered with ${kind === 'handler' ? 'handler()' : 'batchHandler()'}`);
  }
  return fn;
}

/**
 * Runs `handler` (or the registered one, when undefined) on `msg` against a
 * fresh TestHost, and resolves to how the delivery would settle:
 * `{kind, delayMs, reason, error, published, logs, writes}` where `kind` is
 * `ok`, `retry`, `reject`, `conflict` or `trap` (an uncaught error, kept in
 * `error`). The host publishes `published` and applies `writes` only when
 * `kind` is `ok`.
 *
 * @param {{config?: Record<string, string>, allow?: string[], allowHeaders?: string[],
 *   maxOutboxMessages?: number, maxOutboxBytes?: number, buckets?: Record<string, 'read' | 'read-write'>,
 *   kv?: Record<string, Record<string, string | Uint8Array>>, maxKvWrites?: number, maxKvWriteBytes?: number,
 *   unavailable?: string[]}} [options]
 *   The handler's settings in `wharf.toml`, with the host's defaults: `allow`
 *   is its `publish` allow-list (NATS wildcards), empty unless given, so that
 *   without it every publish is refused as the host refuses it; `config` is
 *   its `[handler.config]` and `buckets` its `kv` table, both empty unless
 *   given; `kv` seeds the buckets.
 */
export async function run(handler, msg, options = {}) {
  return new TestHost(options).run(handler, msg);
}

/** Runs a batch handler (or the registered one) on `messages` against a fresh TestHost with `options`. */
export async function runBatch(handler, messages, options = {}) {
  return new TestHost(options).runBatch(handler, messages);
}
