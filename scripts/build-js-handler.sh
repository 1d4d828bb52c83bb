#!/usr/bin/env bash
# Builds a JavaScript handler into a Wharf component.
#
#   scripts/build-js-handler.sh <entry.js> <out.wasm>
#
# The entry module passes its function to `handler()` from 'wharf-guest' (one
# message per call: a component of the `handler` world) or to
# `batchHandler()` (a batch per call: the `batch-handler` world); the build
# picks the world from what the module registers. It may import other
# modules and npm packages (installed next to it); they are bundled into the
# component.
#
# The first run installs the pinned componentize-js and esbuild from npm
# (`npm ci` in guests/js, from its package-lock.json); later builds download
# nothing.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 <entry.js> <out.wasm>" >&2
    exit 2
fi
entry="$1"
out="$2"
[[ -f "$entry" ]] || {
    echo "error: $entry is not a file" >&2
    exit 2
}

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
sdk="$root/guests/js"

command -v node >/dev/null || {
    echo "error: node (20 or later) is needed to build JavaScript handlers" >&2
    exit 1
}

# The stamp holds the lockfile the tools were installed from, so a change of
# pinned version reinstalls them.
stamp="$sdk/node_modules/.wharf-installed-lock.json"
if ! cmp -s "$sdk/package-lock.json" "$stamp" 2>/dev/null; then
    echo "installing the pinned componentize-js and esbuild into $sdk/node_modules" >&2
    (cd "$sdk" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$sdk/package-lock.json" "$stamp"
fi

world="$(node "$sdk/build.mjs" "$entry" "$out")"
echo "built $out ($(du -h "$out" | cut -f1), world $world)" >&2
