"""--guest disk: lab VMs that boot from the project's Debian image
(build/guest/debian.qcow2, `make guest-disk`) instead of our kernel+initramfs.

The lab's hosts are namespaces of one machine, so one directory is storage
every host sees, as a NAS would be for real hosts: <DISK_ROOT>/<prefix>/.
Each VM gets its own qcow2 overlay there whose backing file is the image, so
the image stays read-only (QEMU opens backing files read-only) and runs do
not see each other's writes. A migration's destination opens the same
overlay (agiled's shared-storage default, docs/vms.md); `down` removes the
directory with the rest of the lab.
"""
import os
import shutil

from .config import DISK_IMAGE, DISK_ROOT, GUESTS
from .util import LabError, run

# What `agilectl vm start` needs on top of a kernel guest's flags. writeback:
# both hosts' QEMUs use the one page cache of this machine; real hosts sharing
# an image over a network filesystem would use cache=none (docs/vms.md).
DISK_CACHE = "writeback"
# Debian with systemd needs this much of the VM's memory besides its workload
# (the same figure agiled's spec check uses, src/qemu/launch.cc).
DISK_GUEST_OS_MIB = 160
# Boot to the workload: ~90 s for one disk guest alone under TCG, longer
# beside the experiment's other guests on 2 shared cores (docs/vms.md).
BOOT_TIMEOUT_S = {"kernel": 180, "disk": 600}


def check_guest(guest):
    if guest not in GUESTS:
        raise LabError(f"--guest {guest}: want one of {', '.join(GUESTS)}")
    return guest


def base_image(build):
    """The image every disk VM's overlay is backed by; a clear error when it has not been built."""
    path = os.path.join(os.path.abspath(build), "guest", DISK_IMAGE)
    if not os.path.isfile(path):
        raise LabError(f"{path} is missing: build it with `make guest-disk` (guest/disk/build-disk.sh)")
    return path


def image_stamp(path):
    """Which image a report was made with: its path, size and build-input hash (debian.qcow2.inputs,
    written by build-disk.sh: the same hash means the same guest/disk sources and apt sources)."""
    try:
        with open(path + ".inputs") as f:
            inputs = f.read().strip() or None
    except OSError:
        inputs = None
    return {"image": path, "image_bytes": os.path.getsize(path), "image_inputs_sha256": inputs}


def disk_dir(prefix):
    return os.path.join(DISK_ROOT, prefix)


def overlay_path(prefix, vm):
    return os.path.join(disk_dir(prefix), f"{vm}.qcow2")


def overlay_argv(base, path):
    """qemu-img's command for a fresh overlay of base (its format given, so QEMU does not probe it)."""
    return ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, path]


def make_overlay(prefix, vm, base):
    """A fresh overlay for vm (a VM started again starts from the image again); returns its path."""
    os.makedirs(disk_dir(prefix), exist_ok=True)
    path = overlay_path(prefix, vm)
    if os.path.exists(path):
        os.unlink(path)
    run(overlay_argv(base, path))
    return path


def disk_flags(path):
    """agilectl vm start's flags for a VM booting from the overlay at path."""
    return ["--disk", f"{path},format=qcow2,cache={DISK_CACHE}", "--boot", "disk"]


def check_memory(guest, vm_mib):
    """A disk guest's memory must hold Debian besides the workload (redis's data needs some tens of MiB)."""
    if guest == "disk" and vm_mib < DISK_GUEST_OS_MIB + 64:
        raise LabError(f"--guest disk needs VMs of at least {DISK_GUEST_OS_MIB + 64} MiB "
                       f"(Debian with systemd ~{DISK_GUEST_OS_MIB} MiB besides redis), not {vm_mib} MiB")


def remove_disks(prefix, removed):
    """`down`: the lab's overlays (the base image is never touched)."""
    d = disk_dir(prefix)
    if os.path.isdir(d):
        shutil.rmtree(d, ignore_errors=True)
        removed.append(f"dir {d}")
    try:
        os.rmdir(DISK_ROOT)
    except OSError:
        pass


def guest_stamp(guest, image, disk_vm):
    """summary.json's stamp.guest: which guest the redis VM ran (the report says it beside the setup)."""
    if guest != "disk":
        return {"kind": "kernel", "boot": "our kernel+initramfs (build/guest/vmlinuz, initrd.img)"}
    return {"kind": "disk", "boot": "firmware (SeaBIOS -> GRUB -> Debian cloud kernel -> systemd)",
            "disk_vms": [disk_vm], **image_stamp(image)}
