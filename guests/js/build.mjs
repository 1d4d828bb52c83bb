// Builds a JavaScript handler into a Wharf component: bundles the handler
// with the SDK (and any npm packages it imports) into one ES module with
// esbuild, then componentizes it with componentize-js (SpiderMonkey).
//
//   node guests/js/build.mjs <entry.js> <out.wasm>
//
// scripts/build-js-handler.sh installs the pinned tools first and is the
// command to use; this script downloads nothing.

import { mkdtemp, mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { componentize } from '@bytecodealliance/componentize-js';
import * as esbuild from 'esbuild';

const sdkDir = dirname(fileURLToPath(import.meta.url));
const witDir = resolve(sdkDir, '../../wit');

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

  const work = await mkdtemp(join(tmpdir(), 'wharf-js-'));
  try {
    const bundle = join(work, 'handler.js');
    await esbuild.build({
      // The user's module registers the handler; the SDK's component module
      // provides the world's `handle` export. Importing them in this order
      // registers the handler before anything can call it.
      stdin: {
        contents: [
          `import ${JSON.stringify(entry)};`,
          `import { registeredHandler } from ${JSON.stringify(join(sdkDir, 'src/dispatch.js'))};`,
          `export { handle } from ${JSON.stringify(join(sdkDir, 'src/component.js'))};`,
          // Thrown while componentize-js evaluates the module, this fails the
          // build instead of every delivery.
          'if (registeredHandler() === undefined) {',
          `  throw new Error(${JSON.stringify(`${entryArg} registers no handler: pass the handler function to handler() from 'wharf-guest'`)});`,
          '}',
        ].join('\n'),
        resolveDir: dirname(entry),
        sourcefile: 'wharf-entry.js',
        loader: 'js',
      },
      bundle: true,
      format: 'esm',
      platform: 'neutral',
      mainFields: ['module', 'main'],
      conditions: ['import', 'default'],
      target: 'es2022',
      outfile: bundle,
      // componentize-js provides the host imports from the WIT world.
      external: ['wharf:*'],
      logLevel: 'warning',
      plugins: [sdkResolver],
    });
    await mkdir(dirname(out), { recursive: true });
    const { component } = await componentize({
      sourcePath: bundle,
      witPath: witDir,
      worldName: 'handler',
      // Wharf links WASI p2 without wasi:http. Disabling these two features
      // keeps wasi:http imports out of the component (they become trapping
      // stubs), and the SDK relies on that stub to trap on an uncaught error.
      disableFeatures: ['http', 'fetch-event'],
    });
    await writeFile(out, component);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
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

main().catch((e) => {
  console.error(`error: ${e.message ?? e}`);
  process.exit(1);
});
