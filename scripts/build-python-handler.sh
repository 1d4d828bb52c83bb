#!/usr/bin/env bash
# Builds a Python handler into a Wharf component.
#
#   scripts/build-python-handler.sh <handler.py | app dir> <out.wasm> [extra python path dir...]
#
# The handler module registers its function with `@wharf.handler` (one
# message per call: a component of the `handler` world) or
# `@wharf.batch_handler` (a batch per call: the `batch-handler` world); the
# build picks the world from what the module registers. Given a directory,
# the module is its `handler.py`. Extra directories (vendored
# pure-Python packages, say) are added to the module search path; so is the
# site-packages of an activated virtual environment ($VIRTUAL_ENV).
#
# The first run installs the pinned componentize-py from PyPI into
# guests/python/.tools (gitignored); later builds download nothing.
set -euo pipefail

usage() {
    echo "usage: $0 <handler.py | app dir> <out.wasm> [extra python path dir...]" >&2
    exit 2
}
[[ $# -ge 2 ]] || usage

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
sdk="$root/guests/python"
tools="$sdk/.tools"
requirements="$sdk/requirements-build.txt"

app="$1"
out="$2"
shift 2

if [[ -d "$app" ]]; then
    app_dir="$(cd "$app" && pwd)"
    module="handler"
    [[ -f "$app_dir/handler.py" ]] || {
        echo "error: $app has no handler.py; pass the handler's .py file instead" >&2
        exit 2
    }
elif [[ -f "$app" && "$app" == *.py ]]; then
    app_dir="$(cd "$(dirname "$app")" && pwd)"
    module="$(basename "$app" .py)"
else
    echo "error: $app is neither a .py file nor a directory" >&2
    exit 2
fi
if [[ ! "$module" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
    echo "error: \"$module\" is not a valid Python module name" >&2
    exit 2
fi
case "$module" in
    wharf | wharf_main | wit_world | componentize_py_types | componentize_py_runtime)
        echo "error: the handler module must not be called \"$module\"; rename it" >&2
        exit 2
        ;;
esac

extra=()
for dir in "$@"; do
    [[ -d "$dir" ]] || {
        echo "error: $dir is not a directory" >&2
        exit 2
    }
    extra+=(-p "$(cd "$dir" && pwd)")
done

# The stamp holds the requirements the tools were installed from, so a
# change of pinned version reinstalls them.
if ! cmp -s "$requirements" "$tools/installed.txt" 2>/dev/null; then
    echo "installing $(grep -v '^#' "$requirements" | tr '\n' ' ')into $tools" >&2
    rm -rf "$tools"
    python3 -m venv "$tools" || {
        echo "error: python3 -m venv failed; on Debian, apt-get install python3-venv" >&2
        exit 1
    }
    "$tools/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$tools/installed.txt"
fi

# The world the component implements follows what the module registers.
# componentize-py needs it before it runs the module, so the first build
# guesses from the module's text (one that mentions `batch_handler` is a
# batch handler); the entry module checks what was registered, and a wrong
# guess fails that build with a marked line naming the right world, which
# is then built instead.
if grep -q 'batch_handler' "$app_dir/$module.py" 2>/dev/null; then
    world="batch-handler"
else
    world="handler"
fi

# componentize-py adds the site-packages of $VIRTUAL_ENV, or else of
# whatever python3 is on PATH. Point it at the tool environment unless the
# caller activated one of their own, so a build never depends on what
# happens to be installed globally.
export VIRTUAL_ENV="${VIRTUAL_ENV:-$tools}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$(dirname "$out")"

# Builds the component for $world; componentize-py's output goes to
# $work/build.log.
componentize() {
    # componentize-py runs the app's imports now, at build time, and
    # snapshots the result: the entry module imports the handler (which
    # registers itself) and then the SDK's export for the world. Only
    # modules imported here exist at run time.
    cat >"$work/wharf_main.py" <<EOF
import sys

from wharf import _dispatch

WORLD = "$world"

# Importing the handler's module registers its handler with @wharf.handler
# or @wharf.batch_handler. A function the SDK refuses is reported on one
# marked line, which the build script prints alone: the import's traceback
# would only bury it.
try:
    import $module
except _dispatch.InvalidHandler as e:
    print(f"wharf-build-error: {e}", file=sys.stderr)
    raise SystemExit(1)
kind = _dispatch.registered_kind()
if kind is None:
    print("wharf-build-error: module $module registers no handler: decorate its handler function with @wharf.handler (or @wharf.batch_handler)", file=sys.stderr)
    raise SystemExit(1)
wanted = "batch-handler" if kind == "batch" else "handler"
if wanted != WORLD:
    print(f"wharf-build-world: {wanted}", file=sys.stderr)
    raise SystemExit(1)

# The component's export, which componentize-py looks up in this module.
if WORLD == "handler":
    from wharf._component import WitWorld
else:
    from wharf._batch_component import WitWorld
EOF
    # A failed import is reported as a Python traceback; a Rust backtrace of
    # componentize-py itself would only bury it. Its output is kept until it
    # ends, so that a refusal the SDK marked can be shown without the rest.
    RUST_BACKTRACE=0 "$tools/bin/componentize-py" \
        -d "$root/wit/0.2.0" -w "$world" --quiet \
        componentize wharf_main \
        -p "$work" -p "$app_dir" -p "$sdk" ${extra[@]+"${extra[@]}"} \
        -o "$out" >"$work/build.log" 2>&1
}

status=0
componentize || status=$?
if [[ $status -ne 0 ]]; then
    # componentize-py may quote the guest's stderr inside its own report,
    # so the markers are looked for anywhere on a line.
    other="$(sed -n 's/.*wharf-build-world: \([a-z-]*\).*/\1/p' "$work/build.log" | head -n 1)"
    if [[ -n "$other" && "$other" != "$world" ]]; then
        world="$other"
        status=0
        componentize || status=$?
    fi
fi
if [[ $status -ne 0 ]]; then
    refusal="$(sed -n 's/.*wharf-build-error: //p' "$work/build.log" | head -n 1)"
    if [[ -n "$refusal" ]]; then
        echo "error: $refusal" >&2
        exit 1
    fi
    cat "$work/build.log" >&2
    exit "$status"
fi
cat "$work/build.log" >&2
echo "built $out ($(du -h "$out" | cut -f1), world $world)" >&2
