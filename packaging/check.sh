#!/usr/bin/env bash
# Checks what a gateway installs besides the binary: the systemd unit
# (systemd-analyze verify; its exposure score from systemd-analyze security
# must stay at or below 2.0) and the Yocto layer (oelint-adv, and that
# outpost-crates.inc is in step with Cargo.lock). Needs a built outpostd
# (OUTPOSTD, default target/debug/outpostd) for the unit's ExecStart.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${OUTPOSTD:-target/debug/outpostd}")
[ -x "$bin" ] || { echo "packaging/check.sh: $bin is not built (cargo build)" >&2; exit 1; }
command -v systemd-analyze >/dev/null \
  || { echo "packaging/check.sh: systemd-analyze is missing: apt-get install systemd" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== the systemd unit"
# The unit as installed, with ExecStart pointing at this build.
sed "s#/usr/bin/outpostd#$bin#g" packaging/outpost.service > "$tmp/outpost.service"
if ! systemd-analyze verify --man=no "$tmp/outpost.service" > "$tmp/verify" 2>&1; then
  cat "$tmp/verify" >&2
  echo "packaging/check.sh: systemd-analyze verify refused packaging/outpost.service" >&2
  exit 1
fi
if [ -s "$tmp/verify" ]; then
  cat "$tmp/verify" >&2
  echo "packaging/check.sh: systemd-analyze verify has warnings about packaging/outpost.service" >&2
  exit 1
fi
echo "systemd-analyze verify: clean"
score=$(systemd-analyze security --offline=yes "$tmp/outpost.service" 2>&1 \
  | sed -n 's/.*Overall exposure level for outpost.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || { echo "packaging/check.sh: no exposure score from systemd-analyze security" >&2; exit 1; }
echo "systemd-analyze security: exposure $score (at most 2.0)"
awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' \
  || { echo "packaging/check.sh: the unit's exposure $score is above 2.0" >&2; exit 1; }

echo "== the Yocto layer"
python3 yocto/update-crates --check
OELINT=target/tools/oelint
if ! "$OELINT/bin/oelint-adv" --version 2>/dev/null | grep -q '9.11.2'; then
  python3 -m venv "$OELINT"
  "$OELINT/bin/pip" install -q oelint-adv==9.11.2
fi
files=()
for f in yocto/meta-outpost/conf/layer.conf yocto/meta-outpost/recipes-*/*/*.bb yocto/meta-outpost/recipes-*/*/*.inc; do
  files+=("${f#yocto/}")
done
for release in whinlatter wrynose; do
  out=$(cd yocto && "../$OELINT/bin/oelint-adv" --quiet --relpaths --jobs 1 --release "$release" "${files[@]}" 2>&1) || {
    echo "$out" >&2
    echo "packaging/check.sh: oelint-adv ($release) found problems in yocto/meta-outpost" >&2
    exit 1
  }
  [ -z "$out" ] || { echo "$out" >&2; echo "packaging/check.sh: oelint-adv ($release) has findings" >&2; exit 1; }
  echo "oelint-adv --release $release: clean"
done
