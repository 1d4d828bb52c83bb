#!/usr/bin/env bash
# Quick start, part two: the full test suite. Installs what is missing, then
# runs the host's unit and integration tests (against real nats-servers and
# guest components built from guests/) and the guest SDK's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh

echo "==> host: unit and integration tests"
cargo test --workspace
echo "==> guest SDK: unit tests and doc examples"
(cd guests && cargo test --quiet -p wharf-guest --target "$(rustc -vV | sed -n 's/^host: //p')")
