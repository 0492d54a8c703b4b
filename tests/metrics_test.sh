#!/usr/bin/env bash
# --metrics-listen on agiled and agile-memd (ctest metrics, label integration,
# root): a VM with offloaded pages and a failed migration, both endpoints
# scraped over HTTP, the output checked by `promtool check metrics` (Debian's
# prometheus) and for the families the dashboard (contrib/grafana-agile.json) uses.
# Usage: metrics_test.sh BUILD_DIR
set -uo pipefail
BUILD=$(cd "${1:?build dir}" && pwd)
[ "$(id -u)" -eq 0 ] || { echo "metrics_test: needs root (agiled)"; exit 1; }
command -v promtool >/dev/null || { echo "metrics_test: needs promtool (Debian: prometheus; scripts/install-deps)"; exit 1; }
T=$(mktemp -d /tmp/agile-metrics.XXXXXX)
STATE=$T/m$$
CTL=$BUILD/bin/agilectl
export AGILE_HOST=unix:$STATE/agiled.sock
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PM=$(free_port); MM=$(free_port); MA=$(free_port)
memd_pid=
cleanup() {
  [ -S "$STATE/agiled.sock" ] && "$CTL" host shutdown >/dev/null 2>&1
  [ -n "$memd_pid" ] && kill "$memd_pid" 2>/dev/null && wait "$memd_pid" 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "metrics_test: FAIL: $*"; exit 1; }

# scrape URL FILE: GET with retries (the endpoint comes up right after the daemon forks)
scrape() {
  for _ in $(seq 50); do curl -sf "$1" -o "$2" && return 0; sleep 0.2; done
  fail "no answer from $1"
}
# check FILE PATTERN...: each extended regexp matches a line
check() {
  local f=$1
  shift
  for re in "$@"; do
    grep -Eq "$re" "$f" || { grep -F "$(echo "$re" | grep -Eo '^\^[a-z_]+' | tr -d '^')" "$f" | head -5; fail "no line matching '$re' in $(basename "$f")"; }
  done
}

"$BUILD/bin/agiled" --state-dir "$T/bad" --metrics-listen nonsense --daemon 2>/dev/null && fail "agiled took --metrics-listen nonsense"
"$BUILD/bin/agile-memd" --listen "127.0.0.1:$PM" --metrics-listen "127.0.0.1:$MM" >"$T/memd.out" 2>&1 &
memd_pid=$!
"$BUILD/bin/agiled" --state-dir "$STATE" --memd "127.0.0.1:$PM" --metrics-listen "127.0.0.1:$MA" --daemon ||
  fail "agiled did not start"
"$CTL" vm start m1 --memory 128M --workload memtouch --workload-args "size_mib=32 hot_mib=8" >/dev/null ||
  fail "vm start"
sleep 3
"$CTL" vm offload m1 --resident 64M >/dev/null || fail "vm offload"
"$CTL" migrate m1 --to 127.0.0.1:1 >/dev/null 2>&1
[ $? -eq 6 ] || fail "the migration to nowhere did not fail with 6"

scrape "http://127.0.0.1:$MA/metrics" "$T/agiled.txt"
scrape "http://127.0.0.1:$MM/metrics" "$T/memd.txt"
for f in agiled memd; do
  promtool check metrics <"$T/$f.txt" >"$T/$f.lint" 2>&1 || { cat "$T/$f.lint"; fail "promtool check metrics: $f"; }
  echo "ok   promtool check metrics: $f ($(grep -vc '^#' "$T/$f.txt") samples)"
done
check "$T/agiled.txt" \
  '^agile_vm_pages\{state="offloaded",vm="m1"\} [1-9]' \
  '^agile_vm_pages\{state="resident",vm="m1"\} [1-9]' \
  '^agile_vm_faults_total\{kind="first_touch",vm="m1"\} [1-9]' \
  '^agile_vm_fault_latency_seconds_bucket\{kind="first_touch",vm="m1",le="\+Inf"\} [1-9]' \
  '^agile_vm_fault_latency_seconds_sum\{kind="refault",vm="m1"\} ' \
  '^agile_vm_offloaded_bytes_total\{vm="m1"\} [1-9]' \
  '^agile_host_psi_memory_some_avg10_ratio ' \
  '^agile_host_budget_bytes ' \
  '^agile_migrations_total\{mode="agile",outcome="failed"\} 1' \
  '^agile_migration_duration_seconds_count\{mode="agile"\} 1' \
  '^# TYPE agile_migration_duration_seconds histogram'
check "$T/memd.txt" \
  '^agile_memd_namespaces 1' \
  '^agile_memd_pages [1-9]' \
  '^agile_memd_namespace_pages\{namespace="[^"]+",owner="[^"]+"\} [1-9]' \
  '^agile_memd_requests_total\{op="PUT"\} [1-9]' \
  '^agile_memd_request_duration_seconds_bucket\{op="PUT",le="\+Inf"\} [1-9]' \
  '^agile_memd_received_bytes_total [1-9]'
# every metric the dashboard queries exists
if [ -f "$(dirname "$0")/../contrib/grafana-agile.json" ]; then
  tracking=yes
  "$CTL" wss m1 >/dev/null 2>&1 || tracking=no  # a kernel without PAGEMAP_SCAN: no working sets
  for m in $(grep -o 'agile_[a-z0-9_]*' "$(dirname "$0")/../contrib/grafana-agile.json" | sort -u); do
    base=${m%_bucket}
    case "$tracking:$m" in no:agile_vm_wss_bytes | no:agile_vm_tracker_cpu_ratio) continue ;; esac
    grep -Eq "^# TYPE ($m|$base) " "$T/agiled.txt" "$T/memd.txt" || fail "the dashboard uses $m, which neither endpoint serves"
  done
  echo "ok   every metric of contrib/grafana-agile.json is served"
fi
echo "metrics_test: PASS"
