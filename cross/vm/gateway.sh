#!/usr/bin/env bash
# The emulated arm64 gateway, end to end: Debian bookworm arm64 with systemd
# as PID 1 (cross/vm/image.sh, cached in target/vm/gateway) boots under
# qemu-system-aarch64 and, inside the guest (cross/vm/guest-test.sh):
#   - installs the arm64 .deb with dpkg -i; the service reaches active
#     (running) through READY=1;
#   - polls a Modbus RTU device over its UART (/dev/ttyS0, a PCI 16550 that
#     qemu wires to a pty) answered by pymodbus on the host, and sees a GPIO
#     edge on gpio-sim;
#   - delivers to a nats-server on the host through qemu's user networking
#     (restrict=on: the guest reaches nothing but a guestfwd to a loopback
#     port; the host side only ever touches 127.0.0.1);
#   - kill -STOP: the watchdog restarts it; kill -9: restarted;
#   - an upgrade to a newer .deb keeps the configuration and the log;
#   - then a second, cold boot of the installed gateway, timed.
# The host then reads the stream: every seq from 1 on, none missing, none
# twice. Prints PASS/FAIL lines and "N passed, N failed"; exits 1 on any
# failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash cross/vm/image.sh
VM=target/vm
G=$VM/gateway
W=$G/run
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
DEB=target/dist/outpost_${VERSION}_arm64.deb
PY=${OUTPOST_PEERS_PYTHON:-target/peers/venv/bin/python}
NATS=${OUTPOST_NATS_SERVER:-target/peers/venv/bin/nats-server}
for t in socat "$PY" "$NATS"; do
  command -v "$t" >/dev/null || {
    echo "cross/vm/gateway.sh: $t is missing (./tests/run installs the test peers: socat from apt, the rest into target/peers/venv)" >&2
    exit 1
  }
done
[ -f "$DEB" ] || bash cross/release.sh aarch64-gnu
cargo build --locked -q -p outpost-tests --bin nats_seqs

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

rm -rf "$W"
mkdir -p "$W/payload" "$W/nats"
# The packages: the one built, and the same again under a newer version for
# the upgrade (its maintainer scripts, conffile and restart are what is
# tested; the binary is the same build).
cp "$DEB" "$W/payload/outpost_old.deb"
dpkg-deb -R "$DEB" "$W/newer"
sed -i "s/^Version: .*/Version: ${VERSION}+vmtest2/" "$W/newer/DEBIAN/control"
dpkg-deb --root-owner-group -Zxz -b "$W/newer" "$W/payload/outpost_new.deb" >/dev/null
rm -rf "$W/newer"
cp cross/vm/guest-test.sh "$W/payload/test.sh"
cp "$VM/configfs.ko" "$VM/gpio-sim.ko" "$W/payload/"
token="opt_$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
echo "$token" > "$W/payload/token"
printf '{"tokens":[{"name":"vmtest","role":"admin","sha256":"%s"}]}\n' \
  "$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)" > "$W/payload/tokens.json"
cat > "$W/payload/outpost.toml" <<'EOF'
# The emulated gateway's site: a meter on the UART, a door contact on GPIO,
# a steady counter, and the host's NATS.
[gateway]
id = "vm-gw"
data_dir = "/var/lib/outpost"
durability = "full"
clock = "trust"

[web]
enabled = true
bind = "0.0.0.0:8443"
tls = true

[[bus]]
name = "uart"
port = "/dev/ttyS0"
baud = 115200
parity = "none"

[[device]]
name = "meter"
[device.modbus]
bus = "uart"
unit = 1
period = "500ms"
timeout = "500ms"
[[device.modbus.tag]]
name = "voltage"
table = "holding"
address = 0
type = "u16"

[[device]]
name = "cabinet"
[device.gpio]
chip = "@SIM_CHIP@"
[[device.gpio.input]]
name = "door"
line_name = "DOOR"
debounce = "20ms"

[[device]]
name = "tick"
[device.sim]
interval = "250ms"
[[device.sim.tag]]
name = "n"
counter = {}

[[uplink]]
name = "host"
[uplink.nats]
url = "nats://10.0.2.100:4222"
subject_prefix = "outpost"
stream = "OUTPOST"
create_stream = true
EOF
mkfs.ext4 -q -L payload -d "$W/payload" "$W/payload.img" 64M
qemu-img create -q -f qcow2 -b "$(realpath "$G/base.img")" -F raw "$W/disk.qcow2"
echo '{"devices": [{"id": 1, "holding": [{"addr": 0, "registers": [231]}]}]}' > "$W/modbus.json"

# The host's nats-server, on an ephemeral loopback port.
"$NATS" -js -a 127.0.0.1 -p -1 --store_dir "$W/nats" > "$W/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  port=$(sed -n 's/.*Listening for client connections on 127.0.0.1:\([0-9]*\).*/\1/p' "$W/nats.log" | head -1)
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "${port:-}" ] || { cat "$W/nats.log" >&2; echo "cross/vm: nats-server did not start" >&2; exit 1; }

# boot PHASE: one boot of the guest, with the host's Modbus simulator on its
# UART; returns when the guest powers off.
boot() {
  local phase=$1 log="$W/console-$1.log" mon="$W/monitor-$1.sock"
  rm -f "$mon"
  timeout 1200 qemu-system-aarch64 -M virt -cpu cortex-a53 -smp 2 -m 512 -nographic -no-reboot -S \
    -kernel "$VM/vmlinuz" -initrd "$G/initrd.gz" -append "console=ttyAMA0 panic=-1 quiet" \
    -drive file="$W/disk.qcow2",if=none,format=qcow2,id=d0,cache=unsafe -device virtio-blk-pci,drive=d0 \
    -drive file="$W/payload.img",if=none,format=raw,id=d1,readonly=on -device virtio-blk-pci,drive=d1 \
    -netdev "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:4222-cmd:socat - TCP:127.0.0.1:$port" \
    -device virtio-net-pci,netdev=n0,romfile= \
    -chardev pty,id=mb0 -device pci-serial,chardev=mb0 \
    -monitor "unix:$mon,server,nowait" > "$log" 2>&1 &
  local qemu=$!
  local pty=""
  for _ in $(seq 100); do
    pty=$(sed -n 's/.*char device redirected to \(\/dev\/pts\/[0-9]*\) (label mb0).*/\1/p' "$log" | head -1)
    [ -n "$pty" ] && [ -S "$mon" ] && break
    sleep 0.1
  done
  if [ -z "$pty" ] || ! kill -0 "$qemu" 2>/dev/null; then
    cat "$log" >&2
    echo "cross/vm: qemu did not start (or gave the UART no pty)" >&2
    return 1
  fi
  "$PY" tests/peers/modbus_server.py "$W/modbus.json" --serial "$pty" --baud 115200 \
    > "$W/modbus-$phase.log" 2>&1 &
  local mb=$!
  for _ in $(seq 100); do grep -q '^ready' "$W/modbus-$phase.log" && break; sleep 0.1; done
  echo cont | socat - "UNIX-CONNECT:$mon" >/dev/null
  local t0
  t0=$(date +%s.%N)
  wait "$qemu" || true
  kill "$mb" 2>/dev/null || true
  wait "$mb" 2>/dev/null || true
  echo "VM: phase $phase ran $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }') s"
}

echo "== emulated arm64 gateway: Debian with systemd, the .deb, RTU, GPIO, NATS, the watchdog, an upgrade"
boot 1
boot 2
# What the guest's test said, without the console's "[ time] sh[pid]: " prefix.
said() { tr -d '\r' < "$W/console-$1.log" | sed -n 's/^\[ *[0-9.]*\] sh\[[0-9]*\]: //p'; }
for phase in 1 2; do said "$phase"; done | grep -E '^(VM:|PASS|FAIL)' | grep -v 'check exited' || true

passed=$( (said 1; said 2) | grep -c '^PASS' || true)
failed=$( (said 1; said 2) | grep -c '^FAIL' || true)
for phase in 1 2; do
  if ! said "$phase" | grep -q '^VM: check exited'; then
    echo "FAIL phase $phase finished: the guest's test did not end (console: $W/console-$phase.log)"
    tail -30 "$W/console-$phase.log" | tr -d '\r'
    failed=$((failed + 1))
  fi
done
line=$(target/debug/nats_seqs "nats://127.0.0.1:$port" 2>&1 || true)
echo "VM: the host's stream: $line"
if [[ "$line" =~ ^seqs\ ([0-9]+)\ first\ 1\ last\ ([0-9]+)\ missing\ 0\ duplicated\ 0$ ]] && [ "${BASH_REMATCH[1]}" -gt 0 ]; then
  echo "PASS the host's stream holds every seq from 1 to ${BASH_REMATCH[2]} once: nothing lost or duplicated through the kills, the upgrade and the reboot"
  passed=$((passed + 1))
else
  echo "FAIL the host's stream holds every seq once: $line"
  failed=$((failed + 1))
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
