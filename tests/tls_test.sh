#!/usr/bin/env bash
# Mutual TLS against real daemons (docs/security.md), no VM booted:
#  - a TCP listener off loopback without --tls-dir refuses to start (agiled, agile-memd)
#  - with scripts/agile-pki credentials agilectl works over TCP;
#  - no certificate, or one from another CA: refused (openssl s_client cannot
#    complete the handshake, or gets no byte of the protocol), agilectl too
#  - --allow: a certificate of the right CA but not on the list is refused
#  - qemu_args over TCP are refused, even authenticated
#  - agile-memd with --tls-dir refuses a plain client
# Usage: tls_test.sh BUILD_DIR (root: agiled runs as root)
set -uo pipefail
BUILD=$(cd "${1:?build dir}" && pwd)
SRC=$(cd "$(dirname "$0")/.." && pwd)
BIN=$BUILD/bin
T=$(mktemp -d /tmp/agile-tls.XXXXXX)
failures=0
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok   $*"; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

"$SRC/scripts/agile-pki" "$T/pki" a b c memd >/dev/null || { echo "agile-pki failed"; exit 1; }
"$SRC/scripts/agile-pki" "$T/other" a >/dev/null || { echo "agile-pki failed"; exit 1; }
[ -f "$T/pki/a/server-key.pem" ] && [ -f "$T/pki/a/client-cert.pem" ] && [ -f "$T/pki/a/ca-cert.pem" ] &&
  ok "agile-pki made the tls-creds-x509 layout" || fail "agile-pki layout"
openssl verify -CAfile "$T/pki/ca-cert.pem" "$T/pki/a/server-cert.pem" "$T/pki/b/client-cert.pem" >/dev/null &&
  ok "certificates verify against the CA" || fail "openssl verify"

AGILED_COMMON=(--guest-dir "$BUILD/guest" --shim "$BUILD/lib/libagile-shim.so" --log-level warn)

# --- listener policy ----------------------------------------------------------
P=$(port)
if timeout 10 "$BIN/agile-memd" --listen "0.0.0.0:$P" >"$T/out" 2>"$T/err"; then
  fail "agile-memd started on 0.0.0.0 without --tls-dir"
else
  grep -q -- "--tls-dir" "$T/err" && ok "agile-memd off loopback without --tls-dir refuses to start" ||
    fail "agile-memd refused for another reason: $(cat "$T/err")"
fi
if timeout 10 "$BIN/agiled" --state-dir "$T/x" --listen "0.0.0.0:$P" "${AGILED_COMMON[@]}" >"$T/out" 2>"$T/err"; then
  fail "agiled started on 0.0.0.0 without --tls-dir"
else
  grep -q -- "--tls-dir" "$T/err" && ok "agiled off loopback without --tls-dir refuses to start" ||
    fail "agiled refused for another reason: $(cat "$T/err")"
fi

# --- agiled with TLS ----------------------------------------------------------
PA=$(port)
"$BIN/agiled" --state-dir "$T/a" --listen "127.0.0.1:$PA" --tls-dir "$T/pki/a" --allow a,b "${AGILED_COMMON[@]}" \
  >"$T/agiled.out" 2>"$T/agiled.err" &
pids+=($!)
wait_port "$PA" || { echo "agiled did not start: $(cat "$T/agiled.err")"; exit 1; }

if AGILE_TLS_DIR=$T/pki/b "$BIN/agilectl" -H "127.0.0.1:$PA" --json host info >"$T/out" 2>"$T/err" &&
  python3 -c "import json; assert json.load(open('$T/out'))['id']=='a'"; then
  ok "agilectl with b's certificate (AGILE_TLS_DIR) reaches agiled a over TLS"
else
  fail "agilectl over TLS: $(cat "$T/err")"
fi
"$BIN/agilectl" --tls-dir "$T/pki/b" -H "127.0.0.1:$PA" host info >/dev/null 2>&1 &&
  ok "agilectl --tls-dir works too" || fail "agilectl --tls-dir"
if "$BIN/agilectl" -H "127.0.0.1:$PA" host info >"$T/out" 2>"$T/err"; then
  fail "agilectl without a certificate got an answer"
else ok "agilectl without a certificate is refused"; fi
if "$BIN/agilectl" --tls-dir "$T/other/a" -H "127.0.0.1:$PA" host info >"$T/out" 2>"$T/err"; then
  fail "agilectl with another CA's certificate got an answer"
else ok "agilectl with another CA's certificate is refused"; fi
if "$BIN/agilectl" --tls-dir "$T/pki/c" -H "127.0.0.1:$PA" host info >"$T/out" 2>"$T/err"; then
  fail "agilectl as c (not in --allow a,b) got an answer"
else ok "a certificate of the CA but not in --allow is refused"; fi
if "$BIN/agilectl" --tls-dir "$T/pki/b" -H "127.0.0.1:$PA" vm start v1 --qemu-arg=-nodefaults >"$T/out" 2>"$T/err"; then
  fail "qemu_args accepted over TCP"
else
  grep -q "qemu_args" "$T/err" && ok "qemu_args over TCP refused: $(head -c 120 "$T/err")" ||
    fail "qemu_args over TCP refused for another reason: $(cat "$T/err")"
fi

# openssl s_client: what any TLS client sees.
REQ='{"op":"host.info","args":{}}'
sclient() {  # sclient ARGS...: sends REQ, prints what came back (stdout), status in $?
  { echo "$REQ"; sleep 2; } | timeout 10 openssl s_client -connect "127.0.0.1:$PA" -quiet -no_ign_eof "$@" 2>"$T/sc.err"
}
out=$(sclient -CAfile "$T/pki/ca-cert.pem" -cert "$T/pki/b/client-cert.pem" -key "$T/pki/b/client-key.pem")
echo "$out" | grep -q '"ok":true' && ok "openssl s_client with b's certificate gets an answer" ||
  fail "s_client with a valid certificate: $out $(tail -3 "$T/sc.err")"
# tls12_handshake PORT ARGS...: whether s_client completes a TLS 1.2 handshake
# (it exits 0 after a clean session; 1 when the handshake fails). In TLS 1.3
# the client's side of the handshake ends before the server has checked the
# client's certificate, so there only "no answer" tells.
tls12_handshake() {
  local p=$1
  shift
  timeout 10 openssl s_client -connect "127.0.0.1:$p" -CAfile "$T/pki/ca-cert.pem" -tls1_2 "$@" </dev/null \
    >"$T/sc12.log" 2>&1
}
tls12_handshake "$PA" -cert "$T/pki/b/client-cert.pem" -key "$T/pki/b/client-key.pem" &&
  ok "s_client -tls1_2 with b's certificate completes the handshake" || fail "valid TLS 1.2 handshake: $(tail -3 "$T/sc12.log")"
for v in -tls1_2 -tls1_3; do
  for who in none other; do
    if [ "$who" = none ]; then creds=(); what="without a certificate"
    else creds=(-cert "$T/other/a/client-cert.pem" -key "$T/other/a/client-key.pem"); what="with another CA's certificate"; fi
    out=$({ echo "$REQ"; sleep 2; } | timeout 10 openssl s_client -connect "127.0.0.1:$PA" -CAfile "$T/pki/ca-cert.pem" \
      "${creds[@]}" $v -no_ign_eof 2>&1)
    echo "$out" >"$T/sc.log"
    if grep -q '"ok"' "$T/sc.log"; then
      fail "s_client $v $what got an answer"
    elif [ "$v" = -tls1_2 ] && tls12_handshake "$PA" "${creds[@]}"; then
      fail "s_client $v $what completed the handshake"
    else
      # TLS 1.3: the client's side of the handshake ends before the server
      # checks its certificate; the server then refuses and nothing is answered.
      ok "s_client $v $what: refused ($([ "$v" = -tls1_2 ] && echo "handshake did not complete" || echo "no answer, connection closed"))"
    fi
  done
done
out=$(timeout 10 openssl s_client -connect "127.0.0.1:$PA" -CAfile "$T/pki/ca-cert.pem" -tls1_2 </dev/null 2>&1)
echo "$out" | grep -q "Verify return code: 0" && ok "agiled's server certificate verifies against the CA" ||
  fail "agiled's server certificate: $(echo "$out" | grep -i verify | head -2)"
{ echo "$REQ"; sleep 1; } | timeout 5 bash -c "cat >/dev/tcp/127.0.0.1/$PA" 2>/dev/null
ok "a plain-TCP request does not crash agiled"
AGILE_TLS_DIR=$T/pki/b "$BIN/agilectl" -H "127.0.0.1:$PA" host info >/dev/null 2>&1 &&
  ok "agiled still serves after the refusals" || fail "agiled stopped serving"
grep -q "not in --allow" "$T/agiled.err" && ok "agiled logged the --allow refusal" || fail "no --allow log line"

# --- agile-memd with TLS ------------------------------------------------------
PM=$(port)
"$BIN/agile-memd" --listen "127.0.0.1:$PM" --tls-dir "$T/pki/memd" --log-level warn >"$T/memd.out" 2>"$T/memd.err" &
pids+=($!)
wait_port "$PM" || { echo "agile-memd did not start: $(cat "$T/memd.err")"; exit 1; }
tls12_handshake "$PM" && fail "agile-memd: s_client -tls1_2 without a certificate completed the handshake" ||
  ok "agile-memd: s_client -tls1_2 without a certificate: the handshake does not complete"
tls12_handshake "$PM" -cert "$T/other/a/client-cert.pem" -key "$T/other/a/client-key.pem" && fail "agile-memd: s_client with another CA's certificate completed the handshake" ||
  ok "agile-memd: s_client -tls1_2 with another CA's certificate: the handshake does not complete"
sleep 0.5
tls12_handshake "$PM" -cert "$T/pki/c/client-cert.pem" -key "$T/pki/c/client-key.pem" &&
  ok "agile-memd: s_client -tls1_2 with c's certificate completes the handshake" || fail "agile-memd: valid handshake"
[ "$(grep -c "TLS connection refused" "$T/memd.err")" -ge 2 ] && ok "agile-memd logged both refusals" ||
  fail "agile-memd refusals not logged: $(cat "$T/memd.err")"

if [ "$failures" -eq 0 ]; then echo "tls_test: all passed"; else echo "tls_test: $failures failed"; fi
exit $((failures > 0))
