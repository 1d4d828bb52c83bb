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
  OutboxFull,
  PublishError,
  PublishNotAllowed,
  Reject,
  Retry,
} from './errors.js';
export { Message } from './message.js';

/**
 * Registers `fn(msg)` as the component's handler; a component has exactly
 * one. Returns `fn` unchanged, so tests can call it directly.
 *
 * @template {(msg: import('./message.js').Message) => unknown} F
 * @param {F} fn
 * @returns {F}
 */
export function handler(fn) {
  register(fn);
  return fn;
}

/**
 * Queues a message for publication when this delivery succeeds.
 *
 * Nothing leaves the host while the handler runs: when it returns, the host
 * publishes the outbox in order, each message with a deterministic
 * `Nats-Msg-Id`, and only then acks the input. `payload` is a Uint8Array, an
 * ArrayBuffer or a string (sent as UTF-8); `headers` is an object or Map of
 * name to a value or an array of values, or [name, value] pairs. Throws a
 * `PublishError` when the host refuses the message.
 */
export function publish(subject, payload, headers) {
  currentHost().publish(subject, toBytes(payload), groupHeaders(headers));
}

/**
 * Queues `value` serialised as JSON, with `Content-Type: application/json`.
 * A value JSON.stringify cannot encode (a BigInt, a cycle, undefined) throws `InvalidPublish`.
 */
export function publishJson(subject, value, headers) {
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

/** One of the handler's `[handler.config]` values from `wharf.toml`, or `fallback`. */
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
