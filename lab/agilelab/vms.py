"""VMs in the lab: their address on the lab segment (the same on every host),
their tap in a host's bridge, and starting them under a host's agiled."""
import ipaddress

from .config import VM_IP_FIRST, VM_IP_LAST, VM_MAC_PREFIX, VM_RE
from .state import agiled_url
from .util import LabError, run


def vm_net(st, name):
    """The VM's address on the lab segment (allocated once, kept for its life,
    so it is the same on every host): ip, mac, tap name."""
    if not VM_RE.match(name):
        raise LabError(f"bad VM name '{name}'")
    vms = st.setdefault("vms", {})
    if name in vms:
        return vms[name]
    used = {v["ip"] for v in vms.values()}
    net = ipaddress.ip_network(st["subnet"])
    for octet in range(VM_IP_FIRST, VM_IP_LAST + 1):
        ip = str(net.network_address + octet)
        if ip not in used:
            break
    else:
        raise LabError("no free VM address")
    n3, n4 = (int(x) for x in ip.split(".")[2:])
    v = {"ip": ip, "prefixlen": net.prefixlen, "mac": f"{VM_MAC_PREFIX}:{n3:02x}:{n4:02x}", "tap": f"tap{n4}",
         "taps": []}
    vms[name] = v
    return v


def qemu_net_args(v):
    # romfile= : no iPXE option ROM (nothing to boot from the network; one ROM
    # block less to migrate); must match on both ends of a migration.
    return ["-netdev", f"tap,id=n0,ifname={v['tap']},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac={v['mac']},romfile="]


def make_tap(lab, st, host, name):
    h = lab.host(st, host)
    if h["role"] != "vm":
        raise LabError(f"host '{host}' is not a VM host")
    v = vm_net(st, name)
    ns = h["netns"]
    exists = run(["ip", "-n", ns, "link", "show", "dev", v["tap"]], check=False).returncode == 0
    if not exists:
        run(["ip", "-n", ns, "tuntap", "add", "dev", v["tap"], "mode", "tap"])
        run(["ip", "-n", ns, "link", "set", "dev", v["tap"], "master", h["bridge"]])
        run(["ip", "-n", ns, "link", "set", "dev", v["tap"], "up"])
    if host not in v["taps"]:
        v["taps"].append(host)
    lab.save()
    return v


def remove_tap(lab, st, host, name):
    h = lab.host(st, host)
    v = st.get("vms", {}).get(name)
    if not v:
        raise LabError(f"no VM '{name}' has an address in this lab")
    run(["ip", "-n", h["netns"], "link", "del", "dev", v["tap"]], check=False)
    if host in v["taps"]:
        v["taps"].remove(host)
    lab.save()


def parse_wargs(s):
    out = {}
    for tok in (s or "").split():
        if "=" not in tok or tok.startswith("="):
            raise LabError(f"workload argument '{tok}' is not key=value")
        k, val = tok.split("=", 1)
        out[k] = val
    return out


def workload_args_with_net(workload, wargs, v):
    """redis gets its address from the lab unless the caller gave one."""
    if v and workload == "redis":
        wargs.setdefault("ip", v["ip"])
        wargs.setdefault("prefix", str(v["prefixlen"]))
    return wargs


def start_agile_vm(lab, host, name, memory="512M", vcpus=1, workload="memverify", workload_args="",
                   net=None, stock=False, qemu_args=(), json_out=False, disk_flags=()):
    """`agilectl vm start` on HOST's agiled, with a tap (and, for redis, the
    VM's address) when net (default: only for redis); disk_flags boot it from
    a disk (guestdisk.disk_flags) instead of our kernel. Returns (completed
    agilectl process, the VM's address record or None)."""
    lab.require_up()
    with lab.locked() as st:
        h = lab.host(st, host)
        want_net = net if net is not None else workload == "redis"
        v = make_tap(lab, st, host, name) if want_net else None
        wargs = workload_args_with_net(workload, parse_wargs(workload_args), v)
    ctl = [st["build"]["agilectl"], "-H", agiled_url(h)]
    argv = ctl + ["vm", "start", name, "--memory", memory, "--vcpus", str(vcpus)]
    if stock:
        argv.append("--stock")  # agiled's own stock VM (anonymous RAM it does not own)
    argv += list(disk_flags)
    qargs = (qemu_net_args(v) if v else []) + list(qemu_args or [])
    argv += ["--workload", workload, "--workload-args", " ".join(f"{k}={x}" for k, x in sorted(wargs.items()))]
    argv += [f"--qemu-arg={a}" for a in qargs]
    if json_out:
        argv.insert(len(ctl), "--json")
    return run(argv, check=False), v
