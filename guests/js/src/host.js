// Where publish, config and the log go: the Wharf host inside a component, a
// recording host elsewhere. Inside a component, `component.js` installs an
// adapter over the `wharf:handler/host` imports; anywhere else (unit tests,
// a REPL) the SDK talks to a RecordingHost, so a handler runs unchanged.

import { InvalidPublish, OutboxFull, PublishNotAllowed } from './errors.js';

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

/**
 * A stand-in for the Wharf host that records what a handler asks of it.
 *
 * Its defaults are the host's for a handler whose `wharf.toml` entry sets
 * nothing: no subject may be published to, no `Nats-*` header other than
 * `Nats-Msg-Id` may be set, no config value exists, and the outbox takes 100
 * messages and 1 MiB. It checks publishes the way the host does where that
 * is cheap to mirror (subject syntax, the allow-list, reserved headers, the
 * outbox's limits, header values), so a handler that passes its tests is not
 * refused by the host, and its handling of a refused publish can be tested
 * too.
 */
export class RecordingHost {
  /**
   * @param {{config?: Record<string, string>, allow?: string[], allowHeaders?: string[],
   *   maxOutboxMessages?: number, maxOutboxBytes?: number, handlerName?: string}} [options]
   *   `allow` lists the subjects the handler may publish to, with NATS
   *   wildcards (its `publish` setting), and `allowHeaders` the `Nats-*`
   *   headers it may set (its `allow_headers`); both are empty unless given,
   *   as in the host.
   */
  constructor({
    config = {},
    allow,
    allowHeaders,
    maxOutboxMessages = MAX_OUTBOX_MESSAGES,
    maxOutboxBytes = MAX_OUTBOX_BYTES,
    handlerName = 'test',
  } = {}) {
    this.config = { ...config };
    this.allow = patterns(allow, 'allow');
    this.allowHeaders = patterns(allowHeaders, 'allowHeaders');
    this.maxOutboxMessages = maxOutboxMessages;
    this.maxOutboxBytes = maxOutboxBytes;
    this.handlerName = handlerName;
    /** @type {Published[]} */
    this.published = [];
    /** @type {{level: string, message: string}[]} */
    this.logs = [];
    /** Bytes in the outbox so far, counted as the host counts them. */
    this.outboxBytes = 0;
  }

  /** @param {[string, string[]][]} headers */
  publish(subject, payload, headers) {
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
    if (this.published.length >= this.maxOutboxMessages) {
      throw new OutboxFull(`at most ${this.maxOutboxMessages} messages per delivery`);
    }
    const pairs = this.#checkHeaders(headers);
    const size = UTF8.encode(subject).length + payload.length + headerWireSize(pairs) + TEST_HOST_HEADER_BYTES;
    if (this.outboxBytes + size > this.maxOutboxBytes) {
      throw new OutboxFull(`at most ${this.maxOutboxBytes} bytes per delivery, the host's headers included`);
    }
    this.outboxBytes += size;
    const grouped = {};
    for (const [name, values] of headers) {
      (grouped[name] ??= []).push(...values);
    }
    this.published.push(new Published(subject, Uint8Array.from(payload), grouped));
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

  /** Forgets what was published and logged so far, and empties the outbox. */
  clear() {
    this.published.length = 0;
    this.logs.length = 0;
    this.outboxBytes = 0;
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
