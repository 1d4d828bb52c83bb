// Tests of the bundle build.mjs makes: run under Node with a stand-in for the
// host import, an uncaught error in it is reported at the handler's original
// file, line and column, through the source map the bundle carries. (A
// component runs the same bundle in SpiderMonkey; the integration tests
// check that one.)

import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { register as registerHooks } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { pathToFileURL } from 'node:url';

import { SOURCE_MAP_KEY } from '../src/stack.js';

// The bundler is a dev dependency that `npm ci` (or the first
// scripts/build-js-handler.sh) installs; without it there is nothing to test.
const build = await import('../build.mjs').catch(() => undefined);
const skip = build === undefined && 'esbuild is not installed: run npm ci in guests/js';

registerHooks('./fixtures/host-hooks.mjs', import.meta.url);

const work = await mkdtemp(join(tmpdir(), 'wharf-build-test-'));
after(() => rm(work, { recursive: true, force: true }));

// The handler's code, with the line the error comes from marked; `plain` is the
// same code without the SDK, run directly to learn where the engine puts it.
const TOTAL = ['function total(order) {', '  return order.items.length; // here', '}'];

/** Bundles `handler.js` in a fresh directory and runs its `handle` export on `{}`; returns what went to stderr. */
async function crashThroughBundle(files) {
  const dir = await mkdtemp(join(work, 'app-'));
  for (const [name, text] of Object.entries(files)) {
    await mkdir(join(dir, name, '..'), { recursive: true });
    await writeFile(join(dir, name), text);
  }
  const bundlePath = join(dir, 'out', build.BUNDLE_NAME);
  await mkdir(join(dir, 'out'));
  await writeFile(bundlePath, await build.bundle(join(dir, 'handler.js')));
  const { handle } = await import(pathToFileURL(bundlePath).href);
  const written = [];
  const saved = { error: console.error, fetch: globalThis.fetch };
  class Trapped extends Error {}
  console.error = (text) => written.push(String(text));
  globalThis.fetch = () => {
    throw new Trapped();
  };
  try {
    const raw = {
      subject: 'in',
      payload: new TextEncoder().encode('{}'),
      headers: [],
      delivery: {
        stream: 'S',
        consumer: 'c',
        streamSequence: 1n,
        consumerSequence: 1n,
        attempt: 1,
        maxAttempts: 1,
        publishedAtNanos: 0n,
      },
    };
    await assert.rejects(handle(raw), Trapped);
  } finally {
    console.error = saved.error;
    globalThis.fetch = saved.fetch;
    delete globalThis[SOURCE_MAP_KEY];
  }
  assert.equal(written.length, 1);
  return written[0].split('\n');
}

/** Where the engine places the error of `TOTAL` in a file of its own, as `line:column`. */
async function wherePlainCodeThrows(firstLine) {
  const path = join(work, `plain-${firstLine}.js`);
  const padding = '\n'.repeat(firstLine - 1);
  await writeFile(path, `${padding}${TOTAL.join('\n')}\nexport { total };\n`);
  const { total } = await import(pathToFileURL(path).href);
  try {
    total({});
  } catch (e) {
    const match = /plain-\d+\.js:(\d+):(\d+)/.exec(e.stack);
    return `${match[1]}:${match[2]}`;
  }
  throw new Error('total({}) did not throw');
}

test('an uncaught error names the line and column in the original handler file', { skip }, async () => {
  const handler = [
    "import { handler } from 'wharf-guest';",
    '',
    ...TOTAL,
    '',
    'export const handle = handler((msg) => total(msg.json()));',
    '',
  ].join('\n');
  const lines = await crashThroughBundle({ 'handler.js': handler });
  const place = await wherePlainCodeThrows(3);
  assert.equal(lines.at(-1), `TypeError: Cannot read properties of undefined (reading 'length') (at handler.js:${place})`);
  // The stack above names the original files too, and ends with the handler's
  // outermost frame: the SDK and whatever called it are left out.
  assert.deepEqual(lines.slice(1, -1), [`    at total (handler.js:${place})`, '    at handler.js:7:40']);
});

test('an error thrown in an npm package is placed at the handler call that reached it', { skip }, async () => {
  const handler = [
    "import { handler } from 'wharf-guest';",
    "import { total } from 'totals';",
    '',
    'export const handle = handler((msg) => {',
    '  return total(msg.json());',
    '});',
    '',
  ].join('\n');
  const lines = await crashThroughBundle({
    'handler.js': handler,
    'node_modules/totals/package.json': '{"name": "totals", "type": "module", "main": "index.js"}',
    'node_modules/totals/index.js': `${TOTAL.join('\n')}\nexport { total };\n`,
  });
  assert.match(lines.at(-1), /^TypeError: .* \(at handler\.js:5:\d+\)$/);
  assert.ok(lines.some((line) => line.includes('node_modules/totals/index.js:2:')), lines.join('\n'));
});

test('the first world is guessed from the entry, and a bundle for the wrong world names the right one', { skip }, async () => {
  assert.equal(build.guessWorld("export const handleBatch = batchHandler((b) => []);"), 'batch-handler');
  assert.equal(build.guessWorld("export const handle = handler((m) => {});"), 'handler');
  // Registered under another name, so the guess is wrong; the bundle says so when evaluated.
  const dir = await mkdtemp(join(work, 'world-'));
  const entry = join(dir, 'handler.js');
  await writeFile(
    entry,
    "import * as wharf from 'wharf-guest';\nconst register = wharf['batch' + 'Handler'];\nregister((batch) => batch.messages.map(() => undefined));\n",
  );
  assert.equal(build.guessWorld(await readFile(entry, 'utf8')), 'handler');
  await mkdir(join(dir, 'out'));
  const wrong = join(dir, 'out', 'wrong.js');
  await writeFile(wrong, await build.bundle(entry, 'handler.js', 'handler'));
  await assert.rejects(import(pathToFileURL(wrong).href), new RegExp(`${build.WORLD_MARKER}batch-handler`));
  const right = join(dir, 'out', 'right.js');
  await writeFile(right, await build.bundle(entry, 'handler.js', 'batch-handler'));
  const module = await import(pathToFileURL(right).href);
  assert.equal(typeof module.handleBatch, 'function');
  assert.equal(module.handle, undefined);
});
