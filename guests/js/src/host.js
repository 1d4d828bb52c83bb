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

/**
 * A stand-in for the Wharf host that records what a handler asks of it. It
 * checks publishes the way the host does where that is cheap to mirror
 * (subject syntax, the allow-list when one is given, the outbox's message
 * count, header values), so a handler's handling of a refused publish can be
 * tested too.
 */
export class RecordingHost {
  /**
   * @param {{config?: Record<string, string>, allow?: string[], maxOutboxMessages?: number, handlerName?: string}} [options]
   *   `allow` lists the subjects the handler may publish to, with NATS
   *   wildcards; without it every subject is allowed.
   */
  constructor({ config = {}, allow, maxOutboxMessages = 100, handlerName = 'test' } = {}) {
    this.config = { ...config };
    this.allow = allow === undefined ? undefined : [...allow];
    this.maxOutboxMessages = maxOutboxMessages;
    this.handlerName = handlerName;
    /** @type {Published[]} */
    this.published = [];
    /** @type {{level: string, message: string}[]} */
    this.logs = [];
  }

  /** @param {[string, string[]][]} headers */
  publish(subject, payload, headers) {
    const problem = subjectProblem(subject);
    if (problem !== undefined) {
      throw new InvalidPublish(problem);
    }
    if (this.allow !== undefined && !this.allow.some((p) => subjectMatches(p, subject))) {
      throw new PublishNotAllowed(
        `subject "${subject}" is not in handler "${this.handlerName}"'s publish allow-list`,
      );
    }
    if (this.published.length >= this.maxOutboxMessages) {
      throw new OutboxFull(`at most ${this.maxOutboxMessages} messages per delivery`);
    }
    const grouped = {};
    for (const [name, values] of headers) {
      if (name === '' || /[^\x21-\x7e]|:/.test(name)) {
        throw new InvalidPublish(`invalid header name "${name}"`);
      }
      for (const value of values) {
        if (/[\r\n]/.test(value)) {
          throw new InvalidPublish(`header "${name}" has a line break in its value`);
        }
      }
      (grouped[name] ??= []).push(...values);
    }
    this.published.push(new Published(subject, Uint8Array.from(payload), grouped));
  }

  getConfig(key) {
    return Object.prototype.hasOwnProperty.call(this.config, key) ? this.config[key] : undefined;
  }

  log(level, message) {
    this.logs.push({ level, message });
  }

  /** Forgets what was published and logged so far. */
  clear() {
    this.published.length = 0;
    this.logs.length = 0;
  }
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
