// Key-value state, in the JetStream key-value buckets the handler's config
// names (`[handler.kv]` in `wharf.toml`, each bucket "read" or "read-write").
//
// Reads go to the bucket when they are made and see the delivery's own
// staged writes. Writes are staged, like `publish`: the host applies them
// only when the message succeeds, together with its outputs, exactly once in
// effect; a retried, rejected or trapped delivery applies none.
//
//   import { kv } from 'wharf-guest';
//
//   const totals = kv.bucket('totals');
//   const entry = totals.getJson(account);
//   if (entry === undefined) {
//     totals.createJson(account, cents);
//   } else {
//     totals.putJson(account, entry.value + cents, { expected: entry.revision });
//   }
//
// A delivery may stage any number of plain writes but at most one
// conditional one (`put` or `delete` with `expected`, or `create`). If its
// condition no longer holds when the message succeeds (another delivery
// wrote the key first), the host applies nothing of this delivery and runs
// the handler again on fresh state, up to 16 times, before the attempt
// counts as failed.
//
// A refused call throws a `KvError`. Left uncaught, `KvUnavailable` retries
// the message (after the handler's backoff) and the others reject it with
// their message.

import { KvInvalid, Reject } from './errors.js';
import { currentHost } from './host.js';
import { toBytes } from './message.js';

export { KvDenied, KvError, KvInvalid, KvLimit, KvUnavailable } from './errors.js';

const UTF8_FATAL = new TextDecoder('utf-8', { fatal: true });

/**
 * A key's value and the revision that wrote it. `get` gives the value as a
 * Uint8Array, `getJson` decoded. `revision` is the key's sequence in the
 * bucket's stream, which a conditional write may expect; for a key this
 * delivery has staged a write for, it is the revision that write's
 * condition names (the key's revision before this delivery), or 0 when the
 * write has none.
 */
export class Entry {
  constructor(value, revision) {
    this.value = value;
    /** @type {number} */
    this.revision = revision;
  }

  /** The value as UTF-8 text; a value that is not UTF-8 throws `Reject`. */
  text() {
    try {
      return UTF8_FATAL.decode(this.value);
    } catch (e) {
      throw new Reject(`stored value is not UTF-8: ${e.message}`);
    }
  }

  /** The value parsed as JSON; malformed JSON throws `Reject`. */
  json() {
    return decode(this.value);
  }
}

/**
 * The bucket `name`, for a handler of one message at a time. Nothing is
 * checked until a call: the host answers each one against the handler's
 * `kv` table, throwing `KvDenied` for a bucket it does not name. In a batch
 * handler, open buckets through the message: `msg.bucket(name)`.
 */
export function bucket(name) {
  if (currentHost().inBatch) {
    throw new Error(
      'kv.bucket is for handlers of one message at a time; in a batch handler, ' +
        'open the bucket through the message: msg.bucket(name)',
    );
  }
  return new Bucket(name);
}

/** One key-value bucket, as a delivery (or, in a batch, one message) reaches it. */
export class Bucket {
  #name;
  #index;

  /** @param {string} name @param {number} [index] the message's place in its batch */
  constructor(name, index = undefined) {
    if (typeof name !== 'string') {
      throw new TypeError(`a bucket name is a string, not ${typeof name}`);
    }
    this.#name = name;
    this.#index = index;
  }

  /** The bucket's name. */
  get name() {
    return this.#name;
  }

  /**
   * The key's value (a Uint8Array) and revision, or undefined when it has
   * none (never written, deleted or purged). A key this delivery has staged
   * a write for gives the staged value (undefined after a staged delete).
   *
   * @returns {Entry | undefined}
   */
  get(key) {
    const found = currentHost().readKey(this.#name, checkKey(key), this.#index);
    return found === undefined ? undefined : new Entry(found.value, Number(found.revision));
  }

  /** The key's value decoded from JSON, with its revision, or undefined; a value that is not JSON throws `Reject`. */
  getJson(key) {
    const found = this.get(key);
    return found === undefined ? undefined : new Entry(decode(found.value), found.revision);
  }

  /**
   * Stages setting `key` to `value` (a Uint8Array, an ArrayBuffer or a string
   * stored as UTF-8). With `expected`, the write applies only if the key's
   * revision is still `expected` when the message succeeds (the revision a
   * `get` returned; 0 for a key never written); otherwise the host applies
   * nothing of this delivery and runs the handler again on fresh state.
   *
   * @param {{expected?: number | bigint}} [options]
   */
  put(key, value, { expected } = {}) {
    currentHost().stagePut(this.#name, checkKey(key), toBytes(value), revision(expected), this.#index);
  }

  /**
   * Stages creating `key` with `value`, only if it has no value (never
   * written, or deleted) when the message succeeds; otherwise, as for `put`
   * with `expected`, nothing of this delivery is applied and the handler
   * runs again. This is the delivery's one conditional write.
   */
  create(key, value) {
    currentHost().stageCreate(this.#name, checkKey(key), toBytes(value), this.#index);
  }

  /**
   * Stages deleting `key`; with `expected`, only if its revision is still
   * `expected` when the message succeeds.
   *
   * @param {{expected?: number | bigint}} [options]
   */
  delete(key, { expected } = {}) {
    currentHost().stageDelete(this.#name, checkKey(key), revision(expected), this.#index);
  }

  /** Stages setting `key` to `value` as JSON (as `put`); a value JSON.stringify cannot encode throws `KvInvalid`. */
  putJson(key, value, options = {}) {
    this.put(key, encode(value), options);
  }

  /** Stages creating `key` with `value` as JSON (as `create`). */
  createJson(key, value) {
    this.create(key, encode(value));
  }

  toString() {
    return `Bucket(${this.#name})`;
  }
}

function checkKey(key) {
  if (typeof key !== 'string') {
    throw new TypeError(`a key is a string, not ${typeof key}`);
  }
  return key;
}

/** An expected revision as a Number (revisions are stream sequences, far below 2^53). */
function revision(expected) {
  if (expected === undefined || expected === null) {
    return undefined;
  }
  const n = typeof expected === 'bigint' ? Number(expected) : expected;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) {
    throw new TypeError(`expected is a revision (a whole number from 0), not ${String(expected)}`);
  }
  return n;
}

function encode(value) {
  let body;
  try {
    body = JSON.stringify(value);
  } catch (e) {
    throw new KvInvalid(`the value cannot be encoded as JSON: ${e.message}`);
  }
  if (body === undefined) {
    throw new KvInvalid(`the value cannot be encoded as JSON: ${typeof value}`);
  }
  return body;
}

function decode(value) {
  try {
    return JSON.parse(UTF8_FATAL.decode(value));
  } catch (e) {
    throw new Reject(`stored value is not valid JSON for this handler: ${e.message}`);
  }
}
