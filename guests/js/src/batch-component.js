// The component's side of the SDK for the `batch-handler` world: the
// `handle-batch` export and the `batch-host` imports.
//
// Only the entry `build.mjs` bundles for a batch handler imports this
// module, after the user's module. Every call a message makes names the
// message by its index in the batch, which `BatchMessage` keeps.

import {
  config as witConfig,
  kvCreate,
  kvDelete,
  kvGet,
  kvPut,
  log as witLog,
  publish as witPublish,
} from 'wharf:handler/batch-host@0.2.0';

import { Batch } from './batch.js';
import { callKv, callPublish, entry, handlerError, trap, witHeaders, witRevision } from './wit.js';
import { registeredHandler, registeredKind, settleBatch } from './dispatch.js';
import { installHost } from './host.js';

/** The index of a message's call; a single-message call (no index) is refused in a batch. */
function indexOf(index, what, instead) {
  if (index === undefined) {
    throw new Error(`${what} is for handlers of one message at a time; in a batch handler, ${instead}`);
  }
  return index;
}

installHost({
  inBatch: true,
  publish(subject, payload, headers, index) {
    const i = indexOf(index, 'publish', 'publish through the message: msg.publish(...)');
    callPublish(() => witPublish(i, subject, payload, witHeaders(headers)));
  },
  getConfig(key) {
    return witConfig(key);
  },
  log(level, message) {
    witLog(level, message);
  },
  readKey(bucket, key, index) {
    const i = indexOf(index, 'kv.bucket', 'open the bucket through the message: msg.bucket(name)');
    return entry(callKv(() => kvGet(i, bucket, key)));
  },
  stagePut(bucket, key, value, expected, index) {
    const i = indexOf(index, 'kv.bucket', 'open the bucket through the message: msg.bucket(name)');
    callKv(() => kvPut(i, bucket, key, value, witRevision(expected)));
  },
  stageCreate(bucket, key, value, index) {
    const i = indexOf(index, 'kv.bucket', 'open the bucket through the message: msg.bucket(name)');
    callKv(() => kvCreate(i, bucket, key, value));
  },
  stageDelete(bucket, key, expected, index) {
    const i = indexOf(index, 'kv.bucket', 'open the bucket through the message: msg.bucket(name)');
    callKv(() => kvDelete(i, bucket, key, witRevision(expected)));
  },
});

/** The world's `handle-batch` export: one result per message, or a trap of the whole batch. */
export async function handleBatch(raws) {
  const fn = registeredHandler();
  let outcomes;
  try {
    if (fn === undefined || registeredKind() !== 'batch') {
      throw new Error("no batch handler registered: pass the function to batchHandler() from 'wharf-guest'");
    }
    outcomes = await settleBatch(fn, new Batch(raws));
  } catch (e) {
    trap(e);
  }
  return outcomes.map((o) => (o.kind === 'ok' ? { tag: 'ok', val: undefined } : { tag: 'err', val: handlerError(o) }));
}
