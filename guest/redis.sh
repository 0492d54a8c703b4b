#!/bin/sh
# /bin/agile-redis in the guest (busybox sh): the "redis" workload.
#
#   agile-redis [ip=A.B.C.D] [prefix=24] [gw=A.B.C.D] [port=6379]
#               [keys=0] [value_bytes=100] [maxmemory_mib=0]
#
# Brings up the NIC (agile-net) when ip= is given, starts Debian's
# redis-server (no persistence, protected mode off, bound to 0.0.0.0),
# preloads `keys` keys "key:0".."key:<keys-1>" of `value_bytes` bytes each
# (DEBUG POPULATE, so the dataset is known to the load generator), then
# prints a status line once per second until redis-server exits.
# Lines: see guest/README.md ("redis").

PATH=/bin
ip_addr=
prefix=24
gw=
port=6379
keys=0
value_bytes=100
maxmemory_mib=0

is_uint() {
    case $1 in '' | *[!0-9]*) return 1 ;; esac
    return 0
}
bad() { echo "redis: bad parameter: $*"; exit 2; }

for arg in "$@"; do
    case $arg in
        ip=*) ip_addr=${arg#ip=} ;;
        prefix=*) prefix=${arg#prefix=} ;;
        gw=*) gw=${arg#gw=} ;;
        port=*) port=${arg#port=} ;;
        keys=*) keys=${arg#keys=} ;;
        value_bytes=*) value_bytes=${arg#value_bytes=} ;;
        maxmemory_mib=*) maxmemory_mib=${arg#maxmemory_mib=} ;;
        *) bad "unknown key '${arg%%=*}' (keys: ip prefix gw port keys value_bytes maxmemory_mib)" ;;
    esac
done
for v in prefix port keys value_bytes maxmemory_mib; do
    eval "x=\$$v"
    is_uint "$x" || bad "$v=$x is not a non-negative integer"
done
[ "$port" -ge 1 ] && [ "$port" -le 65535 ] || bad "port=$port out of range"
[ "$value_bytes" -ge 1 ] || bad "value_bytes must be >= 1"

# Centiseconds since boot; busybox date has no %N.
uptime_cs() {
    read -r up _ </proc/uptime
    echo "${up%.*}${up#*.}"
}

# Loopback is down at boot: redis-cli (and the status loop) need it.
ip link set lo up
if [ -n "$ip_addr" ]; then
    agile-net "ip=$ip_addr" "prefix=$prefix" ${gw:+"gw=$gw"} || exit 1
fi

# No fork for persistence, so no overcommit warning to heed; set it anyway as
# redis recommends.
echo 1 >/proc/sys/vm/overcommit_memory

set -- --port "$port" --bind 0.0.0.0 --protected-mode no \
    --save "" --appendonly no --dir /tmp --logfile /tmp/redis.log \
    --daemonize no --enable-debug-command local
[ "$maxmemory_mib" -gt 0 ] && set -- "$@" --maxmemory "${maxmemory_mib}mb"
redis-server "$@" &
pid=$!

cli() { redis-cli -p "$port" "$@"; }

# Wait up to 180 s for PING. The initramfs guest answers within a second or
# two; the disk guest (guest/disk/) under agiled's --host-budget starts
# redis-server from pages it first faults back in, and took longer than 30 s
# in the lab's experiment on a loaded machine (lab/README.md, --guest disk).
deadline=$(($(uptime_cs) + 18000))
until [ "$(cli PING 2>/dev/null)" = PONG ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid"
        rc=$?
        echo "redis: FAIL redis-server exited rc=$rc before answering; log:"
        tail -n 20 /tmp/redis.log
        exit 1
    fi
    [ "$(uptime_cs)" -ge $deadline ] && { echo "redis: FAIL no PONG after 180 s"; kill "$pid"; exit 1; }
    sleep 0.1
done
version=$(cli INFO server | awk -F: '/^redis_version:/ { sub(/\r/, "", $2); print $2 }')
echo "redis: ready port=$port version=$version"

if [ "$keys" -gt 0 ]; then
    t0=$(uptime_cs)
    r=$(cli DEBUG POPULATE "$keys" key "$value_bytes" 2>&1)
    [ "$r" = OK ] || { echo "redis: FAIL preload: $r"; kill "$pid"; exit 1; }
    t1=$(uptime_cs)
    echo "redis: loaded keys=$keys value_bytes=$value_bytes in $(((t1 - t0) * 10)) ms"
fi

# One status line per second, from one long-lived redis-cli that repeats a
# small Lua script (starting a redis-cli each second would cost the single
# vCPU a few hundred ms under TCG and show as a dip in the server's
# throughput). Each run costs the server 3 commands (EVAL, INFO, DBSIZE).
status_lua="local i = redis.call('INFO')
local function f(k) return tonumber(string.match(i, '\n' .. k .. ':(%d+)')) or 0 end
return string.format('redis: ok keys=%d used_memory=%d clients=%d cmds=%d ops_per_sec=%d',
  redis.call('DBSIZE'), f('used_memory'), f('connected_clients'),
  f('total_commands_processed'), f('instantaneous_ops_per_sec'))"
cli --raw -r -1 -i 1 EVAL "$status_lua" 0 &
status_pid=$!

wait "$pid"
rc=$?
kill "$status_pid" 2>/dev/null
echo "redis: FAIL redis-server exited rc=$rc; log:"
tail -n 20 /tmp/redis.log
exit 1
