// Key-value state in memory, for the recording host: buckets with
// revisions, and one delivery's staged writes. Staging follows the rules of
// the host's `kv` import (`runtime/src/sandbox/host/kv.rs`) and committing
// those of its commit (`runtime/src/effects/kv.rs`), with the host's error
// texts, so that a handler tested here meets the same answers in the host.

import { KvDenied, KvInvalid, KvLimit, KvUnavailable } from './errors.js';

/** The host's defaults for a handler that does not set them (`runtime/src/config/mod.rs`, `defaults`). */
export const MAX_KV_WRITES = 64;
export const MAX_KV_WRITE_BYTES = 256 * 1024;

/** Bucket modes, as the handler's `kv` table spells them. */
const MODES = ['read', 'read-write'];

/** A staged write's condition: none, a revision (a number) the key must still have, or no value. */
export const ALWAYS = 'always';
export const ABSENT = 'absent';

const UTF8 = new TextEncoder();

/**
 * One key-value write a handler staged, as a test host recorded it. `value`
 * is undefined for a delete; `expected` is the revision the write expects
 * (`put(key, value, { expected })`, `delete(key, { expected })`), and
 * `create` is true for a write that expects the key to have no value.
 */
export class Write {
  constructor(bucket, key, value, { expected, create = false } = {}) {
    this.bucket = bucket;
    this.key = key;
    /** @type {Uint8Array | undefined} */
    this.value = value;
    /** @type {number | undefined} */
    this.expected = expected;
    this.create = create;
  }
}

/** JetStream key-value's key grammar: letters, digits and `-/_=.`, not starting or ending with `.`, no empty token. */
export function isValidKey(key) {
  return (
    typeof key === 'string' &&
    key.length > 0 &&
    UTF8.encode(key).length <= 1024 &&
    !key.startsWith('.') &&
    !key.endsWith('.') &&
    !key.includes('..') &&
    /^[A-Za-z0-9\-/_=.]+$/.test(key)
  );
}

/** Every bucket of a test host: each key's last write (a value or a delete marker) at its revision. */
export class Buckets {
  constructor() {
    /** @type {Map<string, {sequence: number, keys: Map<string, {revision: number, value: Uint8Array | undefined}>}>} */
    this.buckets = new Map();
  }

  #bucket(name) {
    if (!this.buckets.has(name)) {
      this.buckets.set(name, { sequence: 0, keys: new Map() });
    }
    return this.buckets.get(name);
  }

  /** The key's value and revision, or undefined when it has none. */
  get(bucket, key) {
    const last = this.buckets.get(bucket)?.keys.get(key);
    return last === undefined || last.value === undefined ? undefined : { value: last.value, revision: last.revision };
  }

  /** Writes `key` (a delete when `value` is undefined) at the bucket's next revision, and returns it. */
  write(bucket, key, value) {
    const b = this.#bucket(bucket);
    b.sequence += 1;
    b.keys.set(key, { revision: b.sequence, value });
    return b.sequence;
  }

  /** The keys that hold a value, sorted. */
  keys(bucket) {
    const b = this.buckets.get(bucket);
    if (b === undefined) {
      return [];
    }
    return [...b.keys].filter(([, last]) => last.value !== undefined).map(([k]) => k).sort();
  }

  #holds(write) {
    const last = this.buckets.get(write.bucket)?.keys.get(write.key);
    if (write.create) {
      return last === undefined || last.value === undefined;
    }
    if (write.expected !== undefined) {
      return (last === undefined ? 0 : last.revision) === write.expected;
    }
    return true;
  }

  /**
   * Applies one delivery's writes as the host commits them, or returns why
   * not: the conditional write goes first, and if its condition no longer
   * holds (a revision condition when the key's last write, a delete
   * included, has another revision, 0 meaning never written; a create when
   * the key holds a value) nothing is applied and the host's conflict text
   * comes back. The others follow in the order they were staged.
   */
  apply(writes) {
    const conditional = writes.filter((w) => w.create || w.expected !== undefined);
    const plain = writes.filter((w) => !(w.create || w.expected !== undefined));
    for (const w of conditional) {
      if (!this.#holds(w)) {
        const wanted = w.create ? 'no value' : `revision ${w.expected}`;
        return `key "${w.key}" in bucket "${w.bucket}" moved on; the write expected ${wanted}`;
      }
    }
    for (const w of [...conditional, ...plain]) {
      this.write(w.bucket, w.key, w.value);
    }
    return undefined;
  }
}

/** A `kv` table as a test host takes it: bucket name to `"read"` or `"read-write"`. */
export function checkBuckets(buckets) {
  const out = new Map();
  if (buckets === undefined || buckets === null) {
    return out;
  }
  const entries = buckets instanceof Map ? [...buckets] : Object.entries(buckets);
  for (const [name, mode] of entries) {
    if (!MODES.includes(mode)) {
      throw new RangeError(`bucket "${name}": unknown mode ${JSON.stringify(mode)}; expected "read" or "read-write"`);
    }
    out.set(name, mode);
  }
  return out;
}

/** The writes one delivery (or one message of a batch) staged, in the order first staged. */
export class Staging {
  constructor() {
    /** @type {{bucket: string, key: string, value: Uint8Array | undefined, condition: string | number, base: number | undefined}[]} */
    this.staged = [];
    this.bytes = 0;
  }

  /**
   * @param {{handlerName: string, buckets: Map<string, string>, maxKvWrites: number,
   *   maxKvWriteBytes: number, unavailable: Set<string>}} settings
   */
  static check(settings, bucket, key, write) {
    const mode = settings.buckets.get(bucket);
    if (mode === undefined) {
      throw new KvDenied(`bucket "${bucket}" is not in handler "${settings.handlerName}"'s \`kv\` table`);
    }
    if (mode === 'read' && write) {
      throw new KvDenied(`bucket "${bucket}" is read-only for handler "${settings.handlerName}"`);
    }
    if (!isValidKey(key)) {
      throw new KvInvalid(
        `"${escapeControls(head(String(key), 200, '…'))}" is not a valid key: letters, digits and -/_=. only, ` +
          "not starting or ending with '.'",
      );
    }
  }

  #find(bucket, key) {
    return this.staged.findIndex((s) => s.bucket === bucket && s.key === key);
  }

  /** The key as this delivery sees it: its own staged write, or the bucket's. */
  get(settings, buckets, bucket, key) {
    Staging.check(settings, bucket, key, false);
    const i = this.#find(bucket, key);
    if (i >= 0) {
      const s = this.staged[i];
      return s.value === undefined ? undefined : { value: s.value, revision: s.base ?? 0 };
    }
    if (settings.unavailable.has(bucket)) {
      throw new KvUnavailable(`reading "${key}" from bucket "${bucket}": the test host has this bucket unavailable`);
    }
    return buckets.get(bucket, key);
  }

  /** Stages a write, folding it into an earlier write of the same key. */
  stage(settings, bucket, key, value, condition) {
    Staging.check(settings, bucket, key, true);
    const size = key.length + (value === undefined ? 0 : value.length);
    const i = this.#find(bucket, key);
    let previous = 0;
    if (i >= 0) {
      const s = this.staged[i];
      previous = s.key.length + (s.value === undefined ? 0 : s.value.length);
    }
    if (this.bytes - previous + size > settings.maxKvWriteBytes) {
      throw new KvLimit(`at most ${settings.maxKvWriteBytes} bytes of keys and values staged per delivery`);
    }
    if (i < 0 && this.staged.length >= settings.maxKvWrites) {
      throw new KvLimit(`at most ${settings.maxKvWrites} keys written per delivery`);
    }
    if (i >= 0) {
      const first = this.staged[i].condition;
      // The key's condition is about its state before this delivery; a
      // later write may repeat it but not change it.
      if (condition === ALWAYS) {
        condition = first;
      } else if (first !== ALWAYS && first !== condition) {
        throw new KvInvalid(
          `key "${key}" was already written in this delivery under another condition; ` +
            'a later write may repeat it or give none',
        );
      }
      this.#checkOneCondition(i, condition);
      const s = this.staged[i];
      if (typeof condition === 'number') {
        s.base = condition;
      }
      s.value = value;
      s.condition = condition;
    } else {
      this.#checkOneCondition(-1, condition);
      const base = typeof condition === 'number' ? condition : undefined;
      this.staged.push({ bucket, key, value, condition, base });
    }
    this.bytes = this.bytes - previous + size;
  }

  /** At most one key per delivery carries a condition. */
  #checkOneCondition(at, condition) {
    if (condition === ALWAYS) {
      return;
    }
    const other = this.staged.find((s, i) => i !== at && s.condition !== ALWAYS);
    if (other !== undefined) {
      throw new KvLimit(
        'one conditional write per delivery (put or delete with `expected`, or create); ' +
          `key "${other.key}" in bucket "${other.bucket}" already has one`,
      );
    }
  }

  /** The staged writes, in the order first staged. */
  writes() {
    return this.staged.map(
      (s) =>
        new Write(s.bucket, s.key, s.value, {
          expected: typeof s.condition === 'number' ? s.condition : undefined,
          create: s.condition === ABSENT,
        }),
    );
  }
}

/** At most the first `max` bytes of `s` (UTF-8), followed by `marker` when cut. */
function head(s, max, marker) {
  const bytes = UTF8.encode(s);
  if (bytes.length <= max) {
    return s;
  }
  const keep = bytes.subarray(0, Math.max(0, max - UTF8.encode(marker).length));
  // A cut inside a character drops that character, as the host's boundary does.
  return new TextDecoder().decode(keep).replace(/\uFFFD$/, '') + marker;
}

/** Control characters escaped as the host (Rust's `char::escape_default`) writes them. */
function escapeControls(s) {
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => {
    switch (c) {
      case '\t':
        return '\\t';
      case '\r':
        return '\\r';
      case '\n':
        return '\\n';
      default:
        return `\\u{${c.charCodeAt(0).toString(16)}}`;
    }
  });
}
