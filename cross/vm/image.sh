#!/usr/bin/env bash
# Builds the emulated gateway's disk image once and caches it in
# target/vm/gateway (never in the repository): Debian bookworm arm64
# (debootstrap, minbase, systemd as PID 1, udev, curl), Debian's arm64 kernel
# and its modules (cross/vm/fetch.sh), an initramfs that loads the virtio
# disk and ext4 modules and hands over to systemd, systemd-networkd on the
# virtio NIC, and vmtest.service, which runs /opt/vm/test.sh from a second
# disk when one is attached (cross/vm/gateway.sh).
#
# debootstrap's second stage runs arm64 code, so it runs inside the guest
# itself at a first boot (qemu-system-aarch64, TCG): nothing is registered
# with the host kernel (no binfmt_misc). Idempotent: with the image present
# and of this script's version it does nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
VM=target/vm
G=$VM/gateway
IMAGE_VERSION=3
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

bash cross/vm/fetch.sh
[ -f "$G/base.ready" ] && [ "$(cat "$G/base.ready")" = "$IMAGE_VERSION" ] && exit 0

need=()
for p in debootstrap qemu-utils qemu-system-arm kmod e2fsprogs cpio; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  $SUDO apt-get update -qq || echo "cross/vm: apt-get update reported problems; going on"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

abi=$(ls "$VM/root/lib/modules")
# The kernel package ships no modules.dep (its postinst makes it): make it
# for modprobe -d below.
depmod -b "$VM/root" "$abi"
mirror=http://deb.debian.org/debian
rm -rf "$G"
mkdir -p "$G"
R="$G/rootfs"
echo "cross/vm: debootstrap (first stage) of bookworm arm64 into $R"
$SUDO debootstrap --foreign --arch=arm64 --variant=minbase \
  --include=systemd,systemd-sysv,udev,kmod,curl,ca-certificates,procps \
  bookworm "$R" "$mirror" > "$G/debootstrap.log" 2>&1 \
  || { tail -20 "$G/debootstrap.log" >&2; echo "cross/vm: debootstrap failed" >&2; exit 1; }

# The kernel's modules (udev loads virtio-net, the 16550 and the rest).
mkdir -p "$R/lib/modules"
cp -a "$VM/root/lib/modules/$abi" "$R/lib/modules/"
depmod -b "$R" "$abi"

mkdir -p "$R/opt/vm" "$R/etc/systemd/network" "$R/etc/systemd/system/multi-user.target.wants"
cat > "$R/etc/systemd/network/10-wired.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
EOF
cat > "$R/etc/systemd/system/vmtest.service" <<'EOF'
[Unit]
Description=The emulated gateway's test (cross/vm/gateway.sh)
ConditionPathExists=/opt/vm/test.sh
After=multi-user.target network-online.target
Wants=network-online.target

[Service]
Type=oneshot
ExecStart=/bin/sh /opt/vm/test.sh
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=20min

[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/vmtest.service "$R/etc/systemd/system/multi-user.target.wants/vmtest.service"
cat > "$R/vm-stage2" <<'EOF'
#!/bin/sh
# PID 1 for one boot: debootstrap's second stage, the system's settings, off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -o remount,rw /
if /debootstrap/debootstrap --second-stage; then
  echo gateway > /etc/hostname
  printf '127.0.1.1 gateway\n' >> /etc/hosts
  printf 'LABEL=gwroot / ext4 defaults 0 1\nLABEL=payload /opt/vm ext4 ro,nofail,x-systemd.device-timeout=15s 0 0\n' > /etc/fstab
  systemctl enable systemd-networkd.service systemd-networkd-wait-online.service
  # A root login on the console for debugging a failed run by hand.
  passwd -d root
  apt-get clean
  rm -f /etc/dpkg/dpkg.cfg.d/vm-unsafe-io
  echo "VM: second stage done"
else
  echo "VM: second stage FAILED"
fi
sync
# fstab names the root by a label no udev can resolve here: remount it read
# only and power off through sysrq.
echo u > /proc/sysrq-trigger
sleep 2
echo o > /proc/sysrq-trigger
sleep 30
EOF
chmod +x "$R/vm-stage2"
# dpkg without fsync while the image is made (the host disk is cache=unsafe
# too): the image is thrown away if this boot fails. Removed at its end.
mkdir -p "$R/etc/dpkg/dpkg.cfg.d"
echo force-unsafe-io > "$R/etc/dpkg/dpkg.cfg.d/vm-unsafe-io"

echo "cross/vm: the root file system image"
$SUDO mkfs.ext4 -q -L gwroot -d "$R" "$G/base.img" 2G
$SUDO rm -rf "$R"

# The initramfs: busybox, the disk's modules, and an init that mounts the
# root file system by its label and switches to systemd (or to init=...).
I="$G/initramfs"
mkdir -p "$I"/{bin,proc,sys,dev,newroot,lib}
cp "$VM/busybox" "$I/bin/busybox"
: > "$I/modules"
for m in virtio_pci virtio_blk ext4; do
  deps=$(modprobe -d "$VM/root" -S "$abi" --show-depends "$m") \
    || { echo "cross/vm: modprobe cannot resolve $m in $VM/root" >&2; exit 1; }
  # Built-in modules print "builtin NAME": nothing to load for them.
  awk '$1 == "insmod" {print $2}' <<<"$deps" | while read -r ko; do
    b=$(basename "$ko")
    grep -qx "$b" "$I/modules" || { cp "$ko" "$I/lib/$b"; echo "$b" >> "$I/modules"; }
  done
done
cat > "$I/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules); do insmod "/lib/$m"; done
init=/sbin/init
for a in $(cat /proc/cmdline); do case "$a" in init=*) init=${a#init=} ;; esac; done
i=0
while ! root=$(findfs LABEL=gwroot 2>/dev/null) && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mount -t ext4 -o ro "$root" /newroot || { echo "VM: cannot mount the root file system"; poweroff -f; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot "$init"
EOF
chmod +x "$I/init"
(cd "$I" && find . | cpio -o -H newc --quiet | gzip -1 > ../initrd.gz)
rm -rf "$I"

echo "cross/vm: debootstrap's second stage inside the guest (TCG; a few minutes, once)"
log="$G/stage2.log"
timeout 1800 qemu-system-aarch64 -M virt -cpu cortex-a53 -smp 2 -m 1024 -nographic -no-reboot -nic none \
  -kernel "$VM/vmlinuz" -initrd "$G/initrd.gz" \
  -append "console=ttyAMA0 panic=-1 init=/vm-stage2" \
  -drive file="$G/base.img",if=none,format=raw,id=d0,cache=unsafe -device virtio-blk-pci,drive=d0 \
  > "$log" 2>&1 || true
if ! grep -q '^VM: second stage done' "$log"; then
  tail -40 "$log" >&2
  echo "cross/vm: the image's second stage failed; the console is in $log" >&2
  exit 1
fi
echo "$IMAGE_VERSION" > "$G/base.ready"
ls -l "$G/base.img" | awk '{print "cross/vm: image ready: " $5 " bytes (sparse)"}'
