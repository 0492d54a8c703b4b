#!/bin/sh
# /bin/agile-net in the guest (busybox sh): brings up the virtio-net NIC.
#
#   agile-net ip=A.B.C.D[/N] [prefix=N] [gw=A.B.C.D]
#
# Loads the virtio-net modules shipped in /lib/modules (from the same Debian
# cloud kernel package as vmlinuz; no modules.dep, so in dependency order),
# waits for the first non-loopback interface, and gives it the address.
# Prints "agile-net: up dev=<if> ip=<ip>/<n> mac=<mac>" or
# "agile-net: FAIL <why>" (exit 1).  See guest/README.md.

PATH=/bin
ip_addr=
prefix=24
gw=
for arg in "$@"; do
    case $arg in
        ip=*) ip_addr=${arg#ip=} ;;
        prefix=*) prefix=${arg#prefix=} ;;
        gw=*) gw=${arg#gw=} ;;
        *) echo "agile-net: FAIL unknown argument '$arg' (want ip= prefix= gw=)"; exit 2 ;;
    esac
done
case $ip_addr in
    */*) prefix=${ip_addr#*/}; ip_addr=${ip_addr%/*} ;;
esac
[ -n "$ip_addr" ] || { echo "agile-net: FAIL no ip= given"; exit 2; }

# Order matters: each module's depends= comes before it.
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
    failover net_failover virtio_net; do
    # Already loaded (e.g. a second call) is fine.
    grep -q "^$m " /proc/modules 2>/dev/null && continue
    insmod "/lib/modules/$m.ko" || { echo "agile-net: FAIL insmod $m"; exit 1; }
done

ip link set lo up
dev=
i=0
while [ $i -lt 100 ]; do # up to 5 s for the driver to probe the device
    for d in /sys/class/net/*; do
        d=${d##*/}
        [ "$d" = lo ] && continue
        dev=$d
        break
    done
    [ -n "$dev" ] && break
    sleep 0.05
    i=$((i + 1))
done
[ -n "$dev" ] || { echo "agile-net: FAIL no network interface (is there a virtio-net-pci device?)"; exit 1; }

ip addr add "$ip_addr/$prefix" dev "$dev" || { echo "agile-net: FAIL ip addr add $ip_addr/$prefix"; exit 1; }
ip link set "$dev" up || { echo "agile-net: FAIL ip link set $dev up"; exit 1; }
if [ -n "$gw" ]; then
    ip route add default via "$gw" || { echo "agile-net: FAIL default route via $gw"; exit 1; }
fi
read -r mac <"/sys/class/net/$dev/address"
echo "agile-net: up dev=$dev ip=$ip_addr/$prefix mac=$mac${gw:+ gw=$gw}"
