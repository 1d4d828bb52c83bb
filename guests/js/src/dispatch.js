// Runs the registered handler on one delivery and turns what it did into a settlement.

import { PublishError, Reject, Retry } from './errors.js';
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

/** Registers the component's one handler. */
export function register(fn) {
  if (typeof fn !== 'function') {
    throw new TypeError(`handler() needs a function, got ${typeof fn}`);
  }
  if (registered !== undefined && registered !== fn) {
    throw new Error(`a handler is already registered (${registered.name || 'anonymous'}); a component has exactly one`);
  }
  registered = fn;
}

/** Forgets the registered handler; for tests of the SDK itself. */
export function unregister() {
  registered = undefined;
}

/** The registered handler, or undefined. */
export function registeredHandler() {
  return registered;
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
    if (e instanceof Retry) {
      return { kind: 'retry', delayMs: e.delayMs };
    }
    if (e instanceof Reject) {
      return { kind: 'reject', reason: e.reason };
    }
    if (e instanceof PublishError) {
      // Like the Rust SDK's `?` on a PublishError: retrying would meet the same refusal.
      return { kind: 'reject', reason: e.message };
    }
    throw e;
  }
  return { kind: 'ok' };
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
