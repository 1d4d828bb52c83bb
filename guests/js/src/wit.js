// What both component modules share: turning the SDK's values into the WIT
// values the componentize-js bindings take, their errors into the SDK's,
// and trapping.

import { crashReport } from './dispatch.js';
import { kvErrorFor, publishErrorFor } from './errors.js';

/** The SDK's [name, values] pairs as WIT header records. */
export function witHeaders(headers) {
  return headers.map(([name, values]) => ({ name, values }));
}

/** An expected revision as the WIT `option<u64>`. */
export function witRevision(expected) {
  return expected === undefined ? undefined : BigInt(expected);
}

/** A WIT `option<entry>` as the SDK's hosts return it. */
export function entry(found) {
  return found === undefined || found === null ? undefined : { value: found.value, revision: Number(found.revision) };
}

/** The bindings throw a WIT error variant as `{payload: {tag, val}}`; anything else is rethrown. */
function refusal(e) {
  const payload = e?.payload;
  return payload && typeof payload.tag === 'string' ? payload : undefined;
}

/** Calls a publish import, throwing the `PublishError` subclass of a refusal. */
export function callPublish(call) {
  try {
    call();
  } catch (e) {
    const r = refusal(e);
    throw r === undefined ? e : publishErrorFor(r.tag, r.val);
  }
}

/** Calls a key-value import, throwing the `KvError` subclass of a refusal. */
export function callKv(call) {
  try {
    return call();
  } catch (e) {
    const r = refusal(e);
    throw r === undefined ? e : kvErrorFor(r.tag, r.val);
  }
}

/** A settlement that is not `ok` as the WIT `handler-error` value. */
export function handlerError(outcome) {
  if (outcome.kind === 'retry') {
    return { tag: 'retry', val: outcome.delayMs === undefined ? undefined : BigInt(outcome.delayMs) };
  }
  return { tag: 'reject', val: outcome.reason };
}

/**
 * Writes the stack and then `Name: message (at file.js:line:column)` to
 * stderr, and traps.
 *
 * The host settles a trap like a Rust panic (a nak with backoff; on the final
 * attempt a dead-letter copy of kind `trap` whose reason is built from the
 * end of stderr, its last line first), so the summary must be the last thing
 * written. Letting the error escape would trap too, but the engine then
 * prints its own report and an abort message after ours. The build disables
 * componentize-js's `http` feature, which replaces the `wasi:http` imports by
 * stubs that execute `unreachable`; `fetch` reaches one at once, so calling
 * it is a real trap that prints nothing more.
 */
export function trap(error) {
  console.error(crashReport(error));
  fetch('http://wharf.invalid/trap');
  // Not reached in a component built by build-js-handler.sh. Should `fetch`
  // ever return, rejecting the call still traps, only less tidily.
  throw error;
}
