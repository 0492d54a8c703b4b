"""The lab's daemons: the swap store on the memd host (agile-memd, or a Redis
Cluster with `--store redis-cluster`), an agiled on every VM host."""
import os

import signal

from .config import (AGILED_PORT, DAEMON_START_TIMEOUT_S, MEMD_DATA_DIR, MEMD_HOST, MEMD_METRICS, MEMD_PORT,
                     REDIS_PKI_NAME)
from .redis_cluster import store_url, up_redis
from .procs import kill_rec, listening, spawn, wait_for, wait_gone
from .state import agiled_socket
from .util import LabError, run


def build_paths(build_dir):
    b = os.path.realpath(build_dir)
    return {
        "build": b,
        "agiled": os.path.join(b, "bin", "agiled"),
        "agilectl": os.path.join(b, "bin", "agilectl"),
        "memd": os.path.join(b, "bin", "agile-memd"),
        "loadgen": os.path.join(b, "bin", "agile-loadgen"),
        "guest": os.path.join(b, "guest"),
    }


AGILE_PKI = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         "scripts", "agile-pki")


def make_pki(lab, st):
    """A CA for this lab and a --tls-dir per daemon (docs/security.md): every
    TCP link of the lab (migration, agile-memd) is mutual TLS."""
    pki = os.path.join(lab.dir, "pki")
    # Each certificate also names the address peers dial (clients check it).
    names = [f'{h["agiled_id"]}={h["ip"]}' for h in st["hosts"].values() if h["role"] == "vm"]
    names.append(f'{MEMD_HOST}={st["hosts"][MEMD_HOST]["ip"]}')
    if st.get("store") == "redis-cluster":
        names.append(f'{REDIS_PKI_NAME}={st["hosts"][MEMD_HOST]["ip"]}')
    run([AGILE_PKI, pki] + names)
    return pki


def agiled_has_host_budget(agiled):
    return "--host-budget" in run([agiled, "--help"], check=False).stdout


def up_daemons(lab, st, args):
    b = st["build"]
    for f in ("agiled", "agilectl", "memd"):
        if not os.access(b[f], os.X_OK):
            raise LabError(f"missing {b[f]} (run `make`, or pass --build)")
    for f in ("vmlinuz", "initrd.img"):
        if not os.path.exists(os.path.join(b["guest"], f)):
            raise LabError(f"missing {b['guest']}/{f} (run `make`)")
    pki = make_pki(lab, st)
    st["pki"] = pki
    m = st["hosts"][MEMD_HOST]
    vm_hosts = [h for h in st["hosts"].values() if h["role"] == "vm"]
    if st.get("store") == "redis-cluster":
        passwords = up_redis(lab, st, m, os.path.join(pki, REDIS_PKI_NAME), vm_hosts, DAEMON_START_TIMEOUT_S)
        # The same seeds for every agiled (a migration's two ends must name one store), each its own user.
        store = {h["agiled_id"]: store_url(m["ip"], passwords[h["agiled_id"]]) for h in vm_hosts}
    else:
        up_memd(lab, st, m, pki, args)
        store = {h["agiled_id"]: "memd://" + st["memd_addr"] for h in vm_hosts}
    for name, h in st["hosts"].items():
        if h["role"] != "vm":
            continue
        argv = [b["agiled"], "--state-dir", h["state_dir"], "--id", h["agiled_id"], "--listen", h["listen"],
                "--store", store[h["agiled_id"]], "--guest-dir", b["guest"],
                "--tls-dir", os.path.join(pki, h["agiled_id"])]
        if getattr(args, "host_budget", None):
            if not agiled_has_host_budget(b["agiled"]):
                raise LabError("--host-budget: this agiled has no --host-budget (advance offloading) yet")
            argv += ["--host-budget", args.host_budget]
        argv += list(getattr(args, "agiled_args", None) or [])
        h["agiled"] = spawn(argv, h["netns"], h["cgroup"], os.path.join(h["state_dir"], "agiled.log"))
        lab.save()
    for name, h in st["hosts"].items():
        if h["role"] == "vm":
            sock = agiled_socket(h)
            wait_for(lambda: os.path.exists(sock) and listening(h["agiled"]["pid"], AGILED_PORT),
                     DAEMON_START_TIMEOUT_S, f"agiled on {name}", h["agiled"])


def up_memd(lab, st, m, pki, args):
    b = st["build"]
    argv = [b["memd"], "--listen", m["listen"], "--capacity", args.memd_capacity,
            "--tls-dir", os.path.join(pki, MEMD_HOST), "--metrics-listen", MEMD_METRICS]
    if getattr(args, "memd_data_dir", False):
        # Pages survive a restart of agile-memd (the soak kills it); in the lab's dir, so `down` removes them.
        argv += ["--data-dir", os.path.join(lab.dir, MEMD_DATA_DIR)]
    m["memd"] = spawn(argv, m["netns"], m["cgroup"], os.path.join(lab.dir, MEMD_HOST, "agile-memd.log"))
    lab.save()
    wait_for(lambda: listening(m["memd"]["pid"], MEMD_PORT), DAEMON_START_TIMEOUT_S, "agile-memd", m["memd"])


def daemon_rec(st, host):
    h = st["hosts"][host]
    return h.get("agiled") or h.get("memd")


def kill_daemon(lab, host):
    """kill -9 of HOST's daemon (agiled, or agile-memd on the memd host); its QEMUs live on (own session)."""
    st = lab.require_up()
    rec = daemon_rec(st, host)
    kill_rec(rec, signal.SIGKILL)
    if not wait_gone([rec], 10):
        raise LabError(f"{host}'s daemon (pid {rec['pid']}) survived SIGKILL for 10 s")


def restart_daemon(lab, host):
    """Starts HOST's daemon again with the very command line it had (same state dir, data dir, id) and waits
    until it listens: agiled re-adopts its VMs first, then listens (docs/invariants.md)."""
    with lab.locked() as st:
        h = st["hosts"][host]
        key = "agiled" if h.get("agiled") else "memd"
        old = h[key]
        rec = spawn(old["argv"], h["netns"], h["cgroup"], old["log"])
        h[key] = rec
        lab.save()
    port = AGILED_PORT if key == "agiled" else MEMD_PORT
    wait_for(lambda: listening(rec["pid"], port), DAEMON_START_TIMEOUT_S * 4, f"{key} on {host} (restart)", rec)
    if key == "agiled":
        # The TCP port is bound before re-adoption ends; the control socket answers only after it. A caller
        # that asked before would take every VM of the host for gone.
        ctl = [st["build"]["agilectl"], "-H", "unix:" + agiled_socket(h), "host", "info"]
        wait_for(lambda: run(ctl, check=False).returncode == 0, DAEMON_START_TIMEOUT_S * 8,
                 f"agiled on {host} answering (restart)", rec)
    return rec
