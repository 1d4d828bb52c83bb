// Stack traces a person can read: each frame mapped back to the handler's own
// source, and the place an error was thrown in the handler's code.
//
// In a component, every frame points into the one bundle componentize-js ran.
// `build.mjs` appends that bundle's source map to the bundle, under
// `SOURCE_MAP_KEY` on `globalThis`; frames in the bundle are mapped through
// it, and only when a report is written, so a delivery that succeeds pays
// nothing. Under Node (unit tests) frames already name the original files.

/** Where `build.mjs` leaves the bundle's source map (`{file, sources, mappings}`). */
export const SOURCE_MAP_KEY = Symbol.for('wharf-guest.sourceMap');

/** How `build.mjs` names the SDK's own files in the source map. */
export const SDK_SOURCE_PREFIX = 'wharf-guest/';

// `name@file:line:column` (SpiderMonkey, so componentize-js), and
// `at name (file:line:column)` or `at file:line:column` (V8, so Node).
const SPIDERMONKEY_FRAME = /^(.*?)@(.+):(\d+):(\d+)$/;
const V8_FRAME = /^(\s*at (?:.*? \()?)(.+?):(\d+):(\d+)(\)?)$/;

// The SDK's directory under Node, where frames name its files by URL, taken
// from this module's own frame. (Not from `import.meta.url`: componentize-js
// fails to evaluate a bundle that reads it.) In a bundle this file has no
// such name, and frames are told apart through the source map instead.
const SDK_URL = (() => {
  const frame = String(new Error().stack ?? '')
    .split('\n')
    .map(parseFrame)
    .find((f) => f !== undefined);
  const file = frame?.file ?? '';
  return file.endsWith('/src/stack.js') ? file.slice(0, -'stack.js'.length) : undefined;
})();

/**
 * One stack line as `{file, line, column, rewrite(file, line, column)}`,
 * lines and columns 1-based, or undefined for a line that names no position.
 */
export function parseFrame(text) {
  const v8 = V8_FRAME.exec(text);
  if (v8 !== null) {
    const [, head, file, line, column, tail] = v8;
    return {
      file,
      line: Number(line),
      column: Number(column),
      rewrite: (f, l, c) => `${head}${f}:${l}:${c}${tail}`,
    };
  }
  const sm = SPIDERMONKEY_FRAME.exec(text);
  if (sm !== null) {
    const [, name, file, line, column] = sm;
    return {
      file,
      line: Number(line),
      column: Number(column),
      rewrite: (f, l, c) => `${name}@${f}:${l}:${c}`,
    };
  }
  return undefined;
}

/**
 * Where a frame's position is in the original sources, as
 * `{source, line, column, kind}`; `kind` is `sdk`, `library` (npm
 * packages, the engine's own code) or `handler`. Undefined for a line that
 * names no position.
 */
export function locate(text) {
  const frame = parseFrame(text);
  if (frame === undefined) {
    return undefined;
  }
  const mapped = mapPosition(frame.file, frame.line, frame.column);
  const place = mapped ?? { source: frame.file, line: frame.line, column: frame.column };
  return { ...place, frame, kind: kindOf(place.source, mapped !== undefined) };
}

function kindOf(source, mapped) {
  if (mapped ? source.startsWith(SDK_SOURCE_PREFIX) : SDK_URL !== undefined && source.startsWith(SDK_URL)) {
    return 'sdk';
  }
  if (source.includes('node_modules/') || source.startsWith('node:') || (!mapped && bundleMap() !== undefined)) {
    // In a component, a frame outside the bundle is the engine's, not the handler's.
    return 'library';
  }
  return 'handler';
}

/**
 * `file.js:line:column` (the file's base name) of the innermost frame of the
 * handler's own code in `error`'s stack: where it was thrown, or, when a
 * library it called threw, the handler's call. Without such a frame, the
 * innermost frame outside the SDK; without that, undefined.
 */
export function raiseSite(error) {
  let fallback;
  for (const text of stackLines(error)) {
    const place = locate(text);
    if (place === undefined || place.kind === 'sdk') {
      continue;
    }
    if (place.kind === 'handler') {
      return formatPlace(place);
    }
    fallback ??= place;
  }
  return fallback === undefined ? undefined : formatPlace(fallback);
}

function formatPlace({ source, line, column }) {
  const base = source.replace(/[?#].*$/, '').split(/[\\/]/).at(-1);
  return `${base}:${line}:${column}`;
}

/** `error`'s stack with each frame in the bundle rewritten to its original file, line and column. */
export function mapStack(stack) {
  if (bundleMap() === undefined) {
    return stack;
  }
  return stack
    .split('\n')
    .map((text) => {
      const frame = parseFrame(text);
      const mapped = frame && mapPosition(frame.file, frame.line, frame.column);
      return mapped ? frame.rewrite(mapped.source, mapped.line, mapped.column) : text;
    })
    .join('\n');
}

/** Whose code a stack line is a frame of: `sdk`, `library` or `handler`; undefined for a line that is no frame. */
export function frameKind(text) {
  return locate(text)?.kind;
}

function stackLines(error) {
  let stack = '';
  try {
    stack = error !== null && typeof error === 'object' ? String(error.stack ?? '') : '';
  } catch {
    // An unreadable stack has no place to report.
  }
  return stack.split('\n');
}

// The decoded map, built on first use: per generated line, its segments as
// [generatedColumn, sourceIndex, originalLine, originalColumn], 0-based.
let decoded;

function bundleMap() {
  const map = globalThis[SOURCE_MAP_KEY];
  return map !== null && typeof map === 'object' && typeof map.mappings === 'string' ? map : undefined;
}

/**
 * The original `{source, line, column}` (1-based) of a 1-based position in
 * the bundle, or undefined when `file` is not the bundle or the map has
 * nothing there.
 */
export function mapPosition(file, line, column) {
  const map = bundleMap();
  if (map === undefined || !sameFile(file, map.file)) {
    return undefined;
  }
  if (decoded === undefined || decoded.map !== map) {
    decoded = { map, lines: decodeMappings(map.mappings) };
  }
  const segments = decoded.lines[line - 1];
  if (segments === undefined) {
    return undefined;
  }
  // The last segment that starts at or before the column covers it.
  let found;
  for (const segment of segments) {
    if (segment[0] > column - 1) {
      break;
    }
    if (segment.length >= 4) {
      found = segment;
    }
  }
  if (found === undefined) {
    return undefined;
  }
  const [, sourceIndex, originalLine, originalColumn] = found;
  const source = map.sources[sourceIndex];
  if (typeof source !== 'string') {
    return undefined;
  }
  // The segment's own start, as source map readers report it: a segment may
  // begin in the indentation before the code it maps, so an offset into it
  // would not carry over.
  return { source, line: originalLine + 1, column: originalColumn + 1 };
}

function sameFile(file, bundle) {
  if (typeof bundle !== 'string' || bundle === '') {
    return false;
  }
  return file === bundle || file.endsWith(`/${bundle}`);
}

const BASE64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const BASE64_VALUE = new Map([...BASE64].map((c, i) => [c, i]));

/** Decodes source map v3 `mappings` into absolute segments per generated line. */
export function decodeMappings(mappings) {
  const lines = [];
  // Source index, original line and original column run on across lines.
  let sourceIndex = 0;
  let originalLine = 0;
  let originalColumn = 0;
  for (const lineText of mappings.split(';')) {
    const segments = [];
    let generatedColumn = 0;
    for (const segmentText of lineText.split(',')) {
      if (segmentText === '') {
        continue;
      }
      const fields = decodeVlq(segmentText);
      generatedColumn += fields[0];
      if (fields.length >= 4) {
        sourceIndex += fields[1];
        originalLine += fields[2];
        originalColumn += fields[3];
        segments.push([generatedColumn, sourceIndex, originalLine, originalColumn]);
      } else {
        segments.push([generatedColumn]);
      }
    }
    lines.push(segments);
  }
  return lines;
}

function decodeVlq(text) {
  const values = [];
  let value = 0;
  let shift = 0;
  for (const c of text) {
    const digit = BASE64_VALUE.get(c);
    if (digit === undefined) {
      throw new Error(`source map: "${c}" is not base64`);
    }
    value += (digit & 31) << shift;
    if (digit & 32) {
      shift += 5;
    } else {
      values.push(value & 1 ? -(value >>> 1) : value >>> 1);
      value = 0;
      shift = 0;
    }
  }
  return values;
}
