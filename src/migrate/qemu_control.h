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
// What both QEMUs of a qemu-* mode are set up with before the migration
// starts: capabilities (same on both ends) and parameters that the
// destination needs too (multifd's channel count).
nlohmann::json QemuModeCapabilities(wire::MigMode mode);
nlohmann::json QemuModeParameters(wire::MigMode mode);
// Streams of a multifd migration (qemu-precopy-tuned): one per core here.
constexpr int kMultifdChannels = 2;
// Puts QEMU's own migration stream (device state; all of RAM in the qemu-*
// modes) under the same mutual TLS as agiled's links: a tls-creds-x509 object
// over `tls_dir` (the --tls-dir layout is QEMU's), as the server (destination,
// which verifies the source's client certificate and, through an authz-list,
// admits only `peer` - the identity agiled's own handshake established) or the
// client (source, which checks the destination's certificate names `peer`).
Status EnableQemuTls(MigratingVm* vm, const std::string& tls_dir, bool server, const std::string& peer);
// Picks a free TCP port on host (bind to 0, close) for QEMU's incoming side.
Result<uint16_t> FreePort(const std::string& host);
// Polls query-migrate until "completed" (ok) or "failed"/"cancelled" (error).
// on_status sees every poll's answer (e.g. to notice postcopy-active).
Result<nlohmann::json> WaitForMigration(MigratingVm* vm, int timeout_ms,
                                        const std::function<void(const nlohmann::json&)>& on_status = nullptr);
// Waits until an incoming QEMU has left the "inmigrate" state.
Status WaitIncomingDone(MigratingVm* vm, int timeout_ms);

}  // namespace agile::migrate
