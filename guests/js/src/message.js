// One delivery of one message, as a handler sees it.

import { Reject } from './errors.js';

const UTF8 = new TextEncoder();

/** One delivery of one message: payload, headers and delivery metadata. */
export class Message {
  /**
   * @param raw the WIT `message` record as the bindings hand it over (or
   *   anything shaped like it): subject, payload, headers as `{name, values}`,
   *   and delivery.
   */
  constructor(raw) {
    this._raw = raw;
  }

  /**
   * Builds a message by hand, for unit-testing a handler without the host.
   *
   * @example
   * const msg = Message.forTest('orders.new', '{"id": "A-1"}', { headers: { Tenant: 'acme' }, attempt: 2, maxAttempts: 4 });
   *
   * @param {string} subject
   * @param {Uint8Array | ArrayBuffer | string} [payload]
   * @param {{headers?: HeadersLike, attempt?: number, maxAttempts?: number, stream?: string, consumer?: string,
   *   streamSequence?: number, consumerSequence?: number, publishedAtNanos?: bigint}} [options]
   */
  static forTest(subject, payload = new Uint8Array(), options = {}) {
    const {
      headers,
      attempt = 1,
      maxAttempts = 1,
      stream = 'TEST',
      consumer = 'test',
      streamSequence = 1,
      consumerSequence = 1,
      publishedAtNanos = 0n,
    } = options;
    return new Message({
      subject,
      payload: toBytes(payload),
      headers: groupHeaders(headers).map(([name, values]) => ({ name, values })),
      delivery: {
        stream,
        consumer,
        streamSequence: BigInt(streamSequence),
        consumerSequence: BigInt(consumerSequence),
        attempt,
        maxAttempts,
        publishedAtNanos: BigInt(publishedAtNanos),
      },
    });
  }

  /** A copy with one more header value, for unit tests built with `forTest`. */
  withHeader(name, value) {
    const pairs = this._raw.headers.flatMap((h) => h.values.map((v) => [h.name, v]));
    pairs.push([name, value]);
    return new Message({
      ...this._raw,
      headers: groupHeaders(pairs).map(([n, values]) => ({ name: n, values })),
    });
  }

  /** The subject the message was published to. */
  get subject() {
    return this._raw.subject;
  }

  /** The raw payload. @type {Uint8Array} */
  get payload() {
    return this._raw.payload;
  }

  /** The payload as UTF-8 text; a payload that is not UTF-8 throws `Reject`. */
  text() {
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(this._raw.payload);
    } catch (e) {
      throw new Reject(`payload is not UTF-8: ${e.message}`);
    }
  }

  /** The payload parsed as JSON; malformed JSON throws `Reject`. */
  json() {
    const text = this.text();
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new Reject(`payload is not valid JSON for this handler: ${e.message}`);
    }
  }

  /** The first value of a header, matched without regard to case, or undefined. */
  header(name) {
    return this.headerValues(name)[0];
  }

  /** Every value of a header, matched without regard to case, in the order they were sent. */
  headerValues(name) {
    const wanted = name.toLowerCase();
    return this._raw.headers.filter((h) => h.name.toLowerCase() === wanted).flatMap((h) => h.values);
  }

  /** Every header: name (as sent) to all of its values, in order. @type {Record<string, string[]>} */
  get headers() {
    const out = {};
    for (const h of this._raw.headers) {
      (out[h.name] ??= []).push(...h.values);
    }
    return out;
  }

  /** The JetStream stream the message is stored in. */
  get stream() {
    return this._raw.delivery.stream;
  }

  /** The durable consumer that delivered it. */
  get consumer() {
    return this._raw.delivery.consumer;
  }

  /** The message's sequence number in its stream; the same on every redelivery. */
  get streamSequence() {
    return Number(this._raw.delivery.streamSequence);
  }

  /** The consumer's sequence number for this delivery. */
  get consumerSequence() {
    return Number(this._raw.delivery.consumerSequence);
  }

  /** This delivery attempt, starting at 1. */
  get attempt() {
    return this._raw.delivery.attempt;
  }

  /** The attempt on which a failure dead-letters instead of retrying. */
  get maxAttempts() {
    return this._raw.delivery.maxAttempts;
  }

  /** Whether a failure now dead-letters the message. */
  get isFinalAttempt() {
    return this.attempt >= this.maxAttempts;
  }

  /** When the server stored the message, in nanoseconds since the Unix epoch. @type {bigint} */
  get publishedAtNanos() {
    return BigInt(this._raw.delivery.publishedAtNanos);
  }

  /** When the server stored the message, with millisecond precision. */
  get publishedAt() {
    return new Date(Number(this.publishedAtNanos / 1_000_000n));
  }

  toString() {
    return `Message(${this.subject}, ${this.payload.length} bytes, ${this.stream}#${this.streamSequence}, attempt ${this.attempt}/${this.maxAttempts})`;
  }
}

/**
 * Headers as a handler may give them: an object or Map of name to one value
 * or an array of values, or [name, value] pairs where a name given twice keeps both.
 * @typedef {Record<string, string | string[]> | Map<string, string | string[]> | [string, string][] | undefined} HeadersLike
 */

/** A payload as bytes: byte arrays as they are, text as UTF-8. */
export function toBytes(payload) {
  if (typeof payload === 'string') {
    return UTF8.encode(payload);
  }
  if (payload instanceof Uint8Array) {
    return payload;
  }
  if (payload instanceof ArrayBuffer) {
    return new Uint8Array(payload);
  }
  if (ArrayBuffer.isView(payload)) {
    return new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
  }
  throw new TypeError(`a payload is a Uint8Array, an ArrayBuffer or a string, not ${describe(payload)}`);
}

/** Headers as [name, values] with each name once, in first-seen order. */
export function groupHeaders(headers) {
  if (headers === undefined || headers === null) {
    return [];
  }
  const pairs = [];
  const add = (name, value) => {
    if (Array.isArray(value)) {
      for (const v of value) {
        pairs.push([name, v]);
      }
    } else {
      pairs.push([name, value]);
    }
  };
  if (Array.isArray(headers)) {
    for (const [name, value] of headers) {
      add(name, value);
    }
  } else if (headers instanceof Map) {
    for (const [name, value] of headers) {
      add(name, value);
    }
  } else if (typeof headers === 'object') {
    for (const [name, value] of Object.entries(headers)) {
      add(name, value);
    }
  } else {
    throw new TypeError(`headers are an object, a Map or [name, value] pairs, not ${describe(headers)}`);
  }
  const grouped = new Map();
  for (const [name, value] of pairs) {
    if (typeof name !== 'string' || typeof value !== 'string') {
      throw new TypeError(`header names and values are strings, got ${describe(name)}: ${describe(value)}`);
    }
    if (!grouped.has(name)) {
      grouped.set(name, []);
    }
    grouped.get(name).push(value);
  }
  return [...grouped];
}

function describe(value) {
  if (value === null) {
    return 'null';
  }
  return typeof value === 'object' ? (value.constructor?.name ?? 'object') : typeof value;
}
