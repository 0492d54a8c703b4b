// QEMU's own migration, driven over QMP: device state only (x-ignore-shared,
// agiled moves guest RAM) for our modes, or all of RAM for the stock
// baselines (qemu-precopy, qemu-postcopy).
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "migrate/migrating_vm.h"
#include "base/status.h"
#include "wire/migrate_proto.h"

namespace agile::migrate {

Status SetCapabilities(MigratingVm* vm, const nlohmann::json& caps);
// Streams of a multifd migration (qemu-precopy-tuned): one per core here.
constexpr int kMultifdChannels = 2;
// QEMU 7.2's defaults for what a fresh QEMU would use.
constexpr uint64_t kQemuDefaultMaxBandwidth = 128ull << 20;  // bytes/s
constexpr uint64_t kQemuDefaultDowntimeMs = 300;
// What both QEMUs of a migration are set up with before it starts, for every
// mode (ours move only device state, x-ignore-shared; the qemu-* modes all of
// RAM): every capability and parameter a mode depends on, stated explicitly
// each time, because QEMU keeps them from the previous migration of the same
// process (docs/reliability.md, finding 3).
nlohmann::json MigrationCapabilities(wire::MigMode mode);
// bandwidth: bytes/s, 0 = QEMU's own default for pre-copy and no cap after
// the switch to post-copy (what a fresh QEMU does).
nlohmann::json MigrationParameters(wire::MigMode mode, uint64_t max_downtime_ms, uint64_t bandwidth);
Status SetUpMigration(MigratingVm* vm, wire::MigMode mode, uint64_t max_downtime_ms = kQemuDefaultDowntimeMs,
                      uint64_t bandwidth = 0);
// Puts QEMU's own migration stream (device state; all of RAM in the qemu-*
// modes) under the same mutual TLS as agiled's links: a tls-creds-x509 object
// over `tls_dir` (the --tls-dir layout is QEMU's), as the server (destination,
// which verifies the source's client certificate and, through an authz-list,
// admits only `peer` - the identity agiled's own handshake established) or the
// client (source, which checks the destination's certificate names `peer`).
Status EnableQemuTls(MigratingVm* vm, const std::string& tls_dir, bool server, const std::string& peer);
// Picks a free TCP port on host (bind to 0, close) for QEMU's incoming side.
Result<uint16_t> FreePort(const std::string& host);
// Polls query-migrate every poll_ms until "completed" (ok) or
// "failed"/"cancelled" (error). on_status sees every poll's answer (e.g. to
// notice postcopy-active). interrupted (e.g. `migrate --cancel`) is checked at
// every poll and ends the wait with kUnavailable. A wait inside the downtime
// (device state) polls every 1 ms: each poll is one QMP round trip to a paused
// QEMU, and the poll period is added to the downtime (half of it on average).
Result<nlohmann::json> WaitForMigration(MigratingVm* vm, int timeout_ms,
                                        const std::function<void(const nlohmann::json&)>& on_status = nullptr,
                                        const std::function<bool()>& interrupted = nullptr, int poll_ms = 5);
// Waits until an incoming QEMU has left the "inmigrate" state (polled every
// 1 ms: it is inside the downtime).
Status WaitIncomingDone(MigratingVm* vm, int timeout_ms);

}  // namespace agile::migrate
