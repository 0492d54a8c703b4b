#!/usr/bin/env bash
# End-to-end check of the agile guest image: boots it under QEMU (TCG) and
#  1. memverify (128 MiB, ~20 s) must print >= 5 "memverify: ok" lines, no
#     BAD/FAIL line, and exit 0;
#  2. memverify with selftest_corrupt=1 must report a BAD page and FAIL,
#     proving the checker can fail.
# Builds the image first (guest/build.sh is cached, so this is cheap).
# Usage: tests/guest_boot_test.sh OUTDIR      Logs: OUTDIR/guest_boot_test/
# Env: GUEST_TEST_SECONDS (default 18; workload run time of test 1),
#      QEMU_ACCEL (default tcg).
set -uo pipefail

[[ $# -eq 1 ]] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$1
LOGS="$OUT/guest_boot_test"
RUN_SECONDS=${GUEST_TEST_SECONDS:-18}
ACCEL=${QEMU_ACCEL:-tcg}
# Boot plus fill take ~4 s here under TCG; the rest is slack for slow hosts.
BOOT_SLACK_SECONDS=60
BASE_APPEND="console=ttyS0 quiet panic=-1"

say() { echo "guest_boot_test: $*"; }

passed=0
failed=0

# Boots the image; writes the serial output to LOG, each line prefixed with
# the milliseconds since QEMU started.  $1 = LOG, $2 = timeout, rest = append.
boot() {
    local log=$1 limit=$2
    shift 2
    local t0=${EPOCHREALTIME/./} line
    timeout "$limit" qemu-system-x86_64 -accel "$ACCEL" -m 512 -nodefaults -nographic \
        -no-reboot -serial stdio -kernel "$OUT/vmlinuz" -initrd "$OUT/initrd.img" \
        -append "$BASE_APPEND $*" </dev/null 2>&1 |
        while IFS= read -r line; do
            # The guest tty ends lines with CR LF.
            printf '%d %s\n' $(((${EPOCHREALTIME/./} - t0) / 1000)) "${line%$'\r'}"
        done >"$log"
}

count() { grep -c -- "$1" "$2"; }

# rc printed by /init when the workload exited, or "none".
exit_rc() {
    sed -n 's/.*agile-guest: workload exited rc=\([0-9]*\).*/\1/p' "$1" | tail -n 1 |
        grep . || echo none
}

first_status_ms() {
    awk '/memverify: (ok|FAIL) / { print $1; exit }' "$1"
}

verdict() { # $1 = name, $2 = 0 for pass, $3 = details, $4 = log
    if [[ $2 -eq 0 ]]; then
        say "$1: PASS ($3)"
        passed=$((passed + 1))
    else
        say "$1: FAIL ($3); last lines of $4:"
        tail -n 15 "$4" | sed 's/^/    /'
        failed=$((failed + 1))
    fi
}

test_clean_run() {
    local log="$LOGS/memverify.log"
    boot "$log" $((RUN_SECONDS + BOOT_SLACK_SECONDS)) agile.workload=memverify \
        memverify.size_mib=128 memverify.duration_s="$RUN_SECONDS"
    local ok bad fail rc first
    ok=$(count 'memverify: ok ' "$log")
    bad=$(count 'memverify: BAD ' "$log")
    fail=$(count 'memverify: FAIL ' "$log")
    rc=$(exit_rc "$log")
    first=$(first_status_ms "$log")
    local status=0
    [[ $ok -ge 5 && $bad -eq 0 && $fail -eq 0 && $rc == 0 ]] || status=1
    verdict memverify-clean "$status" \
        "ok=$ok bad=$bad fail=$fail rc=$rc first status ${first:-never} ms after QEMU start" "$log"
}

test_selftest_detected() {
    local log="$LOGS/memverify-selftest.log"
    # Corruption happens 3 s into the run; the sweep finds it within ~2 s.
    boot "$log" $((10 + BOOT_SLACK_SECONDS)) agile.workload=memverify \
        memverify.size_mib=128 memverify.selftest_corrupt=1 memverify.duration_s=8
    local bad fail rc
    bad=$(count 'memverify: BAD ' "$log")
    fail=$(count 'memverify: FAIL ' "$log")
    rc=$(exit_rc "$log")
    local status=0
    [[ $bad -ge 1 && $fail -ge 1 ]] || status=1
    verdict memverify-selftest "$status" "bad=$bad fail=$fail rc=$rc" "$log"
}

main() {
    command -v qemu-system-x86_64 >/dev/null || { say "qemu-system-x86_64 not found"; exit 1; }
    "$ROOT/guest/build.sh" "$OUT" || { say "guest/build.sh failed"; exit 1; }
    mkdir -p "$LOGS"

    test_clean_run
    test_selftest_detected

    say "$passed passed, $failed failed"
    [[ $failed -eq 0 ]]
}

main
