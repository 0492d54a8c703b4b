#!/usr/bin/env bash
# A libvirt domain under agiled (docs/libvirt.md; ctest LibvirtTest, `make
# test-libvirt`, root). A real libvirtd (Debian's, started here in a mount
# namespace of its own so that its /etc/libvirt, /run/libvirt and
# /var/lib/libvirt are this test's and the host's stay untouched) starts the
# lab guest with build/bin/agile-qemu as its emulator; the test checks that
# agiled adopts it (vm list, its RAM is agiled's file), offloads it to a
# third of its memory while memverify keeps errors=0, that its working set is
# tracked and advance offloading works, that an agiled killed with -9 and
# restarted re-adopts it, that virsh console's pty carries the guest's
# console, that migration is refused, and that `virsh destroy` leaves
# nothing behind.
# Exits 77 (ctest: skipped) when libvirt is not installed
# (scripts/install-deps-libvirt).
# Usage: libvirt_test.sh SOURCE_DIR BUILD_DIR
set -uo pipefail
SRC=$(cd "${1:?source dir}" && pwd)
BUILD=$(cd "${2:?build dir}" && pwd)
[ "$(id -u)" -eq 0 ] || { echo "libvirt_test: needs root (agiled, libvirtd)"; exit 1; }
if [ ! -x /usr/sbin/libvirtd ] || ! command -v virsh >/dev/null || ! getent passwd libvirt-qemu >/dev/null; then
  echo "libvirt_test: SKIP: libvirt is not installed (sudo scripts/install-deps-libvirt)"
  exit 77
fi

T=/tmp/agile-it-$$-libvirt
STATE=$T/s
LV=$T/lv
NAME=lvtest$$
CTL=$BUILD/bin/agilectl
export AGILE_HOST=unix:$STATE/agiled.sock
VIRSH="virsh -q -c qemu:///system?socket=$LV/sock/libvirt-sock"
mkdir -p "$T" "$LV"/{etc,run,lib,cache,log,sock}
memd_pid= libvirtd_pid=
t0=$(date +%s)

cleanup() {
  if [ -n "$libvirtd_pid" ]; then
    for d in $($VIRSH list --name 2>/dev/null); do $VIRSH destroy "$d" >/dev/null 2>&1; done
    kill "$libvirtd_pid" 2>/dev/null && wait "$libvirtd_pid" 2>/dev/null
  fi
  [ -S "$STATE/agiled.sock" ] && "$CTL" host shutdown >/dev/null 2>&1
  [ -n "$memd_pid" ] && kill "$memd_pid" 2>/dev/null && wait "$memd_pid" 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
fail() {
  echo "libvirt_test: FAIL: $*"
  echo "--- agiled.log"; tail -25 "$STATE/agiled.log" 2>/dev/null
  echo "--- libvirt's QEMU log"; tail -15 "$LV/log/qemu/$NAME.log" 2>/dev/null
  echo "--- serial"; tail -5 "$T/serial.log" 2>/dev/null
  exit 1
}
ok() { echo "ok   $*"; }
stat_json() { "$CTL" vm stat "$NAME" --json 2>/dev/null; }
# field EXPR: a Python expression over the VM's stat as `s` (prints it)
field() { stat_json | python3 -c "import json,sys; s=json.load(sys.stdin); print($1)" 2>/dev/null; }
# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every half second
wait_for() {
  local secs=$1 what=$2
  shift 2
  for _ in $(seq $((secs * 2))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  fail "$what (after ${secs}s)"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- agiled with a swap store -------------------------------------------------
PM=$(free_port)
"$BUILD/bin/agile-memd" --listen "127.0.0.1:$PM" --capacity 1G >"$T/memd.out" 2>&1 &
memd_pid=$!
"$BUILD/bin/agiled" --state-dir "$STATE" --memd "127.0.0.1:$PM" --daemon || fail "agiled did not start"
SHM=$("$CTL" host info --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["shm_root"])')

# --- libvirtd, private to this test -------------------------------------------
# qemu.conf: QEMU runs as root (the shim's userfaultfd over shared memory and
# agiled's root-only RAM file need it, as for agiled's own VMs); no DAC or
# AppArmor relabelling of files agiled owns; QEMU's output to a plain log file
# (no virtlogd to run); no private /dev, so QEMU sees the host's /dev/shm.
cat >"$LV/etc/qemu.conf" <<EOF
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
namespaces = [ ]
memory_backing_dir = "/dev/shm"
EOF
cat >"$LV/etc/libvirtd.conf" <<EOF
unix_sock_dir = "$LV/sock"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:$LV/libvirtd.log"
EOF
unshare -m --propagation private sh -c '
  set -e
  for d in etc:/etc/libvirt run:/run/libvirt lib:/var/lib/libvirt cache:/var/cache/libvirt log:/var/log/libvirt; do
    mkdir -p "${d#*:}"; mount --bind "$0/${d%%:*}" "${d#*:}"
  done
  exec /usr/sbin/libvirtd --config "$0/etc/libvirtd.conf"' "$LV" >"$LV/daemon.out" 2>&1 &
libvirtd_pid=$!
wait_for 30 "libvirtd did not answer ($(cat "$LV/daemon.out"))" $VIRSH version
ok "libvirtd $($VIRSH version | sed -n 's/^Running hypervisor: //p') answers on $LV/sock"

# --- the documentation's disk example is a valid domain --------------------------
sed -e "s|/usr/local/bin/agile-qemu|$BUILD/bin/agile-qemu|" -e "s|type='kvm'|type='qemu'|" -e "s|debian1|dx$$|" \
  "$SRC/contrib/libvirt/agile-disk-guest.xml" >"$T/disk.xml"
$VIRSH define --validate "$T/disk.xml" >/dev/null || fail "contrib/libvirt/agile-disk-guest.xml does not define"
$VIRSH undefine "dx$$" >/dev/null
# libvirt has probed agile-qemu's capabilities through it to define a domain for it
ok "the disk example defines (libvirt probed QEMU through agile-qemu)"

# --- virsh start: agiled adopts the domain -------------------------------------
sed -e "s|@NAME@|$NAME|" -e "s|@GUEST_DIR@|$BUILD/guest|" -e "s|@AGILE_QEMU@|$BUILD/bin/agile-qemu|" \
  -e "s|@SERIAL_LOG@|$T/serial.log|" -e "s|@AGILE_HOST@|$AGILE_HOST|" \
  "$SRC/contrib/libvirt/agile-kernel-guest.xml" >"$T/domain.xml"
$VIRSH define "$T/domain.xml" >/dev/null || fail "virsh define"
$VIRSH start "$NAME" >/dev/null || fail "virsh start"
listed() { "$CTL" vm list 2>/dev/null | grep -Eq "^$NAME +running"; }
wait_for 30 "agilectl vm list does not show $NAME running" listed
ok "virsh start $NAME: agiled lists it ($("$CTL" vm list | grep "^$NAME" | tr -s ' '))"
pid=$(field 's["pid"]')
[ "$pid" = "$(cat "$LV/run/qemu/$NAME.pid")" ] || fail "agiled's pid $pid is not libvirt's QEMU ($(cat "$LV/run/qemu/$NAME.pid"))"
grep -q " $SHM/$NAME/ram" "/proc/$pid/maps" || fail "QEMU does not map agiled's RAM file $SHM/$NAME/ram"
grep -q "pc.ram" "/proc/$pid/maps" && fail "QEMU maps libvirt's own RAM file"
[ "$(field 's["pages"]["total"]')" = $((384 * 256)) ] || fail "agiled does not hold the VM's 384 MiB"
[ "$(field 's["spec"]["libvirt"]')" = True ] || fail "vm stat does not say libvirt"
ok "guest RAM is agiled's file ($SHM/$NAME/ram, mapped by libvirt's QEMU pid $pid)"

gen() { field 's["guest"]["gen"]' ; }
# verified GEN: memverify reports ok, errors=0, at generation GEN or later
verified() {
  [ "$(field "s['guest']['workload'] == 'memverify' and s['guest']['errors'] == 0 and s['guest']['gen'] >= $1")" = True ]
}
wait_for 120 "memverify did not report ok on the console" verified 1000
ok "memverify runs: $(field 's["guest"]["line"]')"

# --- offload to a third, working set, advance offloading -----------------------
"$CTL" vm offload "$NAME" --resident 128M --json >"$T/offload.out" || fail "vm offload: $(cat "$T/offload.out")"
# The guest refaults at once (memverify sweeps 192 MiB): the offload's own
# answer says where it left the VM.
after=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["resident_bytes"])' "$T/offload.out")
[ "$after" -le $((128 << 20)) ] || fail "resident $after bytes > 128 MiB after the offload"
off=$(field 's["pages"]["offloaded"]')
[ "${off:-0}" -gt 0 ] || fail "nothing offloaded"
ok "offloaded to a third: $((after >> 20)) MiB resident after it; $off pages in memd now"
g0=$(gen)
wait_for 120 "memverify made no progress after the offload" verified $((g0 + 3000))
[ "$(field 's["faults"]["refault"]')" -gt 0 ] || fail "no page came back from memd"
[ "$(field 's["guest"]["bad_page_lines"]')" = 0 ] || fail "memverify printed BAD lines"
ok "memverify errors=0 after the offload, $(field 's["faults"]["refault"]') refaults: $(field 's["guest"]["line"]')"
"$CTL" wss "$NAME" --json >"$T/wss.out" || fail "agilectl wss: $(cat "$T/wss.out")"
wss=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("wss_bytes") or 0)' "$T/wss.out")
[ "$wss" -gt 0 ] || fail "no working set measured: $(cat "$T/wss.out")"
ok "working set tracked: $((wss >> 20)) MiB (memverify sweeps 192 MiB)"
# Advance offloading: a pin under what memverify keeps touching makes the
# host policy offload on its own, again and again.
"$CTL" vm policy "$NAME" --pin 112M >/dev/null || fail "vm policy --pin"
advanced() {
  [ "$("$CTL" host info --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pressure"]["advance_offloaded_bytes"] > 0)')" = True ]
}
wait_for 60 "the policy offloaded nothing in advance under --pin 112M" advanced
g0=$(gen)
wait_for 120 "memverify made no progress under the pin" verified $((g0 + 2000))
ok "advance offloading under --pin 112M: $("$CTL" host info --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pressure"]["advance_offloaded_bytes"] >> 20)') MiB so far, memverify errors=0"
"$CTL" vm policy "$NAME" --auto >/dev/null || fail "vm policy --auto"

# --- agiled killed and restarted: the libvirt VM is re-adopted -------------------
apid=$(pgrep -f "^$BUILD/bin/agiled --state-dir $STATE ")
[ -n "$apid" ] || fail "cannot find agiled's pid"
kill -9 "$apid"
"$BUILD/bin/agiled" --state-dir "$STATE" --memd "127.0.0.1:$PM" --daemon || fail "agiled did not restart"
wait_for 30 "the restarted agiled does not list $NAME running" listed
g0=$(gen)
wait_for 120 "memverify made no progress after agiled's restart" verified $((g0 + 2000))
ok "agiled kill -9 and restart: $NAME re-adopted, memverify errors=0 ($(field 's["guest"]["line"]'))"

# --- libvirt's side keeps working ---------------------------------------------
[ "$($VIRSH domstate "$NAME")" = running ] || fail "virsh domstate: $($VIRSH domstate "$NAME")"
pty=$($VIRSH ttyconsole "$NAME")
[ -c "$pty" ] || fail "virsh ttyconsole gave '$pty'"
timeout 5 cat "$pty" >"$T/pty.out" 2>/dev/null
grep -q "memverify: ok" "$T/pty.out" || fail "the console pty carried no memverify line"
ok "virsh domstate running; console pty $pty carries the guest's output"
"$CTL" migrate "$NAME" --to 127.0.0.1:1 >"$T/migrate.out" 2>&1 && fail "a libvirt domain migrated"
grep -q "libvirt" "$T/migrate.out" || fail "migration refused without saying why: $(cat "$T/migrate.out")"
ok "migration refused: $(head -1 "$T/migrate.out")"

# --- virsh destroy: nothing left behind -----------------------------------------
$VIRSH destroy "$NAME" >/dev/null || fail "virsh destroy"
gone() { ! "$CTL" vm list 2>/dev/null | grep -q "^$NAME " && [ ! -e "$SHM/$NAME" ] && [ ! -e "$STATE/vms/$NAME/vm.record" ]; }
wait_for 15 "agiled kept $NAME after virsh destroy" gone
[ "$($VIRSH domstate "$NAME")" = "shut off" ] || fail "virsh domstate after destroy: $($VIRSH domstate "$NAME")"
ok "virsh destroy: agiled forgot $NAME, its RAM file and record are gone"

# --- a domain agiled cannot own is refused with the reason ------------------------
sed -e "/<memoryBacking>/,/<\/memoryBacking>/d" -e "s|<name>$NAME|<name>${NAME}b|" "$T/domain.xml" >"$T/anon.xml"
$VIRSH define "$T/anon.xml" >/dev/null || fail "virsh define (anonymous memory)"
$VIRSH start "${NAME}b" >"$T/anon.out" 2>&1 && fail "a domain without shared file memory started"
# libvirt quotes the end of the domain's QEMU log in virsh's error when it
# reads it in time; the log always has the wrapper's reason.
grep -q "agile-qemu: .*<memoryBacking>" "$LV/log/qemu/${NAME}b.log" ||
  fail "the domain log does not give the reason: $(tail -3 "$LV/log/qemu/${NAME}b.log"); virsh: $(cat "$T/anon.out")"
ok "a domain without <memoryBacking> shared file is refused: $(grep -o "agile-qemu: [^;]*" "$LV/log/qemu/${NAME}b.log" | head -1)"
grep -q "agile-qemu: .*<memoryBacking>" "$T/anon.out" && ok "virsh start printed the reason too"
echo "libvirt_test: PASS ($(($(date +%s) - t0)) s)"
