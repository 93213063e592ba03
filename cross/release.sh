#!/usr/bin/env bash
# Builds Outpost's release artefacts into target/dist and prints their sizes
# and SHA-256 sums (also in target/dist/SHA256SUMS):
#
#   outpostd-<ver>-<triple>           stripped binaries (profile release-small)
#   outpost_<ver>_<arch>.deb           arm64, armhf, amd64 (from the gnu builds)
#   outpost-<ver>-<triple>.tar.gz      binary, unit, configuration, man page,
#                                      completions, install notes, licence
#
# Targets (cargo-zigbuild, zig from PyPI):
#   aarch64-musl, x86_64-musl   static, musl: any Linux of that architecture
#   aarch64-gnu, armv7-gnu, x86_64-gnu
#                               glibc, linked against glibc 2.17's symbols
#                               (zigbuild's `.2.17`): Raspberry Pi OS since
#                               stretch, Debian 9+, RHEL 7+
# armv7 has no musl build: rustup has no rust-std for armv7-unknown-linux-
# musleabihf on this build host (cross/README.md).
#
#   cross/release.sh                          every target
#   cross/release.sh aarch64-gnu armv7-gnu    some of them (./tests/run)
#
# Every binary is checked: it runs (`--version`, under qemu-user for ARM),
# a glibc build needs no symbol newer than GLIBC_2.17 (objdump -T), a musl
# build has no interpreter and no shared library. Every .deb is checked
# with dpkg-deb: its files, its conffile and its maintainer scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash cross/setup.sh --release

ZIG_VENV=target/tools/zig
export PATH="$PWD/$ZIG_VENV/bin:$PATH"
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
DIST=target/dist
STAGE=target/dist/stage
GLIBC_FLOOR=2.17
# Packages and tarballs carry the last commit's time, not the build's.
EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 0)
mkdir -p "$DIST"
rm -rf "$STAGE"

all=(aarch64-musl x86_64-musl aarch64-gnu armv7-gnu x86_64-gnu)
wanted=("$@")
((${#wanted[@]})) || wanted=("${all[@]}")

triple() {
    case "$1" in
        aarch64-musl) echo aarch64-unknown-linux-musl ;;
        x86_64-musl) echo x86_64-unknown-linux-musl ;;
        aarch64-gnu) echo aarch64-unknown-linux-gnu ;;
        armv7-gnu) echo armv7-unknown-linux-gnueabihf ;;
        x86_64-gnu) echo x86_64-unknown-linux-gnu ;;
        *) echo "cross/release.sh: unknown target $1 (one of: ${all[*]})" >&2; exit 2 ;;
    esac
}
deb_arch() {
    case "$1" in
        aarch64-gnu) echo arm64 ;;
        armv7-gnu) echo armhf ;;
        x86_64-gnu) echo amd64 ;;
        *) echo "" ;;
    esac
}
# How to run a binary of that target here (qemu-user, no binfmt_misc).
runner() {
    case "$1" in
        aarch64-musl) echo "qemu-aarch64" ;;
        aarch64-gnu) echo "qemu-aarch64 -L /usr/aarch64-linux-gnu" ;;
        armv7-gnu) echo "qemu-arm -L /usr/arm-linux-gnueabihf" ;;
        *) echo "" ;;
    esac
}
objdump_for() {
    case "$1" in
        aarch64-*) echo aarch64-linux-gnu-objdump ;;
        armv7-*) echo arm-linux-gnueabihf-objdump ;;
        *) echo objdump ;;
    esac
}

fail() { echo "cross/release.sh: $*" >&2; exit 1; }

check_binary() {
    local t="$1" bin="$2" od
    od=$(objdump_for "$t")
    # shellcheck disable=SC2046
    $(runner "$t") "$bin" --version | grep -q "$VERSION" || fail "$bin does not run or print $VERSION"
    case "$t" in
        *-musl)
            if readelf -lW "$bin" | grep -q 'INTERP'; then fail "$bin asks for a dynamic loader"; fi
            if readelf -dW "$bin" | grep -q 'NEEDED'; then fail "$bin needs shared libraries"; fi
            echo "  $t: static, no shared library"
            ;;
        *-gnu)
            local newest
            newest=$("$od" -T "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
            [ -n "$newest" ] || fail "$bin: no GLIBC symbol versions found by $od -T"
            if [ "$(printf '%s\n%s\n' "$newest" "$GLIBC_FLOOR" | sort -V | tail -1)" != "$GLIBC_FLOOR" ]; then
                "$od" -T "$bin" | grep -E "GLIBC_$newest" | head -5 >&2
                fail "$bin needs GLIBC_$newest, above the promised floor $GLIBC_FLOOR"
            fi
            echo "  $t: newest glibc symbol GLIBC_$newest (floor $GLIBC_FLOOR)"
            ;;
    esac
}

# The files every package and tarball carries besides the binary, made with
# the binary itself (the man page and completions come from its CLI).
extras() {
    local t="$1" bin="$2" out="$3"
    mkdir -p "$out"
    $(runner "$t") "$bin" man > "$out/outpostd.1"
    for sh in bash zsh fish; do
        $(runner "$t") "$bin" completions "$sh" > "$out/outpostd.$sh"
    done
    [ -s "$out/outpostd.1" ] && [ -s "$out/outpostd.bash" ] || fail "no man page or completions from $bin"
}

build_deb() {
    local t="$1" bin="$2" arch="$3" ex="$4"
    local root="$STAGE/deb-$arch"
    local deb="$DIST/outpost_${VERSION}_${arch}.deb"
    rm -rf "$root"
    install -D -m 0755 "$bin" "$root/usr/bin/outpostd"
    install -D -m 0644 packaging/outpost.service "$root/lib/systemd/system/outpost.service"
    install -D -m 0640 packaging/outpost.toml "$root/etc/outpost/outpost.toml"
    install -D -m 0644 packaging/60-outpost-gpio.rules "$root/lib/udev/rules.d/60-outpost-gpio.rules"
    install -D -m 0644 "$ex/outpostd.1" "$root/usr/share/man/man1/outpostd.1"
    gzip -9n "$root/usr/share/man/man1/outpostd.1"
    install -D -m 0644 "$ex/outpostd.bash" "$root/usr/share/bash-completion/completions/outpostd"
    install -D -m 0644 "$ex/outpostd.zsh" "$root/usr/share/zsh/vendor-completions/_outpostd"
    install -D -m 0644 "$ex/outpostd.fish" "$root/usr/share/fish/vendor_completions.d/outpostd.fish"
    install -D -m 0644 examples/outpost.toml "$root/usr/share/doc/outpost/examples/outpost.toml"
    install -D -m 0644 LICENSE "$root/usr/share/doc/outpost/copyright"
    install -D -m 0644 CHANGELOG.md "$root/usr/share/doc/outpost/changelog"
    gzip -9n "$root/usr/share/doc/outpost/changelog"
    install -d "$root/DEBIAN"
    install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$root/DEBIAN/"
    echo /etc/outpost/outpost.toml > "$root/DEBIAN/conffiles"
    local size depends
    size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
    depends="libc6 (>= $GLIBC_FLOOR), passwd, procps"
    cat > "$root/DEBIAN/control" <<EOF
Package: outpost
Version: $VERSION
Architecture: $arch
Maintainer: Outpost maintainers <outpost@users.noreply.github.com>
Installed-Size: $size
Depends: $depends
Recommends: tzdata
Section: net
Priority: optional
Homepage: $(sed -n '/^\[workspace.package\]/,/^\[/s/^repository = "\(.*\)"/\1/p' Cargo.toml)
Description: edge gateway daemon: Modbus, serial and GPIO to MQTT, ThingsBoard and NATS
 outpostd reads local devices over Modbus RTU and TCP, serial lines and GPIO,
 runs ThingsBoard rule chains offline, keeps every event in a local SQLite
 log and delivers it upstream whenever a link is up. Runs as the systemd
 service outpost (user outpost, groups dialout and gpio); its history is in
 /var/lib/outpost and is erased only by dpkg --purge.
EOF
    SOURCE_DATE_EPOCH=$EPOCH dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
    # What was packed is what was meant.
    local files
    files=$(dpkg-deb -c "$deb" | awk '{print $6}')
    for f in ./usr/bin/outpostd ./lib/systemd/system/outpost.service ./etc/outpost/outpost.toml \
             ./lib/udev/rules.d/60-outpost-gpio.rules \
             ./usr/share/man/man1/outpostd.1.gz ./usr/share/bash-completion/completions/outpostd; do
        grep -qx "$f" <<<"$files" || fail "$deb lacks $f"
    done
    [ "$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)" = /etc/outpost/outpost.toml ] \
        || fail "$deb: /etc/outpost/outpost.toml is not a conffile"
    dpkg-deb -f "$deb" Architecture | grep -qx "$arch" || fail "$deb: wrong architecture"
    echo "  $deb"
}

build_tarball() {
    local t="$1" bin="$2" ex="$3" tr
    tr=$(triple "$t")
    local name="outpost-$VERSION-$tr"
    local dir="$STAGE/$name"
    rm -rf "$dir"
    install -D -m 0755 "$bin" "$dir/outpostd"
    install -m 0644 packaging/outpost.service packaging/outpost.toml packaging/60-outpost-gpio.rules \
        LICENSE CHANGELOG.md "$dir/"
    install -m 0644 packaging/INSTALL.md "$dir/INSTALL.md"
    install -m 0644 examples/outpost.toml "$dir/outpost.example.toml"
    install -D -m 0644 "$ex/outpostd.1" "$dir/man/outpostd.1"
    install -D -m 0644 "$ex/outpostd.bash" "$dir/completions/outpostd.bash"
    install -D -m 0644 "$ex/outpostd.zsh" "$dir/completions/_outpostd"
    install -D -m 0644 "$ex/outpostd.fish" "$dir/completions/outpostd.fish"
    tar --sort=name --owner=0 --group=0 --numeric-owner \
        --mtime="@$EPOCH" \
        -C "$STAGE" -czf "$DIST/$name.tar.gz" "$name"
    echo "  $DIST/$name.tar.gz"
}

made=()
for t in "${wanted[@]}"; do
    tr=$(triple "$t")
    echo "== $t ($tr, profile release-small)"
    zt="$tr"
    case "$t" in *-gnu) zt="$tr.$GLIBC_FLOOR" ;; esac
    cargo zigbuild --locked --profile release-small --target "$zt" -p outpost-daemon \
        --target-dir target/zig
    bin="$DIST/outpostd-$VERSION-$tr"
    cp "target/zig/$tr/release-small/outpostd" "$bin"
    check_binary "$t" "$bin"
    ex="$STAGE/extras-$t"
    extras "$t" "$bin" "$ex"
    made+=("$bin")
    arch=$(deb_arch "$t")
    if [ -n "$arch" ]; then
        build_deb "$t" "$bin" "$arch" "$ex"
        made+=("$DIST/outpost_${VERSION}_${arch}.deb")
    fi
    build_tarball "$t" "$bin" "$ex"
    made+=("$DIST/outpost-$VERSION-$tr.tar.gz")
done

echo "== artefacts"
(cd "$DIST" && for f in "${made[@]}"; do
    b=$(basename "$f")
    printf '%10d  %s\n' "$(stat -c %s "$b")" "$b"
done)
(cd "$DIST" && sha256sum $(for f in "${made[@]}"; do basename "$f"; done) | tee SHA256SUMS)
