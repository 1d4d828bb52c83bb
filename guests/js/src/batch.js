// Batch handlers: the messages of one call, each with its own handle on the host.

import { settleOne } from './dispatch.js';
import { InvalidPublish } from './errors.js';
import { currentHost } from './host.js';
import { Bucket } from './kv.js';
import { groupHeaders, Message, toBytes } from './message.js';

/**
 * One message of a batch, and the host as that message reaches it: what it
 * publishes and writes is attributed to it and takes effect only if its
 * result is a success. Everything a `Message` has works as in a handler of
 * one message at a time.
 */
export class BatchMessage extends Message {
  #index;

  constructor(raw, index) {
    super(raw);
    this.#index = index;
  }

  /** The message's place in its batch, from 0: where its result goes in the returned array. */
  get index() {
    return this.#index;
  }

  /** Queues a message for publication when this message succeeds (as `publish`). */
  publish(subject, payload, headers) {
    currentHost().publish(subject, toBytes(payload), groupHeaders(headers), this.#index);
  }

  /** Queues `value` as JSON, with `Content-Type: application/json`, when this message succeeds (as `publishJson`). */
  publishJson(subject, value, headers) {
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
    currentHost().publish(subject, toBytes(body), grouped, this.#index);
  }

  /**
   * The bucket `name` as this message reaches it: its reads see this
   * message's staged writes (and no other message's); its writes are this
   * message's, applied only if it succeeds. One conditional write per message.
   */
  bucket(name) {
    return new Bucket(name, this.#index);
  }

  toString() {
    return `BatchMessage(${this.#index}, ${super.toString()})`;
  }
}

/**
 * The messages of one call of a batch handler, in delivery order: an
 * iterable with `length`, `at(i)` and `messages`. A batch handler returns
 * one result per message, in this order: undefined for success, or a
 * `Retry` or `Reject` (an instance, not thrown). `map` calls a function per
 * message and collects those results for you.
 */
export class Batch {
  /** @param {object[]} raws the WIT `message` records */
  constructor(raws) {
    /** @type {BatchMessage[]} */
    this.messages = raws.map((raw, i) => new BatchMessage(raw, i));
  }

  /** How many messages the batch holds; the handler returns as many results. */
  get length() {
    return this.messages.length;
  }

  /** Message `i` (negative counts from the end). */
  at(i) {
    return this.messages.at(i);
  }

  [Symbol.iterator]() {
    return this.messages[Symbol.iterator]();
  }

  /**
   * Calls `fn(msg)` (sync or async) for each message in order, one at a
   * time, and resolves to the batch's results. A message whose call returns
   * succeeds. `Retry`, `Reject`, a `PublishError` and a `KvError` settle that
   * message as they would settle a message handled alone. Anything else
   * thrown settles only its own message, as a trap would: its stack goes to
   * stderr, and the message is retried after the handler's backoff, or, on
   * its final attempt, rejected with the error's last line (the batch world
   * has no trap of one message).
   *
   * @param {(msg: BatchMessage) => unknown} fn
   */
  async map(fn) {
    const results = [];
    for (const msg of this.messages) {
      results.push(await settleOne(fn, msg));
    }
    return results;
  }

  toString() {
    return `Batch(${this.messages.length} messages)`;
  }
}
