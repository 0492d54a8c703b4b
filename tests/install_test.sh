#!/usr/bin/env bash
# `make install`'s layout (cmake --install into a temporary DESTDIR, as the
# Makefile's install target does), the units pass `systemd-analyze verify`,
# the man pages render, the example configs parse, --version prints.
# Usage: install_test.sh BUILD_DIR        (ctest install_layout)
set -uo pipefail
BUILD=$(cd "${1:?build dir}" && pwd)
T=$(mktemp -d /tmp/agile-install.XXXXXX)
trap 'rm -rf "$T"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

for prefix in /usr /opt/agile; do
  D=$T/dest$(echo "$prefix" | tr / _)
  DESTDIR=$D cmake --install "$BUILD" --prefix "$prefix" >"$T/log" 2>&1 || { cat "$T/log"; fail "cmake --install --prefix $prefix"; continue; }
  P=$D$prefix
  etc=$([ "$prefix" = /usr ] && echo "$D/etc" || echo "$P/etc")
  for f in bin/agiled bin/agilectl bin/agile-memd bin/agile-qemu lib/agile/libagile-shim.so \
           share/man/man8/agiled.8 share/man/man8/agile-memd.8 share/man/man1/agilectl.1 \
           lib/systemd/system/agiled.service lib/systemd/system/agile-memd.service; do
    [ -e "$P/$f" ] || fail "$prefix: missing $f"
  done
  for f in agiled.conf agile-memd.conf; do [ -f "$etc/agile/$f" ] || fail "$prefix: missing $etc/agile/$f"; done
  [ -f "$BUILD/guest/vmlinuz" ] && { [ -f "$P/share/agile/guest/vmlinuz" ] || fail "$prefix: guest image not installed"; }
  grep -q "^ExecStart=$prefix/bin/agiled --config ${etc#"$D"}/agile/agiled.conf" "$P/lib/systemd/system/agiled.service" ||
    fail "$prefix: agiled.service ExecStart: $(grep ExecStart "$P/lib/systemd/system/agiled.service")"
  for prog in agiled agilectl agile-memd; do
    "$P/bin/$prog" --version | grep -q "^$prog " || fail "$prefix: $prog --version"
  done
  # The installed agiled finds its shim and guest image from its own path.
  # (grep without -q: -q stops reading at the match, agiled's --help then dies
  # of SIGPIPE, and pipefail counts that as a failure.)
  if [ -f "$BUILD/guest/vmlinuz" ]; then
    "$P/bin/agiled" --help | grep "$prefix/bin/../lib/agile/libagile-shim.so" >/dev/null || fail "$prefix: agiled's default --shim"
    "$P/bin/agiled" --help | grep "$prefix/bin/../share/agile/guest" >/dev/null || fail "$prefix: agiled's default --guest-dir"
  fi
  # The example configs are valid for the programs (every key a flag).
  "$P/bin/agile-memd" --config "$etc/agile/agile-memd.conf" --help >/dev/null || fail "agile-memd rejects its example config"
  "$P/bin/agiled" --config "$etc/agile/agiled.conf" --help >/dev/null || fail "agiled rejects its example config"
  for page in "$P"/share/man/man*/*; do
    MANWIDTH=80 man -l "$page" 2>/dev/null | grep -q -- "--version" || fail "man page $page does not render or lacks --version"
  done
done

# systemd-analyze verify: on copies of the /usr units whose ExecStart points
# into the DESTDIR (verify checks that the binaries exist).
D=$T/dest_usr
mkdir -p "$T/units"
for u in agiled.service agile-memd.service; do
  sed "s#=/usr/bin/#=$D/usr/bin/#; s#--config /etc/#--config $D/etc/#" "$D/usr/lib/systemd/system/$u" >"$T/units/$u"
done
SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no "$T/units/agiled.service" "$T/units/agile-memd.service" \
  >"$T/verify" 2>&1 || { cat "$T/verify"; fail "systemd-analyze verify"; }
# Anything it says about our units is a finding (it may talk about the host's own units).
grep -E "agiled.service|agile-memd.service" "$T/verify" && fail "systemd-analyze verify has remarks on our units"

# Config files: a value in the file is used, the command line wins, a given missing file is an error.
printf 'listen = "127.0.0.1:0"\ncapacity = "lots"\n' >"$T/memd.conf"
"$D/usr/bin/agile-memd" --config "$T/memd.conf" >"$T/out" 2>&1 && fail "agile-memd took capacity = lots"
grep -q "capacity" "$T/out" || fail "agile-memd's error does not name capacity: $(cat "$T/out")"
"$D/usr/bin/agile-memd" --config "$T/missing.conf" --listen 127.0.0.1:0 >"$T/out" 2>&1
[ $? -eq 2 ] || fail "agile-memd with a missing --config did not exit 2"
"$D/usr/bin/agiled" --config "$T/missing.conf" --help >/dev/null 2>&1 ; # --help wins, any status
"$D/usr/bin/agiled" --config "$T/missing.conf" --state-dir "$T/s" >"$T/out" 2>&1
[ $? -eq 2 ] || fail "agiled with a missing --config did not exit 2: $(cat "$T/out")"

[ $failures -eq 0 ] && echo "install_test: PASS" || echo "install_test: $failures FAILED"
exit $((failures > 0))
