// The component's side of the SDK: the WIT export and the host imports.
//
// Only the entry `scripts/build-js-handler.sh` bundles imports this module,
// after the user's module, so `wharf:handler/host@0.1.0` (which componentize-js
// provides from `wit/` at build time) never has to resolve under Node.

import { config as witConfig, log as witLog, publish as witPublish } from 'wharf:handler/host@0.1.0';

import { crashReport, registeredHandler, settle } from './dispatch.js';
import { publishErrorFor } from './errors.js';
import { installHost } from './host.js';
import { Message } from './message.js';

installHost({
  publish(subject, payload, headers) {
    try {
      witPublish(
        subject,
        payload,
        headers.map(([name, values]) => ({ name, values })),
      );
    } catch (e) {
      // The bindings throw the WIT `publish-error` as `{payload: {tag, val}}`.
      const refusal = e?.payload;
      if (refusal && typeof refusal.tag === 'string') {
        throw publishErrorFor(refusal.tag, refusal.val);
      }
      throw e;
    }
  },
  getConfig(key) {
    return witConfig(key);
  },
  log(level, message) {
    witLog(level, message);
  },
});

/** The world's `handle` export: settles one delivery, or traps the instance. */
export async function handle(raw) {
  const fn = registeredHandler();
  let outcome;
  try {
    if (fn === undefined) {
      throw new Error("no handler registered: pass the handler function to handler() from 'wharf-guest'");
    }
    outcome = await settle(fn, new Message(raw));
  } catch (e) {
    trap(e);
  }
  switch (outcome.kind) {
    case 'retry':
      return {
        tag: 'err',
        val: { tag: 'retry', val: outcome.delayMs === undefined ? undefined : BigInt(outcome.delayMs) },
      };
    case 'reject':
      return { tag: 'err', val: { tag: 'reject', val: outcome.reason } };
    default:
      return { tag: 'ok', val: undefined };
  }
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
function trap(error) {
  console.error(crashReport(error));
  fetch('http://wharf.invalid/trap');
  // Not reached in a component built by build-js-handler.sh. Should `fetch`
  // ever return, rejecting the call still traps, only less tidily.
  throw error;
}
