"""Every constant of the lab in one place: paths, addresses, ports, names.

No other module spells an address, a port or a path root: they take them from
here (or from the lab's state, which was planned from here), so a change of
layout is one edit.
"""
import os
import re

# The repository (lab/agilelab/config.py -> two levels up).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
DEFAULT_BUILD = os.environ.get("AGILE_BUILD", os.path.join(ROOT, "build"))

# ---- where the lab keeps things ---------------------------------------------
STATE_ROOT = "/run/agile-lab"          # per prefix: state.json, each host's state dir, logs
SWAP_ROOT = "/var/lib/agile-lab"       # per prefix: the VM hosts' swap files
SHM_ROOT = "/dev/shm/agile-lab"        # per prefix: file-backed guest RAM the lab itself made
# Per prefix: the VMs' qcow2 overlays (--guest disk), the lab's shared storage.
# On disk, not in the state dir: `down --keep-logs` copies that into results.
DISK_ROOT = "/var/lib/agile-lab-disks"
AGILED_SHM_ROOT = "/dev/shm/agile"     # agiled's guest RAM: <AGILED_SHM_ROOT>/<agiled id>
NETNS_DIR = "/run/netns"
CGROUP_FS = "/sys/fs/cgroup"
PROC_SWAPS = "/proc/swaps"
PROC_VMSTAT = "/proc/vmstat"

# ---- names --------------------------------------------------------------------
DEFAULT_PREFIX = "agl"
PREFIX_ENV = "AGILE_LAB_PREFIX"
MEMD_HOST = "memd"
CLIENT_HOST = "client"
SWITCH = "sw"
BRIDGE = "br0"
UPLINK = "eth0"
RESERVED_HOSTS = {MEMD_HOST, CLIENT_HOST, SWITCH, BRIDGE, UPLINK, "lo"}
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")
HOST_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
VM_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

# ---- addresses and ports ------------------------------------------------------
DEFAULT_SUBNET = "10.77.0.0/24"        # private; exists only inside the lab's namespaces
MEMD_OCTET = 2                         # last octet of the memd host
CLIENT_OCTET = 3                       # last octet of the client host
VM_HOST_FIRST_OCTET = 11               # VM hosts: .11, .12, ... in --hosts order
VM_IP_FIRST, VM_IP_LAST = 100, 199     # VMs, allocated per name for the lab's life
VM_MAC_PREFIX = "52:54:00:a9"          # + the VM address's last two octets in hex
AGILED_PORT = 7700
MEMD_PORT = 7800
MEMD_METRICS = "127.0.0.1:9780"        # agile-memd --metrics-listen, loopback of the memd host's namespace
MEMD_DATA_DIR = "memd-data"            # agile-memd --data-dir (up --memd-data-dir): <lab dir>/memd-data
REDIS_PORT = 6379                      # redis inside the app experiment's guest (not the swap store)

# ---- the swap store (`up --store`) -----------------------------------------------
STORES = ("memd", "redis-cluster")    # agile-memd, or a Redis Cluster, both on the memd host
DEFAULT_STORE = "memd"
REDIS_DIR = "redis"                    # <lab dir>/redis/<port>/: each node's dir, log; host users' password files
REDIS_FIRST_PORT = 7001                # TLS ports 7001..7006 on the memd host; cluster bus = port + 10000
REDIS_BUS_OFFSET = 10000
REDIS_MASTERS = 3
REDIS_REPLICAS = 1                     # per master: 3 masters + 3 replicas
REDIS_NODE_TIMEOUT_MS = 5000           # --cluster-node-timeout: a master unheard of this long is failed over
REDIS_PKI_NAME = "redis"               # the nodes' TLS folder: <lab dir>/pki/redis

# ---- `up` defaults -------------------------------------------------------------
DEFAULT_VM_HOSTS = "src,dst"
DEFAULT_BANDWIDTH = "1gbit"
DEFAULT_HOST_MEM = "2G"
DEFAULT_SWAP = "2G"
DEFAULT_SWAP_PRIORITY = 10
DEFAULT_MEMD_CAPACITY = "4G"
DAEMON_START_TIMEOUT_S = 15
AGILED_STOP_TIMEOUT_S = 15

# ---- VMs -----------------------------------------------------------------------
DEFAULT_VM_MEMORY = "512M"
DEFAULT_WORKLOAD = "memverify"
AGILED_SERIAL_LOG = "serial.log"       # agiled keeps a VM's console in <state dir>/vms/<name>/
GUESTS = ("kernel", "disk")            # experiment --guest: our kernel+initramfs, or build/guest/debian.qcow2
DISK_IMAGE = "debian.qcow2"            # make guest-disk: <build>/guest/debian.qcow2

# ---- the experiment ------------------------------------------------------------
EXPERIMENT_PREFIX = "exp"
EXPERIMENT_MODES = ["agile", "precopy", "postcopy", "qemu-precopy", "qemu-postcopy", "qemu-precopy-tuned", "qemu-hybrid"]
MIGRATED_VM = "mig"
EXPERIMENT_VMS = [MIGRATED_VM, "co1", "co2"]   # mig is migrated, co1/co2 stay on src
MIGRATION_SOURCE, MIGRATION_TARGET = "src", "dst"
SAMPLED_HOSTS = ("src", "dst", "memd")

PAGE_SIZE = 4096
MIB = 1 << 20
