// How a handler says a delivery did not succeed, and why the host refused a publish or a key-value call.

// Longer than any backoff needs (285,000 years), and exact as a Number.
const MAX_DELAY_MS = Number.MAX_SAFE_INTEGER;

/** Base class of `Retry` and `Reject`: the two ways a handler settles a message without success. */
export class HandlerError extends Error {}

/**
 * A transient failure: deliver the message again later.
 *
 * Without a delay the handler's backoff schedule decides when; with one (in
 * milliseconds) the message comes back after that long. On the final attempt
 * the message is dead-lettered instead (kind `exhausted`).
 *
 * @example
 * throw new Retry();               // after the configured backoff
 * throw new Retry({ delay: 200 }); // after 200 ms
 */
export class Retry extends HandlerError {
  /** @param {{delay?: number | bigint} | number | bigint} [options] */
  constructor(options = {}) {
    const delay = typeof options === 'object' && options !== null ? options.delay : options;
    const delayMs = toDelayMs(delay);
    super(delayMs === undefined ? 'retry' : `retry after ${delayMs} ms`);
    this.name = 'Retry';
    /** The requested delay in whole milliseconds, or undefined for the backoff schedule. */
    this.delayMs = delayMs;
  }
}

/** A permanent failure: dead-letter the message now, with this reason (kind `rejected`). */
export class Reject extends HandlerError {
  /** @param {string} reason */
  constructor(reason) {
    super(String(reason));
    this.name = 'Reject';
    this.reason = String(reason);
  }
}

/**
 * Why the host refused a `publish`. `kind` is `not-allowed`, `outbox-full` or
 * `invalid`, each with its own subclass. Left uncaught it rejects the delivery
 * with its message, since retrying would meet the same refusal; catch it to
 * decide otherwise.
 */
export class PublishError extends Error {
  constructor(kind, prefix, detail) {
    super(`${prefix}: ${detail}`);
    this.name = 'PublishError';
    this.kind = kind;
    this.detail = String(detail);
  }
}

/** The subject is not in the handler's `publish` allow-list. */
export class PublishNotAllowed extends PublishError {
  constructor(detail) {
    super('not-allowed', 'publish not allowed', detail);
    this.name = 'PublishNotAllowed';
  }
}

/** The delivery's outbox is full (message count or bytes). */
export class OutboxFull extends PublishError {
  constructor(detail) {
    super('outbox-full', 'outbox full', detail);
    this.name = 'OutboxFull';
  }
}

/** The subject or a header is not valid for NATS, or the value could not be encoded. */
export class InvalidPublish extends PublishError {
  constructor(detail) {
    super('invalid', 'invalid publish', detail);
    this.name = 'InvalidPublish';
  }
}

/** The `PublishError` subclass for a WIT `publish-error` case. */
export function publishErrorFor(tag, detail) {
  switch (tag) {
    case 'not-allowed':
      return new PublishNotAllowed(detail);
    case 'outbox-full':
      return new OutboxFull(detail);
    default:
      return new InvalidPublish(detail);
  }
}

function toDelayMs(delay) {
  if (delay === undefined || delay === null) {
    return undefined;
  }
  if (typeof delay === 'bigint') {
    if (delay < 0n) {
      throw new RangeError(`a retry delay must not be negative, got ${delay}`);
    }
    return delay > BigInt(MAX_DELAY_MS) ? MAX_DELAY_MS : Number(delay);
  }
  if (typeof delay !== 'number' || Number.isNaN(delay)) {
    throw new TypeError(`a retry delay is a number of milliseconds, not ${String(delay)}`);
  }
  if (delay < 0) {
    throw new RangeError(`a retry delay must not be negative, got ${delay}`);
  }
  // Whole milliseconds, rounded down like the Rust SDK's Duration::as_millis.
  return Math.min(Math.floor(delay), MAX_DELAY_MS);
}

/**
 * Why a key-value call failed. `kind` is `denied`, `invalid`, `limit` or
 * `unavailable`, each with its own subclass. Left uncaught, `KvUnavailable`
 * retries the message (after the handler's backoff, like `new Retry()`) and
 * every other case rejects it with its message, since running it again
 * would meet the same refusal; catch it to decide otherwise.
 */
export class KvError extends Error {
  constructor(kind, prefix, detail) {
    super(`${prefix}: ${detail}`);
    this.name = 'KvError';
    this.kind = kind;
    this.detail = String(detail);
  }
}

/** The bucket is not in the handler's `kv` table, or it is `"read"` only and the call writes. */
export class KvDenied extends KvError {
  constructor(detail) {
    super('denied', 'key-value access denied', detail);
    this.name = 'KvDenied';
  }
}

/** The key (or bucket name) is not valid for JetStream key-value, or a key was written twice under different conditions. */
export class KvInvalid extends KvError {
  constructor(detail) {
    super('invalid', 'invalid key-value call', detail);
    this.name = 'KvInvalid';
  }
}

/** The delivery's staged writes would exceed its limits: count, bytes, or a second conditional write. */
export class KvLimit extends KvError {
  constructor(detail) {
    super('limit', 'key-value limit', detail);
    this.name = 'KvLimit';
  }
}

/** The bucket could not be read now (the server is unreachable, a leader election); retrying is the usual answer. */
export class KvUnavailable extends KvError {
  constructor(detail) {
    super('unavailable', 'key-value unavailable', detail);
    this.name = 'KvUnavailable';
  }
}

/** The `KvError` subclass for a WIT `kv-error` case. */
export function kvErrorFor(tag, detail) {
  switch (tag) {
    case 'denied':
      return new KvDenied(detail);
    case 'invalid':
      return new KvInvalid(detail);
    case 'limit':
      return new KvLimit(detail);
    default:
      return new KvUnavailable(detail);
  }
}
