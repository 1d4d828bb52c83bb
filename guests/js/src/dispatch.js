// Runs the registered handler on a delivery (or a batch) and turns what it did into settlements.

import { HandlerError, KvError, PublishError, Reject, Retry } from './errors.js';
import { frameKind, mapStack, raiseSite } from './stack.js';

/**
 * How much of a stack goes to stderr. The host keeps only the first
 * `max_output_bytes` (64 KiB by default) of a delivery's output and puts the
 * end of it in the dead-letter reason, so a runaway stack must not push the
 * final line out.
 */
export const MAX_STACK_CHARS = 16 * 1024;

/** How much of the message goes on the final line, so the whole line fits in the tail the host keeps. */
export const MAX_SUMMARY_CHARS = 500;

let registered;
/** Which function registered it: 'handler' or 'batch'. */
let registeredAs;

const REGISTRARS = { handler: 'handler()', batch: 'batchHandler()' };

/** Registers the component's one handler: `kind` is 'handler' (one message per call) or 'batch'. */
export function register(fn, kind = 'handler') {
  if (typeof fn !== 'function') {
    throw new TypeError(`${REGISTRARS[kind]} needs a function, got ${typeof fn}`);
  }
  if (registered !== undefined && (registered !== fn || registeredAs !== kind)) {
    throw new Error(
      `a handler is already registered (${registered.name || 'anonymous'}, with ${REGISTRARS[registeredAs]}); ` +
        'a component has exactly one, made by handler() or batchHandler()',
    );
  }
  registered = fn;
  registeredAs = kind;
}

/** Forgets the registered handler; for tests of the SDK itself. */
export function unregister() {
  registered = undefined;
  registeredAs = undefined;
}

/** The registered handler, or undefined. */
export function registeredHandler() {
  return registered;
}

/** 'handler', 'batch', or undefined when nothing is registered: the world the component must implement. */
export function registeredKind() {
  return registeredAs;
}

/**
 * The settlement a Wharf error asks for, or undefined for any other value.
 * `Retry` and `Reject` settle as they say. A `PublishError` rejects, like
 * the Rust SDK's `?` on one: retrying would meet the same refusal. A
 * `KvError` rejects too, except `KvUnavailable`, which retries after the
 * handler's backoff (the bucket may answer later).
 */
export function outcomeOf(error) {
  if (error instanceof Retry) {
    return { kind: 'retry', delayMs: error.delayMs };
  }
  if (error instanceof Reject) {
    return { kind: 'reject', reason: error.reason };
  }
  if (error instanceof PublishError) {
    return { kind: 'reject', reason: error.message };
  }
  if (error instanceof KvError) {
    return error.kind === 'unavailable' ? { kind: 'retry', delayMs: undefined } : { kind: 'reject', reason: error.message };
  }
  return undefined;
}

function isWharfError(error) {
  return error instanceof HandlerError || error instanceof PublishError || error instanceof KvError;
}

/**
 * Calls `fn` (sync or async) and maps Retry, Reject and a refused publish to
 * an outcome: `{kind: 'ok'}`, `{kind: 'retry', delayMs}` or `{kind: 'reject', reason}`.
 * Anything else is rethrown.
 */
export async function settle(fn, msg) {
  try {
    await fn(msg);
  } catch (e) {
    const outcome = outcomeOf(e);
    if (outcome === undefined) {
      throw e;
    }
    return outcome;
  }
  return { kind: 'ok' };
}

/**
 * One message of `Batch.map`: undefined when `fn(msg)` returns (or its
 * promise resolves), else the result that settles it. Wharf's errors are the
 * result as they are; anything else thrown settles only this message, as a
 * trap would (see `isolate`).
 */
export async function settleOne(fn, msg) {
  try {
    await fn(msg);
  } catch (e) {
    return isWharfError(e) ? e : isolate(e, msg);
  }
  return undefined;
}

/**
 * The result of one message of a batch that threw `error`: what a trap would
 * do, for this message alone. The report (stack and last line) goes to
 * stderr, the host's log. The message is retried after the handler's
 * backoff, or on its final attempt rejected with the error's last line
 * (`Name: message (at file.js:line:column)`): the batch world has no trap of
 * one message. The result's `cause` is `error`.
 */
export function isolate(error, msg) {
  console.error(crashReport(error));
  const result = msg.isFinalAttempt ? new Reject(crashLine(error)) : new Retry();
  result.cause = error;
  return result;
}

/** The settlement of message `i` of a batch from the result the batch handler returned for it. */
export function resultOutcome(value, msg, i) {
  if (value === undefined || value === null) {
    return { kind: 'ok' };
  }
  if (value instanceof Error) {
    const result = isWharfError(value) ? value : isolate(value, msg);
    return { ...outcomeOf(result), cause: result.cause };
  }
  throw new TypeError(
    `result ${i} of the batch is ${safeJson(value)}: return undefined for a message that succeeded, ` +
      'or a Retry or Reject for one that did not',
  );
}

/**
 * Calls a batch handler (sync or async) and maps its results, one per
 * message; anything wrong with them is thrown (a trap of the whole batch).
 */
export async function settleBatch(fn, batch) {
  const results = await fn(batch);
  if (!Array.isArray(results)) {
    throw new TypeError(
      `the batch handler returned ${results === null ? 'null' : typeof results}: return an array with one result ` +
        'per message (await batch.map(fn) makes one)',
    );
  }
  if (results.length !== batch.length) {
    throw new Error(
      `the batch handler returned ${results.length} results for a batch of ${batch.length} messages; ` +
        "return one result per message, in the batch's order",
    );
  }
  return results.map((value, i) => resultOutcome(value, batch.at(i), i));
}

/**
 * The last line on stderr before a trap: `Name: message (at file.js:line:column)`,
 * the place being where the error was thrown in the handler's own source
 * (see `raiseSite` in stack.js), left out when the stack has none.
 */
export function crashLine(error) {
  const site = raiseSite(error);
  const summary = summaryLine(error);
  return site === undefined ? summary : `${summary} (at ${site})`;
}

/** `Name: message` on one line. */
export function summaryLine(error) {
  let name;
  let message;
  if (error instanceof Error || (error !== null && typeof error === 'object' && 'message' in error)) {
    name = safeString(error.name) || error.constructor?.name || 'Error';
    message = safeString(error.message);
  } else if (error !== null && typeof error === 'object') {
    name = error.constructor?.name || 'Object';
    message = safeJson(error);
  } else {
    name = 'Uncaught';
    message = safeString(error);
  }
  message = message.split(/\r?\n/).join(' ');
  if (message.length > MAX_SUMMARY_CHARS) {
    message = `${message.slice(0, MAX_SUMMARY_CHARS)}…`;
  }
  return `${name}: ${message}`;
}

/**
 * What goes to stderr for an uncaught error: the stack (and any causes), its
 * frames mapped back to the original sources, then `crashLine` last, since
 * the host builds the reason from the end of stderr, its last line first.
 * The frames after the handler's outermost one (the SDK and the bindings
 * that called it) are left out, so the frames next to the summary are the
 * handler's.
 */
export function crashReport(error) {
  const lines = [];
  const frames = stackOf(error).split('\n');
  const kinds = frames.map(frameKind);
  if (kinds.includes('handler')) {
    while (kinds.at(-1) !== 'handler') {
      kinds.pop();
      frames.pop();
    }
  }
  const stack = mapStack(frames.join('\n'));
  if (stack) {
    lines.push(stack.length > MAX_STACK_CHARS ? `${stack.slice(0, MAX_STACK_CHARS)}\n[stack cut]` : stack);
  }
  let cause = error?.cause;
  for (let depth = 0; cause !== undefined && depth < 5; depth++) {
    lines.push(`Caused by: ${summaryLine(cause)}`);
    const causeStack = mapStack(stackOf(cause));
    if (causeStack) {
      lines.push(causeStack.slice(0, MAX_STACK_CHARS / 4));
    }
    cause = cause?.cause;
  }
  lines.push(crashLine(error));
  return lines.join('\n');
}

function stackOf(error) {
  const stack = error !== null && typeof error === 'object' ? safeString(error.stack) : '';
  return stack.replace(/\s+$/, '');
}

function safeString(value) {
  try {
    return value === undefined ? '' : String(value);
  } catch {
    return '<unprintable>';
  }
}

function safeJson(value) {
  try {
    return JSON.stringify(value) ?? safeString(value);
  } catch {
    return safeString(value);
  }
}
