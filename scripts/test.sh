#!/usr/bin/env bash
# Quick start, part two: the full test suite. Installs what is missing, then
# runs the host's unit and integration tests (against real nats-servers and
# guest components built from guests/ and the examples, in Rust, Python and
# JavaScript) and the guest SDKs' own tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh

echo "==> host: unit and integration tests"
cargo test --workspace
echo "==> Rust guest SDK, example and batch fixture: unit tests and doc examples"
(cd guests && cargo test --quiet -p wharf-guest -p order-validator -p behave-batch --target "$(rustc -vV | sed -n 's/^host: //p')")
echo "==> Python guest SDK and example: unit tests"
(cd guests/python && python3 -m unittest --quiet)
(cd examples/order-validator-python && PYTHONPATH=../../guests/python python3 -m unittest --quiet)
echo "==> JavaScript guest SDK and example: unit tests"
(cd guests/js && npm test --silent)
(cd examples/order-validator-js && npm ci --no-audit --no-fund --loglevel=error && npm test --silent)
