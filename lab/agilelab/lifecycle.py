"""up and down: everything `up` creates is recorded in the state first, so
`down` removes exactly that, also after a crash half-way through `up`."""
import argparse
import contextlib
import errno
import os
import shutil
import signal
import time

from .cgroups import Cgroups
from .config import (AGILED_SHM_ROOT, AGILED_STOP_TIMEOUT_S, DEFAULT_BANDWIDTH, DEFAULT_BUILD, DEFAULT_HOST_MEM,
                     DEFAULT_MEMD_CAPACITY, DEFAULT_STORE, DEFAULT_SUBNET, DEFAULT_SWAP, DEFAULT_SWAP_PRIORITY, DEFAULT_VM_HOSTS,
                     MEMD_DATA_DIR, PROC_SWAPS, SHM_ROOT, STATE_ROOT, SWAP_ROOT)
from .daemons import up_daemons
from .guestdisk import remove_disks
from .netns import netns_exists, netns_list, netns_pids
from .procs import alive, kill_rec, wait_gone
from .state import Lab
from .swap import up_swap
from .topology import plan, up_cgroups, up_network
from .util import LabError, log, open_or_empty, parse_size, run


def fault_point(step):
    """For tests of the cleanup paths: AGILE_LAB_FAIL_AT=<step> makes up fail
    after that step (and clean up); AGILE_LAB_CRASH_AT=<step> makes it die on
    the spot, as a kill -9 would, leaving the rest to `down`."""
    if os.environ.get("AGILE_LAB_CRASH_AT") == step:
        log(f"AGILE_LAB_CRASH_AT={step}: dying without cleanup")
        os._exit(99)
    if os.environ.get("AGILE_LAB_FAIL_AT") == step:
        raise LabError(f"AGILE_LAB_FAIL_AT={step}: injected failure")


def up(args):
    """Creates the lab args describes (the `up` options); returns the Lab."""
    lab = Lab(args.prefix)
    if os.geteuid() != 0:
        raise LabError("must run as root (namespaces, cgroups, swap)")
    for tool in ("ip", "tc", "mkswap", "swapon", "swapoff", "sysctl"):
        if not shutil.which(tool):
            raise LabError(f"'{tool}' not found (scripts/install-deps installs iproute2, util-linux, procps)")
    leftovers = [n for n in netns_list() if n.startswith(lab.prefix + "-")]
    if os.path.exists(lab.state_file) or leftovers:
        raise LabError(f"lab '{lab.prefix}' exists or left things behind ({lab.state_file}"
                       f"{', namespaces ' + ' '.join(leftovers) if leftovers else ''}); "
                       f"run `agile-lab down --prefix {lab.prefix}` first")
    t0 = time.monotonic()
    planned = plan(lab, args)  # validates everything before anything is made
    others = [line.split()[0] for line in open_or_empty(PROC_SWAPS).splitlines()[1:]]
    if others and parse_size(args.swap) > 0:
        log(f"warning: swap is global; other swap areas are active ({', '.join(others)}): this lab's hosts "
            "may swap into them and other processes into this lab's files")
    with lab.locked():
        lab.state = planned
        lab.save()
        try:
            for step, fn in (("network", up_network), ("cgroups", up_cgroups), ("swap", up_swap),
                             ("daemons", lambda lab, st: up_daemons(lab, st, args))):
                fn(lab, lab.state)
                fault_point(step)
            lab.state["phase"] = "up"
            lab.save()
        except BaseException as e:  # includes KeyboardInterrupt: never leave half a lab
            lab.state["phase"] = "failed"
            lab.save()
            log(f"up failed: {e}; removing what was created")
            teardown(lab, lab.state)
            if isinstance(e, LabError):
                raise
            raise LabError(f"up failed: {e!r}") from e
    st = lab.state
    log(f"lab '{lab.prefix}' up in {time.monotonic() - t0:.1f} s: {len(st['hosts'])} hosts on {st['subnet']}, "
        f"links {st['bandwidth']}")
    return lab


def _stop_processes(lab, st, removed, failed):
    hosts = st.get("hosts", {})
    # agiled first, politely: it stops its VMs and frees their RAM.
    daemons = [h.get("agiled") for h in hosts.values() if h.get("agiled")]
    for rec in daemons:
        if alive(rec):
            removed.append(f"process {rec['pid']} (agiled, SIGTERM: stops its VMs)")
        kill_rec(rec, signal.SIGTERM)
    if daemons and not wait_gone(daemons, AGILED_STOP_TIMEOUT_S):
        log(f"agiled did not stop within {AGILED_STOP_TIMEOUT_S} s; killing")
    # Labs made before the stock-vm command was removed may still list stock QEMUs.
    recs = daemons + [h.get("memd") for h in hosts.values() if h.get("memd")] + \
        [r for h in hosts.values() for r in h.get("redis") or []] + [v for v in st.get("stock", {}).values()]
    for rec in recs:
        if alive(rec):
            removed.append(f"process {rec['pid']} ({os.path.basename(rec['argv'][0])}, SIGKILL)")
        kill_rec(rec, signal.SIGKILL)
    # Then everything left in our cgroups and our namespaces: only our
    # processes (and their children) can be there.
    try:
        cg = Cgroups(st.get("cgroup_version"))
    except LabError:
        cg = None
    cg_root = st.get("cgroup_root") or (cg.path(lab.prefix) if cg else None)
    namespaces = set(st.get("netns_created", [])) | {n for n in netns_list() if n.startswith(lab.prefix + "-")}
    for attempt in range(50):
        pids = set(Cgroups.procs(cg_root)) if cg_root and os.path.isdir(cg_root) else set()
        for ns in namespaces:
            if netns_exists(ns):
                pids |= set(netns_pids(ns))
        pids.discard(os.getpid())
        if not pids:
            break
        for pid in pids:
            if attempt == 0:
                removed.append(f"process {pid} ({open_or_empty(f'/proc/{pid}/comm').strip()})")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    else:
        failed.append(f"processes still running: {sorted(pids)}")
    return cg_root, namespaces


def _remove_swap(lab, st, removed, failed):
    """swapoff brings pages back into RAM, then the files go."""
    hosts = st.get("hosts", {})
    swap_files = {h["swap"]["file"] for h in hosts.values() if h.get("swap")}
    swap_dir = st.get("swap_dir") or lab.swap_dir
    for line in open_or_empty(PROC_SWAPS).splitlines()[1:]:
        f = line.split()[0].replace("\\040", " ")
        if f.startswith(swap_dir.rstrip("/") + "/"):
            swap_files.add(f)
    active = {line.split()[0] for line in open_or_empty(PROC_SWAPS).splitlines()[1:]}
    for f in sorted(swap_files):
        if f in active:
            r = run(["swapoff", f], check=False)
            if r.returncode == 0:
                removed.append(f"swap {f} (swapoff)")
            else:
                failed.append(f"swapoff {f}: {r.stderr.strip()}")
                continue
        if os.path.exists(f):
            os.unlink(f)
            removed.append(f"file {f}")
    if os.path.isdir(swap_dir):
        for f in os.listdir(swap_dir):
            p = os.path.join(swap_dir, f)
            if f.endswith(".swap") and p not in active:
                os.unlink(p)
                removed.append(f"file {p}")
        with contextlib.suppress(OSError):
            os.rmdir(swap_dir)
        with contextlib.suppress(OSError):
            os.rmdir(SWAP_ROOT)


def _remove_namespaces(namespaces, removed, failed):
    """Deleting a namespace destroys every interface in it (veth ends,
    bridges, taps) with their qdiscs; a veth pair dies with either end."""
    for ns in sorted(namespaces):
        if not netns_exists(ns):
            continue
        r = run(["ip", "netns", "del", ns], check=False)
        if r.returncode == 0:
            removed.append(f"netns {ns}")
        else:
            failed.append(f"ip netns del {ns}: {r.stderr.strip()}")


def _remove_cgroups(cg_root, removed, failed):
    """Children first. rmdir can fail briefly while the last killed process
    is being reaped."""
    if not (cg_root and os.path.isdir(cg_root)):
        return
    dirs = [d for d, _, _ in os.walk(cg_root)]
    for d in sorted(dirs, key=len, reverse=True):
        for _ in range(50):
            try:
                os.rmdir(d)
                removed.append(f"cgroup {d}")
                break
            except OSError as e:
                if e.errno != errno.EBUSY:
                    failed.append(f"rmdir {d}: {e}")
                    break
                time.sleep(0.1)
        else:
            failed.append(f"rmdir {d}: busy")


def _remove_guest_ram(lab, st, removed):
    """agiled's <AGILED_SHM_ROOT>/<prefix>-<host> (it removes it itself on a
    clean stop) and the lab's own shm dir."""
    shm = [os.path.join(AGILED_SHM_ROOT, f"{lab.prefix}-{h}") for h in st.get("hosts", {})]
    with contextlib.suppress(OSError):
        shm += [os.path.join(AGILED_SHM_ROOT, d) for d in os.listdir(AGILED_SHM_ROOT)
                if d.startswith(lab.prefix + "-")]
    for d in sorted(set(shm)) + [st.get("shm_dir") or lab.shm_dir]:
        if os.path.isdir(d):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(f"dir {d}")
    with contextlib.suppress(OSError):
        os.rmdir(SHM_ROOT)


def teardown(lab, st, quiet=False):
    """Removes everything of this prefix: what the state names and whatever
    matches the lab's naming (namespaces <prefix>-*, the cgroup <prefix>,
    swap files under the lab's swap dir). Best effort; returns the list of
    things removed and the list of failures."""
    removed, failed = [], []
    st = st or {}
    cg_root, namespaces = _stop_processes(lab, st, removed, failed)
    _remove_swap(lab, st, removed, failed)
    _remove_namespaces(namespaces, removed, failed)
    _remove_cgroups(cg_root, removed, failed)
    _remove_guest_ram(lab, st, removed)
    remove_disks(lab.prefix, removed)
    # The state dir (logs included) last: while it exists, down can be rerun.
    if not failed and os.path.isdir(lab.dir):
        had_state = any(f != ".lock" for f in os.listdir(lab.dir))
        shutil.rmtree(lab.dir, ignore_errors=True)
        if had_state:
            removed.append(f"dir {lab.dir}")
    if not quiet:
        for r in removed:
            log(f"removed {r}")
        for f in failed:
            log(f"FAILED to remove: {f}")
    return removed, failed


def up_options(prefix, **overrides):
    """The options of `agile-lab up` (its defaults, then overrides), for
    callers that make a lab without the command line (the experiment)."""
    o = argparse.Namespace(prefix=prefix, hosts=DEFAULT_VM_HOSTS, bandwidth=DEFAULT_BANDWIDTH,
                           host_mem=DEFAULT_HOST_MEM, swap=DEFAULT_SWAP, swap_priority=DEFAULT_SWAP_PRIORITY,
                           subnet=DEFAULT_SUBNET, memd_capacity=DEFAULT_MEMD_CAPACITY, build=DEFAULT_BUILD,
                           host_budget=None, memd_data_dir=False, agiled_args=(), store=DEFAULT_STORE)
    for k, v in overrides.items():
        if not hasattr(o, k):
            raise TypeError(f"up has no option {k}")
        setattr(o, k, v)
    return o


def down(prefix, keep_logs=None, quiet=False):
    """Removes the lab `prefix` (idempotent); raises LabError if anything is
    left. quiet: only failures are logged, not each thing removed."""
    lab = Lab(prefix)
    if os.geteuid() != 0:
        raise LabError("must run as root")
    os.makedirs(lab.dir, exist_ok=True)
    with lab.locked() as st:
        if keep_logs and os.path.isdir(lab.dir):
            shutil.copytree(lab.dir, keep_logs, dirs_exist_ok=True,
                            # No secrets in a results folder: private keys, the Redis passwords.
                            ignore=shutil.ignore_patterns("*.sock", ".lock", "*.tmp", MEMD_DATA_DIR, "*-key.pem",
                                                          "*.password", "admin.conf"))
            log(f"logs copied to {keep_logs}")
        removed, failed = teardown(lab, st, quiet=quiet)
    if quiet:
        for f in failed:
            log(f"FAILED to remove: {f}")
    elif not removed and not failed:
        log(f"lab '{lab.prefix}': nothing to remove")
    elif not failed:
        log(f"lab '{lab.prefix}' down: {len(removed)} things removed")
    if failed:
        raise LabError(f"{len(failed)} things could not be removed (see above); rerun `agile-lab down --prefix {lab.prefix}`")
    # The dir may have been recreated by locked(); remove it if empty.
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(lab.dir, ".lock"))
        os.rmdir(lab.dir)
    with contextlib.suppress(OSError):
        os.rmdir(STATE_ROOT)
