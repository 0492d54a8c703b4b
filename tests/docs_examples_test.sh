#!/usr/bin/env bash
# The documentation's examples, run as written (ctest docs_examples, label
# integration, root). Usage: docs_examples_test.sh SOURCE_DIR BUILD_DIR
#
# 1. `agilectl --help` ends with "  agilectl ..." example lines: each is run
#    with BUILD_DIR/bin first on PATH against an agiled of this test.
# 2. README.md's ```sh blocks are run top to bottom in one bash (set -e), from
#    a folder where `build` links to BUILD_DIR.
# What is substituted, and only that (a second host, a routable network and
# /run/agile are what a test cannot have):
#   10.0.0.1:7700 / 10.0.0.2:7700  agiled TCP endpoints of "host A" / "host B"
#   10.0.0.1:7800                  agile-memd          -> free ports on 127.0.0.1
#   /run/agile (and /run/agile-b)  state dirs          -> $T/d<pid> (and ...-b)
#   the default -H (unix:/run/agile/agiled.sock)       -> AGILE_HOST to host A's socket
# The agileds, agile-memd and VMs are the real ones the examples start; the
# examples themselves shut them down, and the trap does if one fails.
set -uo pipefail
SRC=$(cd "${1:?source dir}" && pwd)
BUILD=$(cd "${2:?build dir}" && pwd)
[ "$(id -u)" -eq 0 ] || { echo "docs_examples: needs root (agiled)"; exit 1; }
[ -f "$BUILD/guest/vmlinuz" ] || { echo "docs_examples: no guest image: run 'make guest'"; exit 1; }

T=$(mktemp -d /tmp/agile-docs.XXXXXX)
STATE=$T/d$$
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PA=$(free_port); PB=$(free_port); PM=$(free_port)
export AGILE_HOST=unix:$STATE/agiled.sock

subst() {
  sed -e "s#10\.0\.0\.1:7700#127.0.0.1:$PA#g" -e "s#10\.0\.0\.2:7700#127.0.0.1:$PB#g" \
      -e "s#10\.0\.0\.1:7800#127.0.0.1:$PM#g" -e "s#/run/agile#$STATE#g"
}

cleanup() {
  for sock in "$STATE/agiled.sock" "$STATE-b/agiled.sock"; do
    [ -S "$sock" ] && "$BUILD/bin/agilectl" -H "unix:$sock" host shutdown >/dev/null 2>&1
  done
  # the README's agile-memd, if the examples stopped before their `kill %1`: by the pid on its port
  local pid
  pid=$(ss -Htlnp "sport = :$PM" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  sleep 1
  rm -rf "$T"
}
trap cleanup EXIT

fail() { echo "docs_examples: FAIL: $*"; exit 1; }

# --- 1. agilectl --help examples ---------------------------------------------
help_examples=$("$BUILD/bin/agilectl" --help | sed -n '/^Examples/,/^$/p' | grep '^  agilectl ' | sed 's/^  //')
[ -n "$help_examples" ] || fail "agilectl --help has no examples"
"$BUILD/bin/agiled" --state-dir "$STATE" --daemon || fail "agiled did not start"
while IFS= read -r line; do
  cmd=$(printf '%s\n' "$line" | subst)
  echo "+ $line"
  PATH="$BUILD/bin:$PATH" bash -c "$cmd" >"$T/out" 2>&1 || { cat "$T/out"; fail "--help example: $line"; }
  head -c 600 "$T/out"
done <<<"$help_examples"
"$BUILD/bin/agilectl" host shutdown >/dev/null || fail "host shutdown"
for _ in $(seq 50); do [ -S "$STATE/agiled.sock" ] || break; sleep 0.2; done

# --- 2. README.md's sh blocks ------------------------------------------------
awk '/^```sh$/ {on=1; next} /^```/ {on=0} on' "$SRC/README.md" >"$T/readme.sh"
[ -s "$T/readme.sh" ] || fail "README.md has no sh blocks"
mkdir -p "$T/cwd" && ln -s "$BUILD" "$T/cwd/build" && ln -s "$SRC/scripts" "$T/cwd/scripts"
{ echo 'set -e -x -o pipefail'; subst <"$T/readme.sh"; } >"$T/readme-run.sh"
echo "== README.md, $(grep -c . "$T/readme.sh") lines (addresses: A 127.0.0.1:$PA, B 127.0.0.1:$PB, memd 127.0.0.1:$PM)"
(cd "$T/cwd" && exec bash "$T/readme-run.sh")
rc=$?
[ $rc -eq 0 ] || fail "README.md example exited with $rc (the line traced last above)"
echo "docs_examples: PASS"
