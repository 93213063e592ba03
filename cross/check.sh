#!/usr/bin/env bash
# Builds the aarch64 and armv7 release artefacts (cross/release.sh: glibc 2.17
# floor checked, .deb packages checked), runs the event log's unit tests under
# qemu-user for aarch64, and the emulated gateways.
set -euo pipefail
cd "$(dirname "$0")/.."
bash cross/setup.sh

echo "== release artefacts for aarch64 and armv7 (cross/release.sh for every target)"
bash cross/release.sh aarch64-gnu armv7-gnu

echo "== the event log's unit tests under qemu-aarch64"
cargo test --locked --target aarch64-unknown-linux-gnu -p outpost-core -p outpost-sync --lib

echo "== the GPIO driver in an emulated arm64 gateway (qemu-system, gpio-sim)"
bash cross/vm/run.sh

echo "== the emulated arm64 gateway end to end (Debian with systemd, the .deb)"
bash cross/vm/gateway.sh
