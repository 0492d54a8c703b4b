#!/usr/bin/env python3
"""lab/agilelab/guestdisk.py (agile-lab experiment --guest disk): the per-VM
qcow2 overlays made by the real qemu-img on a real (tiny) base image, the
flags agilectl gets, the option defaults, the checks that fail before a lab
comes up, the report's guest stamp, and `down` removing the overlays.
ctest: lab_guestdisk."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lab"))
from agilelab import guestdisk  # noqa: E402
from agilelab.experiment import options  # noqa: E402
from agilelab.stamp import stamp_lines  # noqa: E402
from agilelab.util import LabError  # noqa: E402


def qemu_img_info(path):
    p = subprocess.run(["qemu-img", "info", "--output=json", "-U", path], capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


class GuestDisk(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="lab-guestdisk-")
        self.addCleanup(self.tmp.cleanup)
        # The lab's shared-storage root, redirected into the test's own directory.
        self.root = os.path.join(self.tmp.name, "disks")
        self._saved_root = guestdisk.DISK_ROOT
        guestdisk.DISK_ROOT = self.root
        self.addCleanup(setattr, guestdisk, "DISK_ROOT", self._saved_root)
        self.build = os.path.join(self.tmp.name, "build")
        os.makedirs(os.path.join(self.build, "guest"))
        self.image = os.path.join(self.build, "guest", "debian.qcow2")

    def make_base(self):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", self.image, "8M"], check=True)
        with open(self.image + ".inputs", "w") as f:
            f.write("ab" * 32 + "\n")

    def test_missing_image_says_how_to_build_it(self):
        with self.assertRaises(LabError) as e:
            guestdisk.base_image(self.build)
        self.assertIn("make guest-disk", str(e.exception))
        self.make_base()
        self.assertEqual(guestdisk.base_image(self.build), self.image)

    def test_overlay_is_backed_by_the_image_which_stays_untouched(self):
        self.make_base()
        before = os.stat(self.image)
        path = guestdisk.make_overlay("labdisk", "mig", self.image)
        self.assertEqual(path, os.path.join(self.root, "labdisk", "mig.qcow2"))
        info = qemu_img_info(path)
        self.assertEqual(info["format"], "qcow2")
        self.assertEqual(info["backing-filename"], self.image)
        self.assertEqual(info.get("backing-filename-format"), "qcow2")
        self.assertEqual(info["virtual-size"], 8 << 20)
        # A VM started again gets a fresh overlay, not the last run's writes.
        with open(path, "ab") as f:
            f.write(b"\0" * 65536)
        grown = os.path.getsize(path)
        path2 = guestdisk.make_overlay("labdisk", "mig", self.image)
        self.assertEqual(path2, path)
        self.assertLess(os.path.getsize(path), grown)
        after = os.stat(self.image)
        self.assertEqual((before.st_size, before.st_mtime_ns), (after.st_size, after.st_mtime_ns))

    def test_agilectl_flags_boot_the_overlay(self):
        self.assertEqual(guestdisk.disk_flags("/s/mig.qcow2"),
                         ["--disk", "/s/mig.qcow2,format=qcow2,cache=writeback", "--boot", "disk"])
        self.assertEqual(guestdisk.overlay_argv("/b.qcow2", "/s/o.qcow2"),
                         ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "/b.qcow2", "/s/o.qcow2"])

    def test_memory_check(self):
        guestdisk.check_memory("kernel", 128)
        guestdisk.check_memory("disk", 256)
        with self.assertRaises(LabError) as e:
            guestdisk.check_memory("disk", 192)
        self.assertIn("at least 224 MiB", str(e.exception))
        with self.assertRaises(LabError):
            guestdisk.check_guest("cloud")

    def test_down_removes_the_overlays_only(self):
        self.make_base()
        guestdisk.make_overlay("labdisk", "mig", self.image)
        guestdisk.make_overlay("other", "mig", self.image)
        removed = []
        guestdisk.remove_disks("labdisk", removed)
        self.assertEqual(removed, [f"dir {os.path.join(self.root, 'labdisk')}"])
        self.assertFalse(os.path.exists(os.path.join(self.root, "labdisk")))
        self.assertTrue(os.path.exists(os.path.join(self.root, "other", "mig.qcow2")))
        self.assertTrue(os.path.isfile(self.image))
        removed = []
        guestdisk.remove_disks("labdisk", removed)  # idempotent
        self.assertEqual(removed, [])

    def test_stamp_names_the_guest(self):
        self.make_base()
        g = guestdisk.guest_stamp("disk", self.image, "mig")
        self.assertEqual(g["kind"], "disk")
        self.assertEqual(g["image_inputs_sha256"], "ab" * 32)
        self.assertEqual(g["disk_vms"], ["mig"])
        text = "\n".join(stamp_lines({"date": "d", "git_commit": "c" * 40, "guest": g}))
        self.assertIn("Guest: disk (`--guest disk`): `mig` booted by firmware", text)
        self.assertIn(self.image, text)
        self.assertIn("abababababab", text)
        text = "\n".join(stamp_lines({"date": "d", "guest": guestdisk.guest_stamp("kernel", None, "mig")}))
        self.assertIn("Guest: kernel", text)
        # Reports from before the stamp had a guest: no line, nothing else changes.
        self.assertNotIn("Guest", "\n".join(stamp_lines({"date": "d"})))

    def test_options(self):
        a = options(["--app", "redis", "--short", "--guest", "disk", "--out", self.tmp.name])
        self.assertEqual((a.guest, a.boot_timeout), ("disk", guestdisk.BOOT_TIMEOUT_S["disk"]))
        a = options(["--app", "redis", "--short", "--guest", "disk", "--boot-timeout", "99"])
        self.assertEqual(a.boot_timeout, 99)
        self.assertTrue(a.out.endswith(os.path.join("results", "app-disk-short")))
        a = options(["--app", "redis", "--short"])
        self.assertEqual((a.guest, a.boot_timeout), ("kernel", 180))
        self.assertTrue(a.out.endswith(os.path.join("results", "app-short")))
        with self.assertRaises(SystemExit):  # the memory experiment has no disk guest
            with open(os.devnull, "w") as devnull:
                saved, sys.stderr = sys.stderr, devnull
                try:
                    options(["--guest", "disk"])
                finally:
                    sys.stderr = saved


if __name__ == "__main__":
    unittest.main()
