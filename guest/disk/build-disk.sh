#!/usr/bin/env bash
# Builds the agile disk guest: OUTDIR/debian.qcow2, a Debian 12 system that
# boots from its own disk with firmware (SeaBIOS -> GRUB -> Debian's cloud
# kernel -> systemd), made from Debian packages with mmdebstrap:
#   linux-image-cloud-amd64, initramfs-tools, systemd, redis-server, plus our
#   memverify and memtouch (built here, static), the redis workload
#   (guest/redis.sh as agile-redis, with guest/disk/agile-net) and the
#   workload runner (guest/disk/agile-workload, started by
#   agile-workload.service).
# The workload and its arguments come from SMBIOS type 11 strings that
# systemd 252 imports as credentials (agilectl vm start --workload ...), so
# one image runs every workload unchanged. See guest/README.md ("Disk image").
#
# Cached: nothing is done when OUTDIR/debian.qcow2.inputs holds the hash of
# every input (this folder, the workload sources, the apt sources). Atomic:
# built in OUTDIR/.disk.XXXXXX and renamed into place. Needs root (mmdebstrap
# in root mode, chroot) and the apt mirror.
set -euo pipefail

readonly SUITE=bookworm
readonly IMAGE_MIB=2048            # virtual size; the qcow2 holds only what is used
readonly PART_START=2048           # sectors: 1 MiB gap for GRUB's core.img
readonly CFLAGS=(-std=c11 -O2 -static -Wall -Wextra -Werror)
readonly PACKAGES=(
    systemd systemd-sysv udev kmod initramfs-tools linux-image-cloud-amd64
    e2fsprogs iproute2 procps redis-server coreutils
)
# Modules in GRUB's core.img: enough to read ext4 on an MBR disk via BIOS
# and boot Linux without loading anything else from disk.
readonly GRUB_MODULES=(biosdisk part_msdos ext2 linux normal search search_fs_uuid echo test)
readonly GRUB_DIR=/usr/lib/grub/i386-pc

log() { echo "guest/disk/build-disk.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $# -eq 1 ]] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
DISK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GUEST_DIR=$(dirname "$DISK_DIR")
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
readonly IMAGE=$OUT/debian.qcow2

inputs_hash() {
    {
        cat "$DISK_DIR"/* "$GUEST_DIR"/memverify.c "$GUEST_DIR"/memtouch.c "$GUEST_DIR"/guest_common.h "$GUEST_DIR"/redis.sh
        cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null || true
    } | sha256sum | cut -d' ' -f1
}

up_to_date() {
    [[ -f $IMAGE && -f $IMAGE.inputs && $(cat "$IMAGE.inputs") == "$(inputs_hash)" ]]
}

check_tools() {
    [[ $(id -u) -eq 0 ]] || die "needs root (mmdebstrap root mode, chroot); run as root"
    local t
    for t in mmdebstrap mkfs.ext4 sfdisk qemu-img grub-mkimage gcc; do
        command -v "$t" >/dev/null || die "$t missing (scripts/install-deps installs it)"
    done
    [[ -f $GRUB_DIR/boot.img ]] || die "$GRUB_DIR/boot.img missing (install grub-pc-bin)"
}

# The host's apt sources (the only network allowed is its mirror).
apt_sources() {
    local f
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list; do
        [[ -s $f ]] && { echo "$f"; return; }
    done
    die "no apt sources on this host"
}

build_rootfs() {
    local root=$1
    gcc "${CFLAGS[@]}" -o "$TMP/memverify" "$GUEST_DIR/memverify.c"
    gcc "${CFLAGS[@]}" -o "$TMP/memtouch" "$GUEST_DIR/memtouch.c" -lm
    local include
    include=$(IFS=,; echo "${PACKAGES[*]}")
    # Docs, man pages and locales are a third of the image and never read.
    mmdebstrap --mode=root --variant=minbase --include="$include" \
        --aptopt='Acquire::Languages "none"' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --customize-hook="install -m 0755 '$TMP/memverify' '$TMP/memtouch' \"\$1/usr/local/bin/\"" \
        --customize-hook="install -m 0755 '$DISK_DIR/agile-workload' '$DISK_DIR/diskverify' \"\$1/usr/local/bin/\"" \
        --customize-hook="install -m 0644 '$DISK_DIR/agile-workload.service' \"\$1/etc/systemd/system/\"" \
        --customize-hook="install -m 0755 '$GUEST_DIR/redis.sh' \"\$1/usr/local/bin/agile-redis\"" \
        --customize-hook="install -m 0755 '$DISK_DIR/agile-net' \"\$1/usr/bin/agile-net\"" \
        --customize-hook='chroot "$1" systemctl enable agile-workload.service' \
        --customize-hook='chroot "$1" systemctl mask redis-server.service serial-getty@ttyS0.service' \
        --customize-hook='echo agile-guest >"$1/etc/hostname"' \
        --customize-hook='rm -f "$1/etc/machine-id"; : >"$1/etc/machine-id"' \
        "$SUITE" "$root" "$(apt_sources)" >&2
}

# Writes GRUB (boot.img in the MBR, core.img right after it) and its config.
install_grub() {
    local raw=$1 root=$2 uuid=$3
    local release
    release=$(cd "$root/boot" && ls vmlinuz-* | sed 's/^vmlinuz-//' | sort -V | tail -n 1)
    [[ -n $release && -f $root/boot/initrd.img-$release ]] || die "no kernel+initrd in the rootfs's /boot"
    cat >"$TMP/grub.cfg" <<CFG
set timeout=0
search --no-floppy --fs-uuid --set=root $uuid
linux /boot/vmlinuz-$release root=UUID=$uuid ro console=ttyS0,115200 quiet panic=-1 systemd.show_status=false
initrd /boot/initrd.img-$release
boot
CFG
    grub-mkimage -O i386-pc -o "$TMP/core.img" -c "$TMP/grub.cfg" -p '(hd0,msdos1)/boot/grub' "${GRUB_MODULES[@]}"
    local core_sectors=$(( ($(stat -c %s "$TMP/core.img") + 511) / 512 ))
    (( core_sectors < PART_START - 1 )) || die "core.img ($core_sectors sectors) does not fit before the partition"
    # boot.img's code only (440 bytes): the partition table after it stays.
    # Its kernel_sector (1) and diskboot's blocklist (written by grub-mkimage)
    # already point at core.img in sector 1, as grub-bios-setup would set them.
    dd if="$GRUB_DIR/boot.img" of="$raw" bs=440 count=1 conv=notrunc status=none
    dd if="$TMP/core.img" of="$raw" bs=512 seek=1 conv=notrunc status=none
    echo "$release" >"$TMP/release"
}

main() {
    up_to_date && { log "up to date: $IMAGE"; return; }
    exec 9>"$OUT/.disk.lock"
    flock 9
    up_to_date && { log "up to date: $IMAGE"; return; }
    check_tools
    local hash
    hash=$(inputs_hash)
    TMP=$(mktemp -d "$OUT/.disk.XXXXXX")
    trap 'rm -rf "$TMP"' EXIT

    local root=$TMP/root uuid
    uuid=$(cat /proc/sys/kernel/random/uuid)
    build_rootfs "$root"
    cat >"$root/etc/fstab" <<FSTAB
UUID=$uuid / ext4 errors=remount-ro 0 1
FSTAB

    local raw=$TMP/disk.raw part_mib=$((IMAGE_MIB - 1))
    truncate -s "${IMAGE_MIB}M" "$raw"
    echo "label: dos
start=$PART_START, type=83, bootable" | sfdisk -q "$raw"
    # GRUB 2.06 cannot read ext4's metadata_csum_seed and orphan_file
    # (e2fsprogs 1.47 defaults): leave them out.
    mkfs.ext4 -q -F -L agile-root -U "$uuid" -O ^metadata_csum_seed,^orphan_file \
        -d "$root" "$TMP/part.raw" "${part_mib}M"
    dd if="$TMP/part.raw" of="$raw" bs=1M seek=1 conv=notrunc,sparse status=none
    install_grub "$raw" "$root" "$uuid"
    qemu-img convert -f raw -O qcow2 "$raw" "$TMP/debian.qcow2"

    mv -f "$TMP/debian.qcow2" "$IMAGE"
    echo "$hash" >"$IMAGE.inputs"
    log "built $IMAGE (kernel $(cat "$TMP/release"), $(du -m "$IMAGE" | cut -f1) MiB)"
}

main
