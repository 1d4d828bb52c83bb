// The component's side of the SDK for the `handler` world: the `handle`
// export and the host imports.
//
// Only the entry `build.mjs` bundles for a handler imports this module,
// after the user's module, so the `wharf:handler/*@0.2.0` imports (which
// componentize-js provides from `wit/0.2.0` at build time) never have to
// resolve under Node.

import { config as witConfig, log as witLog, publish as witPublish } from 'wharf:handler/host@0.2.0';
import { create as kvCreate, delete as kvDelete, get as kvGet, put as kvPut } from 'wharf:handler/kv@0.2.0';

import { callKv, callPublish, entry, handlerError, trap, witHeaders, witRevision } from './wit.js';
import { registeredHandler, registeredKind, settle } from './dispatch.js';
import { installHost } from './host.js';
import { Message } from './message.js';

installHost({
  inBatch: false,
  publish(subject, payload, headers) {
    callPublish(() => witPublish(subject, payload, witHeaders(headers)));
  },
  getConfig(key) {
    return witConfig(key);
  },
  log(level, message) {
    witLog(level, message);
  },
  readKey(bucket, key) {
    return entry(callKv(() => kvGet(bucket, key)));
  },
  stagePut(bucket, key, value, expected) {
    callKv(() => kvPut(bucket, key, value, witRevision(expected)));
  },
  stageCreate(bucket, key, value) {
    callKv(() => kvCreate(bucket, key, value));
  },
  stageDelete(bucket, key, expected) {
    callKv(() => kvDelete(bucket, key, witRevision(expected)));
  },
});

/** The world's `handle` export: settles one delivery, or traps the instance. */
export async function handle(raw) {
  const fn = registeredHandler();
  let outcome;
  try {
    if (fn === undefined || registeredKind() === 'batch') {
      throw new Error("no handler registered: pass the handler function to handler() from 'wharf-guest'");
    }
    outcome = await settle(fn, new Message(raw));
  } catch (e) {
    trap(e);
  }
  return outcome.kind === 'ok' ? { tag: 'ok', val: undefined } : { tag: 'err', val: handlerError(outcome) };
}
