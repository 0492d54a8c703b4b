"""The lab's Redis Cluster swap store (`up --store redis-cluster`).

Three masters and three replicas, six redis-server processes on the store
host (the memd host's namespace and cgroup: the same place, link and RAM
accounting agile-memd has, so the two stores are compared on equal terms),
each on its own port. The steps are those of scripts/agile-redis-cluster and
tests/integration/redis_cluster.cc, moved into the lab: TLS only (the lab's
links are all mutual TLS, and agiled with --tls-dir dials the nodes' TLS
port), an admin password on the default user (Redis refuses clients off
loopback without one: protected mode), the fence library on every master, one
ACL user per VM host with the rights docs/redis-store.md lists, and readiness =
every replica synced (so the first durable PUT does not time out on WAIT).
"""
import os
import secrets

from .config import REDIS_BUS_OFFSET, REDIS_DIR, REDIS_FIRST_PORT, REDIS_MASTERS, REDIS_NODE_TIMEOUT_MS, \
    REDIS_REPLICAS, ROOT
from .procs import listening, spawn, wait_for
from .util import LabError, run

FENCE_LUA = os.path.join(ROOT, "src", "redis", "agile_fence.lua")
# What a host's user may run: its own commands and those the fence functions run for it (Redis checks a
# function's redis.call()s against the caller's ACL). Kept equal to tests/integration/redis_cluster.cc.
HOST_ACL = ["~agile:*", "resetchannels", "-@all", "+fcall", "+fcall_ro", "+cluster|slots", "+wait", "+ping",
            "+auth", "+asking", "+readonly", "+multi", "+exec", "+get", "+set", "+hset", "+hmget", "+hdel", "+hlen", "+del",
            "+exists", "+rename"]


def node_ports():
    return [REDIS_FIRST_PORT + i for i in range(REDIS_MASTERS * (1 + REDIS_REPLICAS))]


def seeds(ip):
    """The masters' addresses at creation (redis-cli makes the first REDIS_MASTERS nodes masters); any
    live node would do as a seed, agiled reads the slot map from it."""
    return ",".join(f"{ip}:{p}" for p in node_ports()[:REDIS_MASTERS])


def server_binary(lab_dir):
    """Debian's redis-tools ships the server as redis-check-rdb (it picks its role from argv[0]); without
    the redis-server package it is linked as <lab dir>/redis/redis-server."""
    if os.access("/usr/bin/redis-server", os.X_OK):
        return "/usr/bin/redis-server"
    if not os.access("/usr/bin/redis-check-rdb", os.X_OK):
        raise LabError("--store redis-cluster: no /usr/bin/redis-server or redis-check-rdb (apt-get install "
                       "redis-tools; scripts/install-deps)")
    link = os.path.join(lab_dir, REDIS_DIR, "redis-server")
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if not os.path.islink(link):
        os.symlink("/usr/bin/redis-check-rdb", link)
    return link


def node_argv(server, conf, ip, port, d, tls):
    # conf (first, as redis-server wants it) holds the admin password, kept out of argv and the lab's state.
    return [server, conf, "--port", "0", "--tls-port", str(port), "--bind", ip, "--dir", d,
            "--cluster-enabled", "yes", "--cluster-config-file", os.path.join(d, "nodes.conf"),
            # Not the tests' 1000 ms: under TCG guests on two cores a node can miss a second of pings.
            "--cluster-node-timeout", str(REDIS_NODE_TIMEOUT_MS),
            "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--tls-cert-file", os.path.join(tls, "server-cert.pem"),
            "--tls-key-file", os.path.join(tls, "server-key.pem"),
            "--tls-client-cert-file", os.path.join(tls, "client-cert.pem"),
            "--tls-client-key-file", os.path.join(tls, "client-key.pem"),
            "--tls-ca-cert-file", os.path.join(tls, "ca-cert.pem"),
            "--tls-auth-clients", "yes", "--tls-cluster", "yes", "--tls-replication", "yes"]


class Cli:
    """redis-cli in the store host's namespace, over TLS with the store's own certificate (the admin)."""

    def __init__(self, ns, ip, tls, password):
        self.env = {"REDISCLI_AUTH": password}  # not on the command line
        self.base = ["ip", "netns", "exec", ns, "redis-cli", "--tls", "--cacert", os.path.join(tls, "ca-cert.pem"),
                     "--cert", os.path.join(tls, "client-cert.pem"), "--key", os.path.join(tls, "client-key.pem")]
        self.ip = ip

    def __call__(self, port, *args, check=True):
        r = run(self.base + ["-h", self.ip, "-p", str(port)] + list(args), check=False, env=self.env)
        # redis-cli exits 0 on a Redis error reply; the reply text says so.
        if check and (r.returncode != 0 or r.stdout.startswith(("ERR", "(error)"))):
            raise LabError(f"redis-cli -p {port} {args[0]}: {(r.stdout + r.stderr).strip()[-400:]}")
        return r.stdout.strip()

    def create(self, ports):
        r = run(self.base + ["--cluster", "create"] + [f"{self.ip}:{p}" for p in ports] +
                ["--cluster-replicas", str(REDIS_REPLICAS), "--cluster-yes"], check=False, env=self.env)
        if r.returncode != 0:
            raise LabError(f"redis-cli --cluster create: {(r.stdout + r.stderr).strip()[-800:]}")


def up_redis(lab, st, host, tls, vm_hosts, timeout_s):
    """Starts the cluster on `host` (a state dict of the store host), records every node in
    host["redis"] before waiting on it, and returns {agiled id: password file}."""
    ip, ns = host["ip"], host["netns"]
    server = server_binary(lab.dir)
    admin = secrets.token_hex(16)
    conf = secret_file(os.path.join(lab.dir, REDIS_DIR, "admin.conf"), f"requirepass {admin}\nmasterauth {admin}\n")
    host["redis"] = []
    for port in node_ports():
        d = os.path.join(lab.dir, REDIS_DIR, str(port))
        os.makedirs(d, exist_ok=True)
        host["redis"].append(spawn(node_argv(server, conf, ip, port, d, tls), ns, host["cgroup"],
                                   os.path.join(d, "redis.log")))
        lab.save()
    for port, rec in zip(node_ports(), host["redis"]):
        wait_for(lambda: listening(rec["pid"], port) and listening(rec["pid"], port + REDIS_BUS_OFFSET),
                 timeout_s, f"redis-server :{port}", rec)
    cli = Cli(ns, ip, tls, admin)
    cli.create(node_ports())
    for port, rec in zip(node_ports(), host["redis"]):
        wait_for(lambda: "cluster_state:ok" in cli(port, "cluster", "info", check=False),
                 timeout_s * 2, f"redis :{port} cluster_state:ok", rec)
    with open(FENCE_LUA) as f:
        lua = f.read()
    for port, rec in zip(node_ports(), host["redis"]):
        if not cli(port, "role").startswith("master"):
            continue
        cli(port, "function", "load", "replace", lua)
        # WAIT answers how many replicas have the writes so far: they have synced when it reaches REPLICAS.
        wait_for(lambda: _int(cli(port, "wait", str(REDIS_REPLICAS), "100", check=False)) >= REDIS_REPLICAS,
                 timeout_s * 2, f"replicas of redis :{port} synced", rec)
    passwords = {}
    for h in vm_hosts:
        user = h["agiled_id"]
        pw = secrets.token_hex(16)
        for port in node_ports():  # ACLs are per node: every node, replicas too (they may be promoted)
            cli(port, "acl", "setuser", user, "reset", "on", ">" + pw, *HOST_ACL)
        passwords[user] = secret_file(os.path.join(lab.dir, REDIS_DIR, f"{user}.password"), pw + "\n")
    return passwords


def secret_file(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def store_url(ip, password_file):
    return f"redis-cluster://{seeds(ip)}?password-file={password_file}"


def _int(text):
    try:
        return int(text.split()[-1])
    except (ValueError, IndexError):
        return -1
