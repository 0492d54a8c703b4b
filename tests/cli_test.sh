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
  [ -S "$STATE/agiled.sock" ] && "$CTL" -H "unix:$STATE/agiled.sock" host shutdown >/dev/null 2>&1 && sleep 1
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
# a migration to where nobody listens: 6, the VM keeps running here
expect 6 "$CTL" migrate c1 --to 127.0.0.1:1 --json &&
  json_check 'j["error"]["code"]=="migration-failed" and j["exit_code"]==6 and "keeps running" in j["error"]["message"]'
expect 0 "$CTL" vm stat c1 --json && json_check 'j["state"]=="running"'
expect 0 "$CTL" vm stop c1
expect 0 "$CTL" host shutdown

[ $failures -eq 0 ] && echo "cli_test: PASS" || echo "cli_test: $failures FAILED"
exit $((failures > 0))
