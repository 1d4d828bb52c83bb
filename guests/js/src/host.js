// Where publish, config, the log and key-value calls go: the Wharf host
// inside a component, a recording host elsewhere. Inside a component,
// `component.js` (the `handler` world) or `batch-component.js` (the
// `batch-handler` world) installs an adapter over the imports; anywhere else
// (unit tests, a REPL) the SDK talks to a RecordingHost, so a handler runs
// unchanged.
//
// Every host has the same calls: `publish`, `getConfig`, `log`, and for
// key-value state `readKey`, `stagePut`, `stageCreate` and `stageDelete`.
// Those a message makes take an `index` last: undefined for a handler of one
// message at a time, the message's place in its batch for a batch handler;
// `inBatch` says which kind is running.

import { InvalidPublish, OutboxFull, PublishNotAllowed } from './errors.js';
import { ABSENT, ALWAYS, Buckets, checkBuckets, MAX_KV_WRITE_BYTES, MAX_KV_WRITES, Staging } from './memory.js';

/** Log levels, as the WIT `level` enum names them. */
export const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

/** One message a handler queued with `publish`, as a test host recorded it. */
export class Published {
  constructor(subject, payload, headers) {
    this.subject = subject;
    /** @type {Uint8Array} */
    this.payload = payload;
    /** Header name (as given) to all of its values. @type {Record<string, string[]>} */
    this.headers = headers;
  }

  /** The first value of a header, matched without regard to case. */
  header(name) {
    const wanted = name.toLowerCase();
    for (const [key, values] of Object.entries(this.headers)) {
      if (key.toLowerCase() === wanted && values.length > 0) {
        return values[0];
      }
    }
    return undefined;
  }

  /** The payload decoded as UTF-8. */
  text() {
    return new TextDecoder().decode(this.payload);
  }

  /** The payload parsed as JSON. */
  json() {
    return JSON.parse(this.text());
  }
}

/** The host's defaults for a handler that does not set them (`runtime/src/config/mod.rs`, `defaults`). */
export const MAX_OUTBOX_MESSAGES = 100;
export const MAX_OUTBOX_BYTES = 1024 * 1024;

/** Subject roots no guest may ever publish to, allowed or not. */
const FORBIDDEN_ROOTS = ['$JS', '$JSC', '$SYS', '$NRG'];

const UTF8 = new TextEncoder();

/** Bytes a header block takes on the wire, as the server counts them against `max_payload`. */
export function headerWireSize(pairs) {
  let size = 'NATS/1.0\r\n\r\n'.length;
  for (const [name, value] of pairs) {
    size += UTF8.encode(name).length + 2 + UTF8.encode(value).length + 2;
  }
  return size;
}

/**
 * What the headers the host adds to one output take on the wire, at most.
 * The host counts them against `max_outbox_bytes` when the guest publishes:
 * `Nats-Msg-Id` (`wharf:<stream>:<consumer>:<sequence>:<index>` with the
 * largest sequence and index), `Wharf-Source-Stream`,
 * `Wharf-Source-Sequence`, `traceparent`, the longest `tracestate` it
 * carries over (512 bytes), and the `NATS/1.0` header line.
 */
export function hostHeaderBytes(stream, consumer) {
  const maxSequence = (2n ** 64n - 1n).toString();
  const pairs = [
    ['Nats-Msg-Id', `wharf:${stream}:${consumer}:${maxSequence}:99999`],
    ['Wharf-Source-Stream', stream],
    ['Wharf-Source-Sequence', maxSequence],
    ['traceparent', '00-'.repeat(19)],
  ];
  return headerWireSize(pairs) + 512 + 'tracestate'.length + 4;
}

/**
 * What the host adds to each output of a handler reading stream `TEST`
 * through consumer `test` (the names `Message.forTest` gives a delivery).
 */
export const TEST_HOST_HEADER_BYTES = hostHeaderBytes('TEST', 'test');

/** What one message staged: its outputs and its key-value writes. */
class Outbox {
  constructor(stream = 'TEST', consumer = 'test') {
    /** @type {Published[]} */
    this.published = [];
    this.bytes = 0;
    this.hostHeaderBytes = hostHeaderBytes(stream, consumer);
    this.staging = new Staging();
  }
}

/**
 * A stand-in for the Wharf host that records what a handler asks of it.
 *
 * Its defaults are the host's for a handler whose `wharf.toml` entry sets
 * nothing: no subject may be published to, no `Nats-*` header other than
 * `Nats-Msg-Id` may be set, no config value exists, no key-value bucket may
 * be reached, the outbox takes 100 messages and 1 MiB, and a delivery may
 * stage 64 key-value writes and 256 KiB. It checks publishes the way the
 * host does where that is cheap to mirror (subject syntax, the allow-list,
 * reserved headers, the outbox's limits, header values), and key-value calls
 * by the host's rules (the `kv` table and its modes, the key grammar, the
 * limits, one conditional write per delivery), so a handler that passes its
 * tests is not refused by the host, and its handling of a refusal can be
 * tested too.
 *
 * Its buckets (`kvState`) keep their state from one delivery to the next; a
 * delivery's writes are staged until it is committed.
 */
export class RecordingHost {
  /**
   * @param {{config?: Record<string, string>, allow?: string[], allowHeaders?: string[],
   *   maxOutboxMessages?: number, maxOutboxBytes?: number, handlerName?: string,
   *   buckets?: Record<string, 'read' | 'read-write'>, maxKvWrites?: number, maxKvWriteBytes?: number,
   *   unavailable?: string[]}} [options]
   *   `allow` lists the subjects the handler may publish to, with NATS
   *   wildcards (its `publish` setting), `allowHeaders` the `Nats-*`
   *   headers it may set (its `allow_headers`), and `buckets` its `kv` table;
   *   all are empty unless given, as in the host. `unavailable` names
   *   buckets whose reads fail with `KvUnavailable`.
   */
  constructor({
    config = {},
    allow,
    allowHeaders,
    maxOutboxMessages = MAX_OUTBOX_MESSAGES,
    maxOutboxBytes = MAX_OUTBOX_BYTES,
    handlerName = 'test',
    buckets,
    maxKvWrites = MAX_KV_WRITES,
    maxKvWriteBytes = MAX_KV_WRITE_BYTES,
    unavailable,
  } = {}) {
    this.config = { ...config };
    this.allow = patterns(allow, 'allow');
    this.allowHeaders = patterns(allowHeaders, 'allowHeaders');
    this.maxOutboxMessages = maxOutboxMessages;
    this.maxOutboxBytes = maxOutboxBytes;
    this.handlerName = handlerName;
    this.kvSettings = {
      handlerName,
      buckets: checkBuckets(buckets),
      maxKvWrites,
      maxKvWriteBytes,
      unavailable: new Set(patterns(unavailable, 'unavailable')),
    };
    /** The buckets' state, kept from one delivery to the next. */
    this.kvState = new Buckets();
    /** @type {{level: string, message: string}[]} */
    this.logs = [];
    this.outbox = new Outbox();
    /** One outbox per message while a batch runs, else undefined. @type {Outbox[] | undefined} */
    this.batch = undefined;
  }

  /** Whether a batch handler is running: the single-message calls are refused. */
  get inBatch() {
    return this.batch !== undefined;
  }

  /** What was published so far (by a handler of one message at a time). @type {Published[]} */
  get published() {
    return this.outbox.published;
  }

  /** Bytes in the outbox so far, counted as the host counts them. */
  get outboxBytes() {
    return this.outbox.bytes;
  }

  #target(index) {
    if (index === undefined) {
      return this.outbox;
    }
    if (this.batch === undefined) {
      throw new Error(`message ${index} of a batch, but no batch is running`);
    }
    return this.batch[index];
  }

  /** @param {[string, string[]][]} headers */
  publish(subject, payload, headers, index = undefined) {
    const outbox = this.#target(index);
    const problem = subjectProblem(subject);
    if (problem !== undefined) {
      throw new InvalidPublish(problem);
    }
    if (!this.allows(subject)) {
      throw new PublishNotAllowed(
        `subject "${subject}" is not in handler "${this.handlerName}"'s publish allow-list ` +
          `${JSON.stringify(this.allow)} (its publish setting in wharf.toml; tests pass the allow option)`,
      );
    }
    if (outbox.published.length >= this.maxOutboxMessages) {
      throw new OutboxFull(`at most ${this.maxOutboxMessages} messages per delivery`);
    }
    const pairs = this.#checkHeaders(headers);
    const size = UTF8.encode(subject).length + payload.length + headerWireSize(pairs) + outbox.hostHeaderBytes;
    if (outbox.bytes + size > this.maxOutboxBytes) {
      throw new OutboxFull(`at most ${this.maxOutboxBytes} bytes per delivery, the host's headers included`);
    }
    outbox.bytes += size;
    const grouped = {};
    for (const [name, values] of headers) {
      (grouped[name] ??= []).push(...values);
    }
    outbox.published.push(new Published(subject, Uint8Array.from(payload), grouped));
  }

  /**
   * Whether the allow-list lets the handler publish to `subject`, as the host
   * decides it: wildcards never reach subjects under `$…` or `_INBOX…` (only a
   * literal entry does), and `$JS`, `$JSC`, `$SYS` and `$NRG` never.
   */
  allows(subject) {
    const root = subject.split('.')[0];
    if (FORBIDDEN_ROOTS.includes(root)) {
      return false;
    }
    if (root.startsWith('$') || root.startsWith('_INBOX')) {
      return this.allow.includes(subject);
    }
    return this.allow.some((p) => subjectMatches(p, subject));
  }

  /** The host's header policy: the [name, value] pairs, or the refusal it would throw. */
  #checkHeaders(headers) {
    const pairs = [];
    let msgIdSeen = false;
    for (const [name, values] of headers) {
      const lower = name.toLowerCase();
      if (lower.startsWith('wharf-')) {
        throw new PublishNotAllowed(`header "${name}" is reserved: Wharf-* headers are set by the host`);
      }
      if (lower === 'nats-msg-id') {
        if (values.length === 1 && values[0].trimStart().toLowerCase().startsWith('wharf')) {
          throw new PublishNotAllowed('a Nats-Msg-Id starting with "wharf" is the host\'s: choose another id');
        }
        if (values.length !== 1 || values[0].trim() === '' || msgIdSeen) {
          throw new InvalidPublish('header "Nats-Msg-Id" must have exactly one non-empty value');
        }
        msgIdSeen = true;
        // The host stores the id under its canonical name.
        pairs.push(['Nats-Msg-Id', values[0]]);
        continue;
      }
      if (lower.includes('nats-') && !this.allowHeaders.some((a) => a.toLowerCase() === lower)) {
        throw new PublishNotAllowed(
          `header "${name}" changes what JetStream does with messages; the handler's \`allow_headers\` must name it`,
        );
      }
      if (name === '') {
        throw new InvalidPublish('a header needs a name');
      }
      if (/[^\x21-\x7e]|:/.test(name)) {
        throw new InvalidPublish(`invalid header name "${name}"`);
      }
      for (const value of values) {
        if (/[\x00-\x08\x0a-\x1f\x7f-\x9f]/.test(value)) {
          throw new InvalidPublish(`header "${name}" has a control character in its value`);
        }
        pairs.push([name, value]);
      }
    }
    return pairs;
  }

  getConfig(key) {
    return Object.prototype.hasOwnProperty.call(this.config, key) ? this.config[key] : undefined;
  }

  log(level, message) {
    this.logs.push({ level, message });
  }

  /** @returns {{value: Uint8Array, revision: number} | undefined} */
  readKey(bucket, key, index = undefined) {
    return this.#target(index).staging.get(this.kvSettings, this.kvState, bucket, key);
  }

  stagePut(bucket, key, value, expected, index = undefined) {
    this.#target(index).staging.stage(this.kvSettings, bucket, key, value, expected ?? ALWAYS);
  }

  stageCreate(bucket, key, value, index = undefined) {
    this.#target(index).staging.stage(this.kvSettings, bucket, key, value, ABSENT);
  }

  stageDelete(bucket, key, expected, index = undefined) {
    this.#target(index).staging.stage(this.kvSettings, bucket, key, undefined, expected ?? ALWAYS);
  }

  /** The key-value writes staged so far (by a handler of one message at a time), not yet applied. */
  stagedWrites() {
    return this.outbox.staging.writes();
  }

  /**
   * Applies the staged key-value writes as the host does when a delivery
   * succeeds, and starts a new staging. Returns undefined, or the conflict
   * when a conditional write's condition no longer holds (then nothing is
   * applied).
   */
  commit() {
    const writes = this.outbox.staging.writes();
    this.outbox.staging = new Staging();
    return this.kvState.apply(writes);
  }

  /** Drops the staged key-value writes, as the host does when a delivery does not succeed. */
  discard() {
    this.outbox.staging = new Staging();
  }

  /** Forgets what was published and logged so far, empties the outbox and drops staged writes. */
  clear() {
    this.outbox = new Outbox();
    this.logs.length = 0;
  }

  /** Starts a delivery of `msg`: an empty outbox, sized for its stream and consumer, and no staged writes. */
  begin(msg) {
    this.outbox = msg === undefined ? new Outbox() : new Outbox(msg.stream, msg.consumer);
  }

  /** Starts a batch: one empty outbox per message. */
  beginBatch(messages) {
    this.batch = messages.map((m) => new Outbox(m.stream, m.consumer));
  }

  /** Ends a batch, returning each message's outbox. */
  endBatch() {
    const batch = this.batch ?? [];
    this.batch = undefined;
    return batch;
  }
}

function patterns(value, name) {
  if (value === undefined || value === null) {
    return [];
  }
  if (typeof value === 'string') {
    // A lone string would otherwise be taken letter by letter.
    throw new TypeError(`${name} takes an array, not a string: ${name}: [${JSON.stringify(value)}]`);
  }
  return [...value];
}

/** Why `subject` is not a literal NATS subject, in the host's words, or undefined. */
export function subjectProblem(subject) {
  if (typeof subject !== 'string' || subject === '') {
    return 'subject must not be empty';
  }
  for (const token of subject.split('.')) {
    if (token === '') {
      return `"${subject}" has an empty token`;
    }
    if (/[\s\x00-\x1f\x7f]/.test(token)) {
      return `"${subject}" contains whitespace`;
    }
    if (token.includes('*') || token.includes('>')) {
      return `"${subject}" must be a literal subject, without wildcards`;
    }
  }
  return undefined;
}

/** Whether `subject` matches `pattern` with NATS wildcards (`*` one token, `>` the rest). */
export function subjectMatches(pattern, subject) {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') {
      return s.length > i;
    }
    if (i >= s.length || (p[i] !== '*' && p[i] !== s[i])) {
      return false;
    }
  }
  return p.length === s.length;
}

/** Where publishes and log lines go outside a component when no test host is installed. */
export const defaultHost = new RecordingHost();

let current = defaultHost;

/** The host that publish, config and the log talk to right now. */
export function currentHost() {
  return current;
}

/** Makes `host` the current host and returns the one it replaces. */
export function installHost(host) {
  const previous = current;
  current = host;
  return previous;
}
