// Unit tests of src/stack.js: stack frames of both engines, source map
// decoding, and the place an error is reported at, with a bundle's map
// installed the way build.mjs installs it in a component.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';

import { crashReport } from '../src/dispatch.js';
import { decodeMappings, mapPosition, parseFrame, raiseSite, SOURCE_MAP_KEY } from '../src/stack.js';

afterEach(() => {
  delete globalThis[SOURCE_MAP_KEY];
});

// A bundle whose line 1 is the SDK's dispatch.js line 1, whose line 2 is
// handler.js line 7 (one segment at column 0, another at column 4, 0-based),
// and whose line 3 is an npm package's line 9, from column 4 on.
const MAP = {
  file: 'wharf-bundle.js',
  sources: ['wharf-guest/src/dispatch.js', 'handler.js', 'node_modules/totals/index.js'],
  mappings: 'AAAA;ACMA,IAAI;ACEA',
};

function install(map = MAP) {
  globalThis[SOURCE_MAP_KEY] = map;
}

test('stack lines of SpiderMonkey and V8 are parsed, and others are not', () => {
  const cases = [
    ['total@wharf-bundle.js:538:6', 'wharf-bundle.js', 538, 6],
    ['handle<@wharf-bundle.js:553:10', 'wharf-bundle.js', 553, 10],
    ['async*handle@wharf-bundle.js:1:2', 'wharf-bundle.js', 1, 2],
    ['@wharf-bundle.js:1:2', 'wharf-bundle.js', 1, 2],
    ['    at total (file:///app/handler.js:3:9)', 'file:///app/handler.js', 3, 9],
    ['    at file:///app/handler.js:3:9', 'file:///app/handler.js', 3, 9],
    ['    at async handle (file:///app/handler.js:3:9)', 'file:///app/handler.js', 3, 9],
  ];
  for (const [text, file, line, column] of cases) {
    const frame = parseFrame(text);
    assert.deepEqual([frame?.file, frame?.line, frame?.column], [file, line, column], text);
  }
  assert.equal(parseFrame('TypeError: boom'), undefined);
  assert.equal(parseFrame('    at async Promise.all (index 0)'), undefined);
  assert.equal(parseFrame('total@handler.js:7:12').rewrite('a.js', 1, 2), 'total@a.js:1:2');
  assert.equal(parseFrame('    at total (file:///b.js:7:12)').rewrite('a.js', 1, 2), '    at total (a.js:1:2)');
});

test('source map mappings decode into absolute segments per line', () => {
  assert.deepEqual(decodeMappings('AAAA;ACMA,IAAI'), [
    [[0, 0, 0, 0]],
    [
      [0, 1, 6, 0],
      [4, 1, 6, 4],
    ],
  ]);
  // Negative deltas, several digits, a line without segments, a segment without a source.
  assert.deepEqual(decodeMappings('AAKA;;AADA,gBAAA,E'), [
    [[0, 0, 5, 0]],
    [],
    [[0, 0, 4, 0], [16, 0, 4, 0], [18]],
  ]);
});

test('a position in the bundle maps to the original file, line and column', () => {
  assert.equal(mapPosition('wharf-bundle.js', 2, 7), undefined, 'no map installed');
  install();
  // Column 7 (1-based) is in the segment that starts at 0-based column 4, which is handler.js column 4.
  assert.deepEqual(mapPosition('wharf-bundle.js', 2, 7), { source: 'handler.js', line: 7, column: 5 });
  assert.deepEqual(mapPosition('file:///tmp/x/wharf-bundle.js', 2, 1), { source: 'handler.js', line: 7, column: 1 });
  assert.equal(mapPosition('other.js', 2, 7), undefined);
  assert.equal(mapPosition('wharf-bundle.js', 9, 1), undefined);
});

test('in a component, the report names the handler file and its frames, without the SDK callers', () => {
  install();
  const error = {
    name: 'TypeError',
    message: 'order.items is undefined',
    stack: 'total@wharf-bundle.js:2:7\nhandle<@wharf-bundle.js:2:1\nsettle@wharf-bundle.js:1:11\nhandle2@wharf-bundle.js:1:21\n',
  };
  assert.deepEqual(crashReport(error).split('\n'), [
    'total@handler.js:7:5',
    'handle<@handler.js:7:1',
    'TypeError: order.items is undefined (at handler.js:7:5)',
  ]);
});

test('the place skips the engine and npm packages for the handler call, and falls back to them', () => {
  install();
  const through = { stack: 'map@self-hosted:10:5\ntotal@wharf-bundle.js:3:1\nhandle<@wharf-bundle.js:2:5\n' };
  assert.equal(raiseSite(through), 'handler.js:7:5');
  const onlyLibrary = { stack: 'total@wharf-bundle.js:3:1\nsettle@wharf-bundle.js:1:1\n' };
  assert.equal(raiseSite(onlyLibrary), 'index.js:9:5');
  const onlySdk = { stack: 'settle@wharf-bundle.js:1:1\n' };
  assert.equal(raiseSite(onlySdk), undefined);
  assert.equal(raiseSite({ stack: '' }), undefined);
  assert.equal(raiseSite('a string'), undefined);
});
