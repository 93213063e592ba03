#!/usr/bin/env bash
# Installs what cross-building and emulated testing need, if missing:
# Debian's cross gcc for aarch64 and armv7 (glibc), qemu-user, and the Rust
# targets. Idempotent; `apt-get update` runs only when something is missing.
set -euo pipefail

TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
# libc6-dev-*-cross must be named: --no-install-recommends does not pull them in.
PKGS=(gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross qemu-user)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "cross/setup.sh: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq || echo "cross/setup.sh: apt-get update reported problems; trying the install anyway"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --release: also what cross/release.sh needs: the musl targets and
# cargo-zigbuild with zig (both from PyPI, pinned, in a venv).
if [ "${1:-}" = "--release" ]; then
  TARGETS+=(aarch64-unknown-linux-musl x86_64-unknown-linux-musl)
  ZIG_VENV=target/tools/zig
  if ! "$ZIG_VENV/bin/cargo-zigbuild" --version 2>/dev/null | grep -q '0.24.0' \
     || ! "$ZIG_VENV/bin/python" -m ziglang version 2>/dev/null | grep -q '^0.17.1'; then
    echo "cross/setup.sh: installing cargo-zigbuild and zig into $ZIG_VENV"
    python3 -m venv "$ZIG_VENV"
    "$ZIG_VENV/bin/pip" install -q ziglang==0.17.1 cargo-zigbuild==0.24.0
  fi
fi

installed=$(rustup target list --installed)
for t in "${TARGETS[@]}"; do
  grep -qx "$t" <<<"$installed" || rustup target add "$t"
done
