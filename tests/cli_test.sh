#!/usr/bin/env bash
# agilectl keeps its word: global flags anywhere, documented exit statuses,
# JSON on failure, --version on all three programs.
# Usage: cli_test.sh BUILD_DIR [--offline]
#   --offline: only what needs no agiled (ctest cli_offline, a unit test)
#   otherwise also against a real agiled and VM (ctest cli_agiled, integration, root)
set -uo pipefail
BUILD=$(cd "${1:?build dir}" && pwd)
OFFLINE=${2:-}
CTL=$BUILD/bin/agilectl
T=$(mktemp -d /tmp/agile-cli.XXXXXX)
STATE=$T/c$$
failures=0
cleanup() {
  for sock in "$STATE/agiled.sock" "$STATE-b/agiled.sock"; do
    [ -S "$sock" ] && "$CTL" -H "unix:$sock" host shutdown >/dev/null 2>&1 && sleep 1
  done
  rm -rf "$T"
}
trap cleanup EXIT

# expect RC CMD...: runs CMD, checks its exit status; stdout in $T/out.
expect() {
  local want=$1
  shift
  "$@" >"$T/out" 2>"$T/err"
  local rc=$?
  if [ "$rc" -ne "$want" ]; then
    echo "FAIL: exit $rc, expected $want: $*"
    sed 's/^/  stdout: /' "$T/out" | head -5
    sed 's/^/  stderr: /' "$T/err" | head -5
    failures=$((failures + 1))
    return 1
  fi
  echo "ok   exit $rc: $*"
}
# json_field EXPR: prints EXPR evaluated on stdout's JSON as `j` (python), fails on non-JSON.
json_check() {
  python3 -c "import json,sys; j=json.load(open('$T/out')); assert $1, j" 2>"$T/pyerr" || {
    echo "FAIL: $1 on: $(head -c 300 "$T/out") $(tail -1 "$T/pyerr")"
    failures=$((failures + 1))
  }
}

# --- --version ---------------------------------------------------------------
for prog in agilectl agiled agile-memd; do
  expect 0 "$BUILD/bin/$prog" --version && grep -Eq "^$prog [0-9a-f.]+" "$T/out" ||
    { echo "FAIL: $prog --version printed '$(cat "$T/out")'"; failures=$((failures + 1)); }
done
v=$("$CTL" --version | cut -d' ' -f2)
for prog in agiled agile-memd; do
  [ "$("$BUILD/bin/$prog" --version)" = "$prog $v" ] ||
    { echo "FAIL: $prog --version is not '$prog $v'"; failures=$((failures + 1)); }
done

# --- usage errors: 2, with --json as JSON, wherever --json is --------------------
expect 2 "$CTL" vm stat
expect 2 "$CTL" vm stat vm1 --nonsense --json && json_check 'j["status"]=="failed" and j["error"]["code"]=="usage"'
expect 2 "$CTL" vm start vm1 --memory lots --json && json_check 'j["exit_code"]==2'
expect 2 "$CTL" migrate vm1 --json && json_check '"--to" in j["error"]["message"]'
expect 2 "$CTL" migrate vm1 --to nowhere --json
expect 2 "$CTL" vm policy vm1 --pin 1G --auto
expect 2 "$CTL" migrate status --json && json_check 'j["exit_code"]==2'
expect 2 "$CTL" migrate --json && json_check '"name" in j["error"]["message"]'
expect 2 "$CTL" top --interval 0
expect 0 "$CTL" --help && grep -q "Exit status" "$T/out" && grep -q "^  agilectl " "$T/out" ||
  { echo "FAIL: --help lacks the exit status table or examples"; failures=$((failures + 1)); }
expect 0 "$CTL" vm stat --help

# --- agiled unreachable: 3, global flags in every position ---------------------
nowhere=unix:$T/none.sock
expect 3 "$CTL" -H "$nowhere" --json vm stat vm1 && json_check 'j["error"]["code"]=="unreachable" and j["exit_code"]==3'
expect 3 "$CTL" vm -H "$nowhere" stat --json vm1 && json_check 'j["exit_code"]==3'
expect 3 "$CTL" vm stat vm1 --json -H "$nowhere" && json_check 'j["exit_code"]==3'
expect 3 "$CTL" vm stat --json vm1 --host "$nowhere" && json_check 'j["exit_code"]==3'
expect 3 "$CTL" migrate vm1 --to 127.0.0.1:1 --json -H "$nowhere" && json_check 'j["exit_code"]==3'
expect 3 env AGILE_HOST="$nowhere" "$CTL" host info --json && json_check 'j["exit_code"]==3'
expect 3 "$CTL" -H 127.0.0.1:1 vm list
expect 3 "$CTL" migrate status vm1 --watch -H "$nowhere" --json && json_check 'j["exit_code"]==3'
expect 3 "$CTL" top --json -H "$nowhere" && json_check 'j["exit_code"]==3'

if [ "$OFFLINE" = --offline ]; then
  [ $failures -eq 0 ] && echo "cli_test (offline): PASS" || echo "cli_test (offline): $failures FAILED"
  exit $((failures > 0))
fi

# --- against a real agiled ---------------------------------------------------
[ "$(id -u)" -eq 0 ] || { echo "cli_test: needs root (agiled)"; exit 1; }
"$BUILD/bin/agiled" --state-dir "$STATE" --daemon || { echo "FAIL: agiled did not start"; exit 1; }
export AGILE_HOST=unix:$STATE/agiled.sock
expect 0 "$CTL" host info --json && json_check '"id" in j'
expect 0 "$CTL" --json host info && json_check '"id" in j'
expect 4 "$CTL" vm stat nosuch --json && json_check 'j["error"]["code"]=="not-found" and j["exit_code"]==4'
expect 4 "$CTL" --json vm stat nosuch && json_check 'j["exit_code"]==4'
expect 4 "$CTL" vm stat nosuch
expect 4 "$CTL" migrate nosuch --to 127.0.0.1:1 --json && json_check 'j["exit_code"]==4'
expect 0 "$CTL" vm start c1 --memory 128M --workload none --json && json_check 'j["name"]=="c1"'
expect 5 "$CTL" vm start c1 --memory 128M --workload none --json && json_check 'j["error"]["agiled_code"]=="already-exists"'
expect 5 "$CTL" vm offload c1 --resident 1G --json && json_check 'j["exit_code"]==5'
expect 0 "$CTL" vm stat c1 --json && json_check 'j["name"]=="c1"'
expect 0 "$CTL" vm --json stat c1 && json_check 'j["name"]=="c1"'
expect 4 "$CTL" migrate status c1 --json && json_check 'j["exit_code"]==4'
# a migration to where nobody listens: 6, the VM keeps running here; the report comes with the error
expect 6 "$CTL" migrate c1 --to 127.0.0.1:1 --json &&
  json_check 'j["error"]["code"]=="migration-failed" and j["exit_code"]==6 and "keeps running" in j["error"]["message"]' &&
  json_check 'j["status"]=="failed" and j["ram"]["total"]==128<<20 and "total-time" in j and j["destination"]=="127.0.0.1:1"'
expect 0 "$CTL" vm stat c1 --json && json_check 'j["state"]=="running"'
# the job's report, from another agilectl: status 0 (the query worked), --watch: the migration's exit status
expect 0 "$CTL" migrate status c1 --json && json_check 'j["status"]=="failed" and j["running"]==False'
expect 0 "$CTL" migrate status c1
expect 6 "$CTL" migrate status c1 --watch --json && json_check 'j["status"]=="failed" and j["exit_code"]==6'
expect 0 "$CTL" top --json --interval 0.2 && json_check 'j["vms"][0]["name"]=="c1" and "faults_per_s" in j["vms"][0]'
expect 0 "$CTL" top --iterations 2 --interval 0.2 && grep -q '^c1 ' "$T/out" ||
  { echo "FAIL: top does not list c1"; failures=$((failures + 1)); }
# ^C in `agilectl migrate` cancels the migration (exit 7, status "cancelled"); the VM stays here
PB=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BUILD/bin/agiled" --state-dir "$STATE-b" --listen "127.0.0.1:$PB" --daemon || { echo "FAIL: agiled B"; exit 1; }
"$CTL" migrate c1 --to "127.0.0.1:$PB" --mode precopy --bandwidth 2mbit --json >"$T/mig" 2>"$T/migerr" &
mig=$!
for _ in $(seq 100); do
  "$CTL" migrate status c1 --json 2>/dev/null | grep -q '"status": "active"' && break
  sleep 0.2
done
kill -INT $mig
wait $mig
rc=$?
cp "$T/mig" "$T/out"
if [ $rc -eq 7 ]; then echo "ok   exit 7: ^C in agilectl migrate"; else
  echo "FAIL: ^C in agilectl migrate exited $rc, expected 7"; sed 's/^/  /' "$T/migerr" | head -5; failures=$((failures + 1)); fi
json_check 'j["status"]=="cancelled" and j["error"]["code"]=="cancelled"'
expect 0 "$CTL" vm stat c1 --json && json_check 'j["state"]=="running"'
expect 0 "$CTL" -H "unix:$STATE-b/agiled.sock" host shutdown
expect 0 "$CTL" vm stop c1
expect 0 "$CTL" host shutdown

[ $failures -eq 0 ] && echo "cli_test: PASS" || echo "cli_test: $failures FAILED"
exit $((failures > 0))
