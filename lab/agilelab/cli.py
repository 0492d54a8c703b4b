"""The `agile-lab` command line: parses the subcommands and runs them."""
import argparse
import json
import os
import shlex
import sys

from . import util
from .config import (DEFAULT_BANDWIDTH, DEFAULT_BUILD, DEFAULT_HOST_MEM, DEFAULT_MEMD_CAPACITY, DEFAULT_PREFIX, DEFAULT_STORE, STORES,
                     DEFAULT_SUBNET, DEFAULT_SWAP, DEFAULT_SWAP_PRIORITY, DEFAULT_VM_HOSTS, DEFAULT_VM_MEMORY,
                     DEFAULT_WORKLOAD, GUESTS, PREFIX_ENV)
from .guestdisk import base_image, disk_flags, make_overlay
from .lifecycle import down, up
from .procs import enter_host
from .state import Lab, agiled_url
from .status import print_status, status_json
from .util import LabError, log, strip_dashdash
from .vms import make_tap, qemu_net_args, remove_tap, start_agile_vm

DESCRIPTION = "agile-lab: a multi-host testbed for agile on one Linux machine."


def cmd_up(args):
    lab = up(args)
    print_status(lab, lab.state)


def cmd_down(args):
    down(args.prefix, args.keep_logs)


def cmd_status(args):
    lab = Lab(args.prefix)
    st = lab.load()
    if not st:
        raise LabError(f"lab '{lab.prefix}' is not up")
    if args.json:
        print(json.dumps(status_json(lab, st), indent=2))
    else:
        print_status(lab, st)


def cmd_exec(args):
    lab = Lab(args.prefix)
    st = lab.require_up()
    h = lab.host(st, args.host)
    cmd = strip_dashdash(args.cmd)
    if not cmd:
        raise LabError("exec: no command (agile-lab exec HOST -- CMD...)")
    enter_host(h["netns"], h["cgroup"])
    os.environ["AGILE_LAB_HOST"] = args.host
    os.environ[PREFIX_ENV] = lab.prefix
    try:
        os.execvp(cmd[0], cmd)
    except OSError as e:
        raise LabError(f"exec {cmd[0]}: {e.strerror}")


def cmd_ctl(args):
    lab = Lab(args.prefix)
    st = lab.require_up()
    h = lab.host(st, args.host)
    if h["role"] != "vm":
        raise LabError(f"host '{args.host}' runs no agiled")
    argv = [st["build"]["agilectl"], "-H", agiled_url(h)] + strip_dashdash(args.args)
    os.execv(argv[0], argv)


def cmd_tap(args):
    lab = Lab(args.prefix)
    lab.require_up()
    with lab.locked() as st:
        v = make_tap(lab, st, args.host, args.vm)
    out = {"vm": args.vm, "host": args.host, **v, "qemu_args": qemu_net_args(v)}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(" ".join(shlex.quote(a) for a in qemu_net_args(v)))


def cmd_untap(args):
    lab = Lab(args.prefix)
    lab.require_up()
    with lab.locked() as st:
        remove_tap(lab, st, args.host, args.vm)


def cmd_agile_vm(args):
    lab = Lab(args.prefix)
    disk = ()
    if args.guest == "disk":
        lab.require_up()
        disk = disk_flags(make_overlay(lab.prefix, args.name, base_image(args.build)))
    p, v = start_agile_vm(lab, args.host, args.name, memory=args.memory, vcpus=args.vcpus,
                          workload=args.workload, workload_args=args.workload_args, net=args.net,
                          stock=args.stock, qemu_args=args.qemu_arg, json_out=args.json, disk_flags=disk)
    sys.stdout.write(p.stdout)
    sys.stderr.write(p.stderr)
    if p.returncode != 0:
        raise LabError(f"agilectl vm start {args.name} failed")
    if v:
        log(f"vm {args.name} on {args.host}: ip {v['ip']} mac {v['mac']} tap {v['tap']}")


# Commands with a parser of their own (argparse's REMAINDER would not take a first argument that looks like an
# option): `experiment` and `sweep`.
OWN_PARSER = ("experiment", "sweep", "soak")


def run_experiment(argv, cmd="experiment"):
    if cmd == "sweep":
        from .sweep import main as command_main  # matplotlib is only needed here
    elif cmd == "soak":
        from .soak import main as command_main
    else:
        from .experiment import main as command_main
    sys.exit(command_main(argv))


def cmd_experiment(args):
    rest = strip_dashdash(list(args.rest))
    if "--prefix" not in rest and args.prefix != DEFAULT_PREFIX:
        rest = ["--prefix", args.prefix] + rest
    run_experiment(rest, args.cmd)


def experiment_argv(av):
    """`[-v] [--prefix P] experiment|sweep ARGS...`: (the command, its own
    arguments), or None when the command line is something else."""
    i = next((j for j, a in enumerate(av) if a in OWN_PARSER), None)
    if i is None:
        return None
    pre = av[:i]
    if not all(a in ("-v", "--verbose", "--prefix") or (j > 0 and pre[j - 1] == "--prefix") for j, a in enumerate(pre)):
        return None
    rest = av[i + 1:]
    if "--prefix" in pre and "--prefix" not in rest:
        rest = ["--prefix", pre[pre.index("--prefix") + 1]] + rest
    return av[i], rest


def parser():
    default_prefix = os.environ.get(PREFIX_ENV, DEFAULT_PREFIX)
    # --prefix and -v are accepted before or after the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--prefix", default=argparse.SUPPRESS,
                        help=f"lab name: namespaces <prefix>-<host>, cgroup <prefix> (env {PREFIX_ENV}; default {DEFAULT_PREFIX})")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="print every command run")
    ap = argparse.ArgumentParser(prog="agile-lab", description=DESCRIPTION)
    # Own actions (not the shared ones of `common`, whose SUPPRESS default
    # keeps a value given before the command).
    ap.add_argument("--prefix", default=default_prefix,
                    help=f"lab name: namespaces <prefix>-<host>, cgroup <prefix> (env {PREFIX_ENV}; default {DEFAULT_PREFIX})")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every command run")
    sub = ap.add_subparsers(dest="cmd", required=True)
    add_parser = sub.add_parser

    def sub_parser(name, **kw):
        return add_parser(name, parents=[common], **kw)

    sub.add_parser = sub_parser

    p = sub.add_parser("up", help="create the lab")
    p.add_argument("--hosts", default=DEFAULT_VM_HOSTS, help="VM hosts (each runs an agiled), comma-separated")
    p.add_argument("--bandwidth", default=DEFAULT_BANDWIDTH, help="rate of every host link, each direction (tc tbf)")
    p.add_argument("--host-mem", default=DEFAULT_HOST_MEM, help="RAM of each VM host = its memory cgroup limit")
    p.add_argument("--swap", default=DEFAULT_SWAP, help="swap file per VM host (0 = none); also the cgroup's swap limit")
    p.add_argument("--swap-priority", type=int, default=DEFAULT_SWAP_PRIORITY, help="swapon priority of the host swap files")
    p.add_argument("--subnet", default=DEFAULT_SUBNET, help="private /24 that exists only inside the lab")
    p.add_argument("--memd-capacity", default=DEFAULT_MEMD_CAPACITY, help="agile-memd --capacity")
    p.add_argument("--store", choices=STORES, default=DEFAULT_STORE,
                   help="the swap store on the memd host: agile-memd, or a Redis Cluster of 3 masters + 3 replicas "
                   "(agiled --store redis-cluster://...; lab/README.md)")
    p.add_argument("--build", default=DEFAULT_BUILD, help="build dir with bin/ and guest/ (env AGILE_BUILD)")
    p.add_argument("--host-budget", metavar="SIZE",
                   help="agiled --host-budget SIZE on every VM host (advance offloading; needs an agiled that has it)")
    p.add_argument("--memd-data-dir", action="store_true",
                   help="agile-memd --data-dir <lab dir>/memd-data: its pages survive a restart of agile-memd")
    p.add_argument("--agiled-arg", dest="agiled_args", action="append", default=[], metavar="ARG",
                   help="extra agiled argument on every VM host (repeatable; the = form for options: --agiled-arg=--x)")
    p.set_defaults(fn=cmd_up)

    p = add_parser("experiment", add_help=False,
                   help="the seed paper's experiment, five modes side by side (--help there)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_experiment)

    p = add_parser("sweep", add_help=False,
                   help="how migration cost grows with VM size and working set, agile vs QEMU (--help there)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_experiment)

    p = add_parser("soak", add_help=False,
                   help="fault-injection soak: migrations under kills, link cuts, trickles, cancels (--help there)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_experiment)

    p = sub.add_parser("down", help="remove everything the lab made (also after a crash)")
    p.add_argument("--keep-logs", metavar="DIR", help="copy the lab's logs here first")
    p.set_defaults(fn=cmd_down)

    p = sub.add_parser("status", help="hosts, memory, swap, daemons, VMs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_status)

    p = sub.add_parser("exec", help="run a command in a host's namespace and cgroup")
    p.add_argument("host")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_exec)

    p = sub.add_parser("ctl", help="agilectl against a host's agiled")
    p.add_argument("host")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_ctl)

    p = sub.add_parser("tap", help="create VM's tap on HOST (joined to its bridge); print the QEMU arguments")
    p.add_argument("host")
    p.add_argument("vm")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_tap)

    p = sub.add_parser("untap", help="remove VM's tap from HOST")
    p.add_argument("host")
    p.add_argument("vm")
    p.set_defaults(fn=cmd_untap)

    p = sub.add_parser("agile-vm", help="start a VM under HOST's agiled (agilectl vm start + tap)")
    p.add_argument("host")
    p.add_argument("name")
    p.add_argument("--memory", default=DEFAULT_VM_MEMORY)
    p.add_argument("--vcpus", type=int, default=1)
    p.add_argument("--workload", default=DEFAULT_WORKLOAD, help="memverify, memtouch, redis, none")
    p.add_argument("--workload-args", default="", help='"key=value ..." (redis gets ip=/prefix= from the lab)')
    p.add_argument("--net", dest="net", action="store_true", default=None,
                   help="give the VM a NIC on the lab segment (default: only for redis)")
    p.add_argument("--no-net", dest="net", action="store_false")
    p.add_argument("--qemu-arg", action="append", help="extra QEMU argument (repeatable)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--stock", action="store_true",
                   help="pass --stock to agilectl vm start (a stock VM run by agiled: plain QEMU, anonymous RAM)")
    p.add_argument("--guest", choices=GUESTS, default="kernel",
                   help="disk: boot BUILD/guest/debian.qcow2 from a fresh overlay on the lab's shared storage "
                   "(/var/lib/agile-lab-disks/<prefix>/<name>.qcow2)")
    p.add_argument("--build", default=DEFAULT_BUILD, help="build dir with guest/debian.qcow2 (for --guest disk)")
    p.set_defaults(fn=cmd_agile_vm)
    return ap


def main(argv=None):
    av = sys.argv[1:] if argv is None else argv
    own = experiment_argv(av)
    if own is not None:
        util.VERBOSE = "-v" in av or "--verbose" in av
        run_experiment(own[1], own[0])
    args = parser().parse_args(av)
    util.VERBOSE = args.verbose
    try:
        args.fn(args)
    except LabError as e:
        log(f"error: {e}")
        sys.exit(1)
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
