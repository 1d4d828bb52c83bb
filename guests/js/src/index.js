// Write Wharf message handlers in JavaScript.
//
// A handler is one function (sync or async) from a `Message` to nothing.
// Returning acks the message (after everything it published is stored);
// throwing `Retry` delivers it again later, throwing `Reject` dead-letters it
// now. Anything else thrown traps the instance, like a Rust panic: the host
// retries with backoff and, on the final attempt, dead-letters the message
// with a reason that names the error and where the handler's source threw it.
//
//   import { handler, Reject, publishJson } from 'wharf-guest';
//
//   handler((msg) => {
//     const order = msg.json();
//     if (!order.items?.length) throw new Reject(`order ${order.id} has no items`);
//     publishJson('orders.accepted', order, { 'Order-Id': order.id });
//   });
//
// A batch handler (`batchHandler(fn)`) gets a `Batch` of messages and
// returns one result per message; key-value state is in `kv`.
//
// Build it with `scripts/build-js-handler.sh handler.js handler.wasm`. Outside
// a component (unit tests) the same calls go to a recording host: see
// `wharf-guest/testing`.

import { InvalidPublish } from './errors.js';
import { register } from './dispatch.js';
import { currentHost } from './host.js';
import { groupHeaders, toBytes } from './message.js';

export {
  HandlerError,
  InvalidPublish,
  KvDenied,
  KvError,
  KvInvalid,
  KvLimit,
  KvUnavailable,
  OutboxFull,
  PublishError,
  PublishNotAllowed,
  Reject,
  Retry,
} from './errors.js';
export { Batch, BatchMessage } from './batch.js';
export { Message } from './message.js';
export * as kv from './kv.js';

/**
 * Registers `fn(msg)` as the component's handler: one message per call (the
 * `handler` world). A component has exactly one handler, made by `handler()`
 * or `batchHandler()`. Returns `fn` unchanged, so tests can call it directly.
 *
 * @template {(msg: import('./message.js').Message) => unknown} F
 * @param {F} fn
 * @returns {F}
 */
export function handler(fn) {
  register(fn, 'handler');
  return fn;
}

/**
 * Registers `fn(batch)` as the component's handler: several messages per
 * call (the `batch-handler` world). `fn` (sync or async) gets a `Batch` and
 * returns an array with one result per message, in the batch's order:
 * undefined for a message that succeeded, a `Retry` or `Reject` instance
 * (not thrown) for one that did not. `await batch.map(fn)` calls `fn(msg)`
 * per message and turns what it throws into those results. Each message is
 * settled by its own result; what it published and wrote through its
 * `BatchMessage` (`msg.publish`, `msg.bucket(...)`) takes effect only if it
 * succeeded. An error that escapes `fn` traps the whole batch.
 *
 * `scripts/build-js-handler.sh` builds a module that registers a batch
 * handler into a `batch-handler` component. Returns `fn` unchanged.
 *
 * @example
 * export const handleBatch = batchHandler((batch) => batch.map((msg) => msg.publish('copies', msg.payload)));
 *
 * @template {(batch: import('./batch.js').Batch) => unknown} F
 * @param {F} fn
 * @returns {F}
 */
export function batchHandler(fn) {
  register(fn, 'batch');
  return fn;
}

/** Refuses a call that belongs to handlers of one message while a batch handler runs. */
function oneMessage(what, instead) {
  if (currentHost().inBatch) {
    throw new Error(
      `${what} is for handlers of one message at a time; in a batch handler, publish through the message: ${instead}`,
    );
  }
}

/**
 * Queues a message for publication when this delivery succeeds.
 *
 * Nothing leaves the host while the handler runs: when it returns, the host
 * publishes the outbox in order, each message with a deterministic
 * `Nats-Msg-Id`, and only then acks the input. `payload` is a Uint8Array, an
 * ArrayBuffer or a string (sent as UTF-8); `headers` is an object or Map of
 * name to a value or an array of values, or [name, value] pairs. Throws a
 * `PublishError` when the host refuses the message. In a batch handler,
 * publish through the message instead (`msg.publish(...)`).
 */
export function publish(subject, payload, headers) {
  oneMessage('publish', 'msg.publish(...)');
  currentHost().publish(subject, toBytes(payload), groupHeaders(headers));
}

/**
 * Queues `value` serialised as JSON, with `Content-Type: application/json`.
 * A value JSON.stringify cannot encode (a BigInt, a cycle, undefined) throws `InvalidPublish`.
 * In a batch handler, publish through the message instead (`msg.publishJson(...)`).
 */
export function publishJson(subject, value, headers) {
  oneMessage('publishJson', 'msg.publishJson(...)');
  let body;
  try {
    body = JSON.stringify(value);
  } catch (e) {
    throw new InvalidPublish(e.message);
  }
  if (body === undefined) {
    throw new InvalidPublish(`${typeof value} cannot be encoded as JSON`);
  }
  const grouped = groupHeaders(headers);
  if (!grouped.some(([name]) => name.toLowerCase() === 'content-type')) {
    grouped.unshift(['Content-Type', ['application/json']]);
  }
  currentHost().publish(subject, toBytes(body), grouped);
}

/** One of the handler's `[handler.config]` values from `wharf.toml`, or `fallback` (in a batch handler too). */
export function config(key, fallback = undefined) {
  const value = currentHost().getConfig(key);
  return value === undefined || value === null ? fallback : value;
}

/**
 * Structured logging into the host's log, tagged with the handler and the
 * delivery. Arguments are joined with spaces; objects are written as JSON.
 * The host cuts lines longer than 4 KiB.
 *
 * @example
 * log.info('order', order.id, 'accepted');
 */
export const log = Object.freeze({
  trace: (...args) => write('trace', args),
  debug: (...args) => write('debug', args),
  info: (...args) => write('info', args),
  warn: (...args) => write('warn', args),
  error: (...args) => write('error', args),
});

function write(level, args) {
  currentHost().log(level, args.map(format).join(' '));
}

function format(value) {
  if (typeof value === 'string') {
    return value;
  }
  if (value instanceof Error) {
    return `${value.name}: ${value.message}`;
  }
  if (value !== null && typeof value === 'object') {
    try {
      return JSON.stringify(value, (_, v) => (typeof v === 'bigint' ? v.toString() : v));
    } catch {
      return String(value);
    }
  }
  return String(value);
}
