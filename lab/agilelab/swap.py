"""The VM hosts' swap files."""
import contextlib
import os

from .util import fmt_size, log, run


def make_swapfile(path, size):
    """A swap file of size bytes, preallocated (no holes: swapon refuses them)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)
    run(["mkswap", "-q", path])


def up_swap(lab, st):
    for name, h in st["hosts"].items():
        sw = h.get("swap")
        if not sw:
            continue
        make_swapfile(sw["file"], sw["bytes"])
        r = run(["swapon", "-p", str(sw["priority"]), sw["file"]], check=False)
        if r.returncode != 0:
            # Some filesystems refuse preallocated (unwritten) extents: write it out.
            log(f"swapon of a preallocated file failed ({r.stderr.strip()}); writing {fmt_size(sw['bytes'])} of zeros")
            os.unlink(sw["file"])
            run(["dd", "if=/dev/zero", f"of={sw['file']}", "bs=1M", f"count={sw['bytes'] >> 20}", "status=none"])
            os.chmod(sw["file"], 0o600)
            run(["mkswap", "-q", sw["file"]])
            run(["swapon", "-p", str(sw["priority"]), sw["file"]])
        sw["active"] = True
        lab.save()
