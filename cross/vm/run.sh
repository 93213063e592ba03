#!/usr/bin/env bash
# The emulated arm64 gateway: boots Debian's arm64 kernel under
# qemu-system-aarch64 (-M virt, TCG) with an initramfs holding busybox, the
# cross-built GPIO check (tests/src/bin/gpio_sim_check.rs) and its glibc, and
# gpio-sim built out of tree (cross/vm/fetch.sh). The guest's init makes a
# simulated chip of 16 lines (line 5 named DOOR) and runs the check against it
# and the virt board's PL061; the check prints PASS/FAIL lines and
# "N passed, N failed", which this script repeats and turns into its exit code.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash cross/vm/fetch.sh
VM=target/vm
T=aarch64-unknown-linux-gnu

cargo build --locked --release --target "$T" -p outpost-tests --bin gpio_sim_check

R="$VM/rootfs"
rm -rf "$R"
mkdir -p "$R"/{bin,proc,sys,dev,tmp,lib}
cp "$VM/busybox" "$R/bin/busybox"
cp "target/$T/release/gpio_sim_check" "$R/bin/"
cp "$VM/configfs.ko" "$VM/gpio-sim.ko" "$R/"
for l in ld-linux-aarch64.so.1 libc.so.6 libm.so.6 libgcc_s.so.1; do
  cp -L "/usr/aarch64-linux-gnu/lib/$l" "$R/lib/"
done
cat > "$R/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
insmod /configfs.ko && insmod /gpio-sim.ko || echo "VM: cannot load gpio-sim"
mount -t configfs none /sys/kernel/config
C=/sys/kernel/config/gpio-sim/chip0
mkdir $C $C/bank0 $C/bank0/line5
echo 16 > $C/bank0/num_lines
echo DOOR > $C/bank0/line5/name
echo 1 > $C/live
sim=$(cat $C/bank0/chip_name)
export SIM_CHIP=/dev/$sim SIM_SYS=/sys/devices/platform/$(cat $C/dev_name)/$sim PL_CHIP=
for c in /sys/class/gpio/gpiochip*; do
  dev=$(basename "$(readlink -f $c/device)")
  case "$(cat $c/label)" in
    *pl061*) export PL_BASE=$(cat $c/base) PL_CHIP=/dev/$(ls $c/device | grep '^gpiochip' | head -1);;
  esac
  [ "$(ls $c/device | grep '^gpiochip' | head -1)" = "$sim" ] && export SIM_BASE=$(cat $c/base)
done
echo "VM: gpio-sim $SIM_CHIP (sysfs base $SIM_BASE), PL061 $PL_CHIP (base $PL_BASE)"
cd /tmp && /bin/gpio_sim_check
echo "VM: check exited $?"
poweroff -f
INIT
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1 > ../initrd.gz)

echo "== emulated arm64 gateway: the GPIO driver against gpio-sim and the PL061"
log="$VM/console.log"
timeout 600 qemu-system-aarch64 -M virt -cpu cortex-a53 -smp 2 -m 512 -nographic -no-reboot -nic none \
  -kernel "$VM/vmlinuz" -initrd "$VM/initrd.gz" \
  -append "console=ttyAMA0 rdinit=/init quiet panic=-1" > "$log" 2>&1 || true
grep -E '^(VM:|PASS|FAIL|[0-9]+ passed)' "$log" | tr -d '\r' || true
if ! grep -q '^VM: check exited 0' "$log"; then
  echo "cross/vm: the GPIO check failed or did not finish; the guest's console is in $log" >&2
  tail -40 "$log" >&2
  exit 1
fi
