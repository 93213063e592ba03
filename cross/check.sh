#!/usr/bin/env bash
# Builds the aarch64 release artefacts (cross/release.sh: glibc 2.17
# floor checked, .deb packages checked), runs the event log's unit tests under
# qemu-user for aarch64, and the emulated gateways.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each stage prints the time since the start (OUTPOST_T0 carries it into cross/check.sh).
export OUTPOST_T0=${OUTPOST_T0:-$(date +%s)}
stage() { t=$(($(date +%s) - OUTPOST_T0)); printf '%s  [%dm%02ds]\n' "$1" $((t / 60)) $((t % 60)); }
bash cross/setup.sh

stage "== the aarch64 release artefacts (cross/release.sh with no argument builds every target)"
bash cross/release.sh aarch64-gnu

stage "== the event log's unit tests under qemu-aarch64"
cargo test --locked --target aarch64-unknown-linux-gnu -p outpost-core -p outpost-sync --lib

stage "== the GPIO driver in an emulated arm64 gateway (qemu-system, gpio-sim)"
bash cross/vm/run.sh

stage "== the emulated arm64 gateway end to end (Debian with systemd, the .deb)"
bash cross/vm/gateway.sh
