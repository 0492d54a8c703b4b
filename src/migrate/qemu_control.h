// QEMU's own migration, driven over QMP: device state only (x-ignore-shared,
// agiled moves guest RAM) for our modes, or all of RAM for the stock
// baselines (qemu-precopy, qemu-postcopy).
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "migrate/migrating_vm.h"
#include "base/status.h"

namespace agile::migrate {

Status SetCapabilities(MigratingVm* vm, const nlohmann::json& caps);
// Picks a free TCP port on host (bind to 0, close) for QEMU's incoming side.
Result<uint16_t> FreePort(const std::string& host);
// Polls query-migrate until "completed" (ok) or "failed"/"cancelled" (error).
// on_status sees every poll's answer (e.g. to notice postcopy-active).
Result<nlohmann::json> WaitForMigration(MigratingVm* vm, int timeout_ms,
                                        const std::function<void(const nlohmann::json&)>& on_status = nullptr);
// Waits until an incoming QEMU has left the "inmigrate" state.
Status WaitIncomingDone(MigratingVm* vm, int timeout_ms);

}  // namespace agile::migrate
