#!/usr/bin/env bash
# Quick start, part one: installs what is missing, builds the host and the
# example handler, and runs the example order pipeline end to end against a
# local nats-server, printing what was acked, retried and dead-lettered.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh

echo "==> building the example handler (wasm32-wasip2)"
# Into guests/target whatever CARGO_TARGET_DIR says: the example's wharf.toml
# names the component there.
(cd guests && cargo build --release --quiet -p order-validator --target-dir target)
echo "==> building and running the example pipeline"
cargo run --quiet -p wharf --example order-pipeline -- "$@"
