// Unit-testing handlers without the host.
//
// `run` calls a handler on a `Message.forTest(...)` exactly as the component
// would, and reports how the delivery would settle, what it published and
// what it logged:
//
//   import { Message } from 'wharf-guest';
//   import { run } from 'wharf-guest/testing';
//
//   const result = await run(handle, Message.forTest('orders.new', '{"id": "A-1", "items": []}'));
//   assert.equal(result.kind, 'reject');
//   assert.equal(result.reason, 'order A-1 has no items');
//
// `TestHost` is the recording host underneath, for tests that call a handler
// (or any code that publishes) directly: `await host.use(() => handle(msg))`.
//
// Both start from what the host gives a handler whose `wharf.toml` entry sets
// nothing: an empty publish allow-list (every publish is refused with
// `PublishNotAllowed`, as the host refuses it), no `Nats-*` headers besides
// `Nats-Msg-Id`, no config values, and an outbox of at most 100 messages and
// 1 MiB. Pass the handler's settings (`allow`, `allowHeaders`, `config`, ...)
// to test it as it is configured.
//
// Outside a component and outside a TestHost, publishes and log lines go to
// `defaultHost`, which has the same defaults.

import { registeredHandler, settle, summaryLine } from './dispatch.js';
import { defaultHost, installHost, Published, RecordingHost } from './host.js';

export { defaultHost, Published };
export { Message } from './message.js';

/** A recording host that is the current host while `use` runs. */
export class TestHost extends RecordingHost {
  /**
   * Runs `fn` (sync or async) with this host installed, and restores the
   * previous one afterwards. Returns what `fn` returned.
   */
  async use(fn) {
    const previous = installHost(this);
    try {
      return await fn();
    } finally {
      installHost(previous);
    }
  }
}

/**
 * Runs `handler` (or the registered one, when undefined) on `msg` against a
 * fresh TestHost, and resolves to how the delivery would settle:
 * `{kind, delayMs, reason, error, published, logs}` where `kind` is `ok`,
 * `retry`, `reject` or `trap` (an uncaught error, kept in `error`). The host
 * publishes `published` only when `kind` is `ok`.
 *
 * @param {{config?: Record<string, string>, allow?: string[], allowHeaders?: string[],
 *   maxOutboxMessages?: number, maxOutboxBytes?: number}} [options]
 *   The handler's settings in `wharf.toml`, with the host's defaults: `allow`
 *   is its `publish` allow-list (NATS wildcards), empty unless given, so that
 *   without it every publish is refused as the host refuses it; `config` is
 *   its `[handler.config]`, empty unless given.
 */
export async function run(handler, msg, options = {}) {
  const fn = handler ?? registeredHandler();
  if (fn === undefined) {
    throw new Error('no handler given and none registered with handler()');
  }
  const host = new TestHost(options);
  let outcome;
  try {
    outcome = await host.use(() => settle(fn, msg));
  } catch (error) {
    // The component would trap here; report it instead of failing the test run.
    outcome = { kind: 'trap', reason: summaryLine(error), error };
  }
  return {
    kind: outcome.kind,
    delayMs: outcome.delayMs,
    reason: outcome.reason,
    error: outcome.error,
    published: [...host.published],
    logs: [...host.logs],
  };
}
