#!/usr/bin/env bash
# Fetches what the emulated arm64 gateway needs into target/vm (never into
# the repository): Debian's arm64 kernel, busybox and kernel headers, and the
# gpio-sim sources from linux-source; builds gpio-sim.ko out of tree against
# those headers (Debian's kernel does not enable CONFIG_GPIO_SIM). Packages
# are only downloaded and unpacked, never installed. Idempotent: a second run
# with everything present does nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
VM=target/vm
mkdir -p "$VM/debs"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

[ -f "$VM/ready" ] && exit 0

need=()
for p in qemu-system-arm cpio gzip xz-utils make gcc-aarch64-linux-gnu bc flex bison libelf-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
updated=0
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $SUDO dpkg --add-architecture arm64
  $SUDO apt-get update -qq || echo "cross/vm: apt-get update reported problems; going on"
  updated=1
fi
if ((${#need[@]})); then
  ((updated)) || $SUDO apt-get update -qq || echo "cross/vm: apt-get update reported problems; going on"
  updated=1
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# The kernel ABI (e.g. 6.1.0-50) moves with Debian updates: resolve it.
abi=$(apt-cache depends linux-image-arm64:arm64 2>/dev/null | sed -n 's/.*Depends: linux-image-\([0-9.]*-[0-9]*\)-arm64.*/\1/p' | head -1)
if [ -z "$abi" ] && ((updated == 0)); then
  $SUDO apt-get update -qq || true
  abi=$(apt-cache depends linux-image-arm64:arm64 2>/dev/null | sed -n 's/.*Depends: linux-image-\([0-9.]*-[0-9]*\)-arm64.*/\1/p' | head -1)
fi
[ -n "$abi" ] || { echo "cross/vm: cannot resolve Debian's arm64 kernel (apt-cache depends linux-image-arm64:arm64)" >&2; exit 1; }
series=${abi%.*}            # 6.1
echo "cross/vm: kernel $abi"

(cd "$VM/debs" && rm -f ./*.deb && apt-get download -q \
  "linux-image-$abi-arm64:arm64" busybox-static:arm64 \
  "linux-headers-$abi-arm64:arm64" "linux-headers-$abi-common" \
  "linux-kbuild-$series" "linux-source-$series")

rm -rf "$VM/root" "$VM/mod"
mkdir -p "$VM/root"
for d in "$VM"/debs/*.deb; do dpkg -x "$d" "$VM/root"; done
cp "$VM/root/boot/vmlinuz-$abi-arm64" "$VM/vmlinuz"
cp "$VM/root/bin/busybox" "$VM/busybox"
configfs=$(find "$VM/root/lib/modules/$abi-arm64" -name 'configfs.ko*' | head -1)
[ -n "$configfs" ] || { echo "cross/vm: configfs module not found in the kernel package" >&2; exit 1; }
case "$configfs" in
  *.xz) xz -dc "$configfs" > "$VM/configfs.ko" ;;
  *) cp "$configfs" "$VM/configfs.ko" ;;
esac

# gpio-sim out of tree: gpio-sim.c, gpiolib.h and irq_sim.c (not built into
# Debian's kernel either) in one module. irq_sim's exports would clash with
# nothing but are not needed inside one module, and irq_to_desc is not
# exported to modules: generic_handle_irq does the same here.
mkdir -p "$VM/mod"
tar -xJf "$VM"/root/usr/src/linux-source-"$series".tar.xz -C "$VM/mod" --strip-components=1 \
  "linux-source-$series/drivers/gpio/gpio-sim.c" "linux-source-$series/drivers/gpio/gpiolib.h" \
  "linux-source-$series/kernel/irq/irq_sim.c"
mv "$VM/mod/drivers/gpio/gpio-sim.c" "$VM/mod/gpio-sim-core.c"
mv "$VM/mod/drivers/gpio/gpiolib.h" "$VM/mod/gpiolib.h"
sed -e '/EXPORT_SYMBOL_GPL/d' \
    -e 's/handle_simple_irq(irq_to_desc(\([a-z_]*\)))/generic_handle_irq(\1)/' \
    "$VM/mod/kernel/irq/irq_sim.c" > "$VM/mod/irq_sim.c"
grep -q 'generic_handle_irq' "$VM/mod/irq_sim.c" \
  || { echo "cross/vm: irq_sim.c changed shape; its patch no longer applies" >&2; exit 1; }
printf 'obj-m := gpio-sim.o\ngpio-sim-y := gpio-sim-core.o irq_sim.o\n' > "$VM/mod/Kbuild"
hdr="$PWD/$VM/root/usr/src/linux-headers-$abi-arm64"
common="$PWD/$VM/root/usr/src/linux-headers-$abi-common"
# The headers' Makefile includes the -common tree by its absolute install path.
sed -i "s|/usr/src/linux-headers-$abi-common|$common|g" "$hdr/Makefile"
make -s -C "$hdr" M="$PWD/$VM/mod" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- \
  DEB_BUILD_ARCH=amd64 DEB_HOST_ARCH=arm64 DEB_HOST_GNU_TYPE=aarch64-linux-gnu modules
cp "$VM/mod/gpio-sim.ko" "$VM/gpio-sim.ko"
rm -rf "$VM/root/usr/src" "$VM/debs"
touch "$VM/ready"
echo "cross/vm: kernel, busybox, configfs.ko and gpio-sim.ko ready in $VM"
