// Builds a JavaScript handler into a Wharf component: bundles the handler
// with the SDK (and any npm packages it imports) into one ES module with
// esbuild, then componentizes it with componentize-js (SpiderMonkey).
//
//   node guests/js/build.mjs <entry.js> <out.wasm>     (prints the world it built)
//
// The component implements the world of what the entry registers:
// `handler` for `handler(fn)`, `batch-handler` for `batchHandler(fn)`.
// componentize-js needs the world before it runs the bundle, so the first
// build guesses from the entry's text (one that mentions `batchHandler` is a
// batch handler); the bundle checks what was registered when it is
// evaluated, and a wrong guess fails that build with a marked error naming
// the right world, which is then built instead.
//
// scripts/build-js-handler.sh installs the pinned tools first and is the
// command to use; this script downloads nothing.
//
// The bundle carries its own source map, so that the SDK can name the
// handler's file, line and column when it reports an uncaught error (see
// src/stack.js): esbuild writes the map, and `bundle` appends it to the
// bundle as a global, after the last line, where it moves no mapped code.

import { realpathSync } from 'node:fs';
import { mkdtemp, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as esbuild from 'esbuild';

import { SDK_SOURCE_PREFIX, SOURCE_MAP_KEY } from './src/stack.js';

const sdkDir = dirname(fileURLToPath(import.meta.url));
const witDir = resolve(sdkDir, '../../wit/0.2.0');

/** The bundle's file name, which the engine puts in stack frames and the source map names. */
export const BUNDLE_NAME = 'wharf-bundle.js';

/** How the source map names the bundle's entry module, which is the SDK's. */
const ENTRY_SOURCE = `${SDK_SOURCE_PREFIX}entry.js`;

/** Each world's export, and the SDK module that provides it. */
const WORLDS = {
  handler: { exportName: 'handle', module: 'src/component.js' },
  'batch-handler': { exportName: 'handleBatch', module: 'src/batch-component.js' },
};

/** The marker of the error a bundle built for the wrong world throws, followed by the right one. */
export const WORLD_MARKER = 'wharf-build-world: ';

const SDK_ENTRY_POINTS = {
  'wharf-guest': join(sdkDir, 'src/index.js'),
  'wharf-guest/testing': join(sdkDir, 'src/testing.js'),
};

async function main() {
  const [entryArg, outArg] = process.argv.slice(2);
  if (!entryArg || !outArg) {
    console.error('usage: node build.mjs <entry.js> <out.wasm>');
    process.exit(2);
  }
  const entry = resolve(entryArg);
  const out = resolve(outArg);
  await stat(entry);

  // Loaded here rather than at the top, so that tests can import `bundle`
  // without starting componentize-js.
  const { componentize } = await import('@bytecodealliance/componentize-js');
  const work = await mkdtemp(join(tmpdir(), 'wharf-js-'));
  try {
    let world = guessWorld(await readFile(entry, 'utf8'));
    let component;
    try {
      component = await build(componentize, work, entry, entryArg, world);
    } catch (e) {
      const other = worldIn(e);
      if (other === undefined || other === world) {
        throw e;
      }
      world = other;
      component = await build(componentize, work, entry, entryArg, world);
    }
    await mkdir(dirname(out), { recursive: true });
    await writeFile(out, component);
    // The build script names the world in its last line.
    console.log(world);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** The world to try first: `batch-handler` when the entry's text mentions `batchHandler`. */
export function guessWorld(source) {
  return /\bbatchHandler\b/.test(source) ? 'batch-handler' : 'handler';
}

/** The world a failed build's error names as the right one, if it does. */
function worldIn(error) {
  const match = new RegExp(`${WORLD_MARKER}([a-z-]+)`).exec(String(error?.message ?? error));
  return match?.[1];
}

/** Bundles the entry for `world` and componentizes the bundle; resolves to the component's bytes. */
async function build(componentize, work, entry, entryArg, world) {
  const path = join(work, BUNDLE_NAME);
  await writeFile(path, await bundle(entry, entryArg, world));
  const { component } = await componentize({
    sourcePath: path,
    witPath: witDir,
    worldName: world,
    // Wharf links WASI p2 without wasi:http. Disabling these two features
    // keeps wasi:http imports out of the component (they become trapping
    // stubs), and the SDK relies on that stub to trap on an uncaught error.
    disableFeatures: ['http', 'fetch-event'],
  });
  return component;
}

/**
 * Bundles the handler at `entry` (an absolute path; `entryArg` is how the
 * user named it) with the SDK into one ES module for `world`, and returns its
 * text with its source map appended. The map names the handler's files
 * relative to the entry's directory and the SDK's as `wharf-guest/...`, so a
 * component holds no path of the machine that built it.
 *
 * Evaluated, the bundle throws when the entry registers no handler, or a
 * handler of another world (with `WORLD_MARKER` and that world).
 */
export async function bundle(entry, entryArg = entry, world = 'handler') {
  const entryDir = dirname(entry);
  const { exportName, module } = WORLDS[world];
  const result = await esbuild.build({
    // The user's module registers the handler; the SDK's component module
    // provides the world's export. Importing them in this order registers
    // the handler before anything can call it.
    stdin: {
      contents: [
        `import ${JSON.stringify(entry)};`,
        `import { registeredKind } from ${JSON.stringify(join(sdkDir, 'src/dispatch.js'))};`,
        `export { ${exportName} } from ${JSON.stringify(join(sdkDir, module))};`,
        // Thrown while componentize-js evaluates the module, these fail the
        // build instead of every delivery.
        'const kind = registeredKind();',
        'if (kind === undefined) {',
        `  throw new Error(${JSON.stringify(`${entryArg} registers no handler: pass the handler function to handler() (or batchHandler()) from 'wharf-guest'`)});`,
        '}',
        `if ((kind === 'batch' ? 'batch-handler' : 'handler') !== ${JSON.stringify(world)}) {`,
        `  throw new Error(${JSON.stringify(WORLD_MARKER)} + (kind === 'batch' ? 'batch-handler' : 'handler'));`,
        '}',
      ].join('\n'),
      resolveDir: entryDir,
      sourcefile: ENTRY_SOURCE,
      loader: 'js',
    },
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    mainFields: ['module', 'main'],
    conditions: ['import', 'default'],
    target: 'es2022',
    // Nothing is written: the output stays in memory. Placing it in the
    // entry's directory makes the map's sources relative to that directory.
    outfile: join(entryDir, BUNDLE_NAME),
    write: false,
    sourcemap: 'external',
    sourcesContent: false,
    // componentize-js provides the host imports from the WIT world.
    external: ['wharf:*'],
    logLevel: 'warning',
    plugins: [sdkResolver],
  });
  const code = result.outputFiles.find((f) => f.path.endsWith('.js')).text;
  const map = JSON.parse(result.outputFiles.find((f) => f.path.endsWith('.js.map')).text);
  const sources = map.sources.map((source) => {
    if (source === ENTRY_SOURCE) {
      return source;
    }
    const path = resolve(entryDir, source);
    if (path.startsWith(sdkDir + sep)) {
      return SDK_SOURCE_PREFIX + relative(sdkDir, path).split(sep).join('/');
    }
    return relative(entryDir, path).split(sep).join('/');
  });
  const embedded = { file: BUNDLE_NAME, sources, mappings: map.mappings };
  return `${code}\nglobalThis[Symbol.for(${JSON.stringify(SOURCE_MAP_KEY.description)})] = ${JSON.stringify(embedded)};\n`;
}

// Every import of the SDK, from the handler or from the component module,
// must resolve to this checkout's files: one module instance, so the host the
// component installs is the one the handler's publish calls reach, even when
// the handler's own node_modules holds another copy.
const sdkResolver = {
  name: 'wharf-guest',
  setup(build) {
    build.onResolve({ filter: /^wharf-guest(\/testing)?$/ }, (args) => ({ path: SDK_ENTRY_POINTS[args.path] }));
  },
};

// Run as a script, not imported (by the tests). Node resolves symbolic links
// in this module's URL, so the script's path is resolved before comparing.
if (process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(`error: ${e.message ?? e}`);
    process.exit(1);
  });
}
