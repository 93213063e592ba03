#!/usr/bin/env bash
# Cross-compiles outpostd for aarch64 and armv7 (release profile) and runs the
# event log's unit tests under qemu-user for aarch64. Prints the binary sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash cross/setup.sh

for t in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
  echo "== cross build: outpostd for $t (profile release-small)"
  cargo build --locked --profile release-small --target "$t" -p outpost-daemon
  ls -l "target/$t/release-small/outpostd" | awk -v t="$t" '{print "size " t ": " $5 " bytes"}'
done

echo "== the event log's unit tests under qemu-aarch64"
cargo test --locked --target aarch64-unknown-linux-gnu -p outpost-core -p outpost-sync --lib

echo "== the GPIO driver in an emulated arm64 gateway (qemu-system, gpio-sim)"
bash cross/vm/run.sh
