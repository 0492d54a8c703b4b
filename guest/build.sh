#!/usr/bin/env bash
# Builds the agile guest image into OUTDIR:
#   OUTDIR/vmlinuz      Debian 12 cloud kernel (from its .deb, not installed)
#   OUTDIR/initrd.img   gzip'd newc cpio: busybox, /init, memverify, memtouch,
#                       virtio-net modules, redis-server + redis-cli (+ libs)
#   OUTDIR/kernel.txt   which kernel package/version/release vmlinuz came from
#   OUTDIR/pkg/         cached kernel .deb
# Does nothing when both images exist and are newer than every file in guest/.
# See guest/README.md.
set -euo pipefail

readonly KERNEL_META=linux-image-cloud-amd64
readonly BUSYBOX=/bin/busybox
readonly CFLAGS=(-std=c11 -O2 -static -Wall -Wextra -Werror)
# Debian's redis-tools ships the server as redis-check-rdb (the redis-server
# package only adds a symlink and a host service, which we do not want).
readonly REDIS_SERVER=/usr/bin/redis-check-rdb
readonly REDIS_CLI=/usr/bin/redis-cli
# virtio-net and what it depends on, in load order (paths under
# lib/modules/<release>/kernel/ of the kernel package; see guest/README.md).
readonly NET_MODULES=(
    drivers/virtio/virtio_ring.ko drivers/virtio/virtio.ko
    drivers/virtio/virtio_pci_modern_dev.ko drivers/virtio/virtio_pci_legacy_dev.ko
    drivers/virtio/virtio_pci.ko net/core/failover.ko drivers/net/net_failover.ko
    drivers/net/virtio_net.ko
)

log() { echo "guest/build.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $# -eq 1 ]] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
GUEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1"
OUT=$(cd "$1" && pwd)

up_to_date() {
    [[ -f $OUT/vmlinuz && -f $OUT/initrd.img ]] || return 1
    # OUTDIR may itself live under guest/; its contents are not inputs.
    local newer
    newer=$(find "$GUEST_DIR" -path "$OUT" -prune -o -type f \
        \( -newer "$OUT/vmlinuz" -o -newer "$OUT/initrd.img" \) -print -quit)
    [[ -z $newer ]]
}

# ---- kernel ---------------------------------------------------------------

# The meta package depends on the current ABI's package, e.g.
# linux-image-6.1.0-56-cloud-amd64; prints nothing without apt lists.
resolve_kernel_pkg() {
    apt-cache depends "$KERNEL_META" 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-6\.1\.0-.*-cloud-amd64$/ { print $2; exit }'
}

cached_deb() { # newest cached .deb of package $1 (any package if empty)
    local pattern="${1:-linux-image-6.1.0-*-cloud-amd64}_*.deb"
    find "$OUT/pkg" -maxdepth 1 -name "$pattern" -printf '%f\n' 2>/dev/null |
        sort -V | tail -n 1
}

apt_download() { # $1 = package, $2 = directory
    # As root, apt's _apt sandbox user cannot write into our private temp
    # dir and apt warns before falling back to root; say so up front.
    local opts=()
    [[ $(id -u) -eq 0 ]] && opts=(-o APT::Sandbox::User=root)
    (cd "$2" && apt-get -q "${opts[@]}" download "$1")
}

# Prints the path of the kernel .deb in OUTDIR/pkg, downloading if needed.
fetch_kernel_deb() {
    mkdir -p "$OUT/pkg"
    local pkg deb
    pkg=$(resolve_kernel_pkg)
    if [[ -z $pkg ]]; then
        deb=$(cached_deb "")
        if [[ -n $deb ]]; then
            log "no apt lists; using cached $deb"
            echo "$OUT/pkg/$deb"
            return
        fi
        log "no apt lists; running apt-get update"
        apt-get update -qq >&2 || die "apt-get update failed"
        pkg=$(resolve_kernel_pkg)
        [[ -n $pkg ]] || die "apt-cache depends $KERNEL_META names no cloud kernel"
    fi

    deb=$(cached_deb "$pkg")
    if [[ -z $deb ]]; then
        log "downloading $pkg"
        local dl="$TMP/download"
        mkdir -p "$dl"
        if ! apt_download "$pkg" "$dl" >&2; then
            log "download failed; running apt-get update and retrying"
            apt-get update -qq >&2 || die "apt-get update failed"
            apt_download "$pkg" "$dl" >&2 || die "apt-get download $pkg failed"
        fi
        deb=$(cd "$dl" && ls -- "$pkg"_*.deb)
        mv -f "$dl/$deb" "$OUT/pkg/$deb" # same filesystem: atomic
        # Superseded kernels are 27 MB each and never used again.
        find "$OUT/pkg" -maxdepth 1 -name 'linux-image-*.deb' ! -name "$deb" -delete
    fi
    echo "$OUT/pkg/$deb"
}

# Extracts vmlinuz (and kernel.txt) from the .deb into the staging dir.
stage_kernel() {
    local deb=$1 root="$TMP/kernel"
    dpkg -x "$deb" "$root"
    local images=("$root"/boot/vmlinuz-*)
    [[ ${#images[@]} -eq 1 && -f ${images[0]} ]] || die "no single boot/vmlinuz-* in $deb"
    cp "${images[0]}" "$TMP/vmlinuz" # not -p: the mtime must be now
    local release=${images[0]##*/vmlinuz-}
    KERNEL_MODULES="$root/lib/modules/$release/kernel"
    {
        echo "package=$(dpkg-deb -f "$deb" Package)"
        echo "version=$(dpkg-deb -f "$deb" Version)"
        echo "release=$release"
    } >"$TMP/kernel.txt"
}

# ---- initramfs --------------------------------------------------------------

check_redis() {
    local f
    for f in "$REDIS_SERVER" "$REDIS_CLI"; do
        [[ -x $f ]] || die "$f missing (install redis-tools; scripts/install-deps does)"
    done
}

# Copies the virtio-net modules (from the same .deb as vmlinuz) to /lib/modules.
stage_modules() {
    local root=$1 m
    mkdir -p "$root/lib/modules"
    for m in "${NET_MODULES[@]}"; do
        [[ -f $KERNEL_MODULES/$m ]] || die "kernel package has no $m"
        cp "$KERNEL_MODULES/$m" "$root/lib/modules/"
    done
}

# Copies a dynamically linked host binary to $root/bin/$2 plus every shared
# library ldd names (and the ELF interpreter), at the same paths as on the host.
stage_dynamic() {
    local root=$1 bin=$2 name=$3 lib
    cp "$bin" "$root/bin/$name"
    while read -r lib; do
        [[ -f $root$lib ]] && continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done < <(LC_ALL=C ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
}

check_busybox() {
    [[ -x $BUSYBOX ]] || die "$BUSYBOX missing (install busybox-static)"
    # A dynamically linked busybox would not run in the library-less initramfs.
    if LC_ALL=C readelf -l "$BUSYBOX" 2>/dev/null | grep -q 'Requesting program interpreter'; then
        die "$BUSYBOX is dynamically linked (install busybox-static)"
    fi
}

stage_initramfs() {
    local root="$TMP/initramfs"
    mkdir -p "$root"/{bin,dev,proc,sys,tmp}
    chmod 1777 "$root/tmp"

    cp "$BUSYBOX" "$root/bin/busybox"
    # Every applet, not just the ones /init uses: the shell workload is for
    # poking around, and links cost nothing.
    local applet
    for applet in $("$root/bin/busybox" --list); do
        [[ $applet == busybox ]] || ln -s busybox "$root/bin/$applet"
    done

    gcc "${CFLAGS[@]}" -o "$root/bin/memverify" "$GUEST_DIR/memverify.c"
    gcc "${CFLAGS[@]}" -o "$root/bin/memtouch" "$GUEST_DIR/memtouch.c" -lm

    install -m 0755 "$GUEST_DIR/init" "$root/init"
    install -m 0755 "$GUEST_DIR/net.sh" "$root/bin/agile-net"
    install -m 0755 "$GUEST_DIR/redis.sh" "$root/bin/agile-redis"
    stage_modules "$root"
    stage_dynamic "$root" "$REDIS_SERVER" redis-server
    stage_dynamic "$root" "$REDIS_CLI" redis-cli
    # Lets the kernel hand /init a console before devtmpfs is mounted; needs
    # root, and /init copes without it.
    if [[ $(id -u) -eq 0 ]]; then
        mknod -m 0600 "$root/dev/console" c 5 1
    fi

    (cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
        cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -9 -n >"$TMP/initrd.img"
}

# ---- main -----------------------------------------------------------------

main() {
    up_to_date && { log "up to date: $OUT"; return; }

    # Concurrent builds into one OUTDIR wait for each other; the second then
    # usually finds everything up to date.
    exec 9>"$OUT/.build.lock"
    flock 9
    up_to_date && { log "up to date: $OUT"; return; }

    TMP=$(mktemp -d "$OUT/.build.XXXXXX")
    trap 'rm -rf "$TMP"' EXIT

    check_busybox
    check_redis
    local deb
    deb=$(fetch_kernel_deb) # separate statement so set -e sees a failure
    stage_kernel "$deb"
    stage_initramfs

    # Renames within OUTDIR are atomic: readers see old or new, never half.
    mv -f "$TMP/kernel.txt" "$OUT/kernel.txt"
    mv -f "$TMP/vmlinuz" "$OUT/vmlinuz"
    mv -f "$TMP/initrd.img" "$OUT/initrd.img"
    log "built $OUT/vmlinuz ($(sed -n 's/^release=//p' "$OUT/kernel.txt")) and $OUT/initrd.img"
}

main
