#include "migrate/qemu_control.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <thread>

#include "base/socket.h"

namespace agile::migrate {
using nlohmann::json;

Status SetCapabilities(MigratingVm* vm, const json& caps) {
  json list = json::array();
  for (auto& [k, v] : caps.items()) list.push_back({{"capability", k}, {"state", v}});
  return vm->Qmp("migrate-set-capabilities", {{"capabilities", list}}).status();
}

json MigrationCapabilities(wire::MigMode mode) {
  using wire::MigMode;
  // Every capability any of our modes turns on, each set to true or false:
  // QEMU keeps them from one migration to the next, and a VM that left (or
  // tried to leave) by qemu-postcopy still had postcopy-ram on for its next
  // qemu-precopy-tuned, whose destination refused it (docs/reliability.md,
  // finding 3).
  const bool tuned = mode == MigMode::kQemuPrecopyTuned;
  json caps = json::object();
  caps["x-ignore-shared"] = !wire::IsQemuMode(mode);  // agiled moves guest RAM in its own modes
  caps["postcopy-ram"] = mode == MigMode::kQemuPostcopy || mode == MigMode::kQemuHybrid;
  caps["auto-converge"] = tuned;  // throttles the vCPUs until the dirty rate fits the link
  caps["multifd"] = tuned;        // several streams instead of one
  return caps;
}

json MigrationParameters(wire::MigMode mode, uint64_t max_downtime_ms, uint64_t bandwidth) {
  (void)mode;  // the same set for every mode: each value is stated, none left from before
  json params = json::object();
  params["multifd-channels"] = kMultifdChannels;  // read only with multifd; must match on both ends
  params["downtime-limit"] = max_downtime_ms;
  params["max-bandwidth"] = bandwidth > 0 ? bandwidth : kQemuDefaultMaxBandwidth;
  params["max-postcopy-bandwidth"] = bandwidth;  // post-copy has its own cap; 0 is QEMU's "none"
  return params;
}

Status SetUpMigration(MigratingVm* vm, wire::MigMode mode, uint64_t max_downtime_ms, uint64_t bandwidth) {
  AGILE_RETURN_IF_ERROR(SetCapabilities(vm, MigrationCapabilities(mode)).Annotate("QMP migrate-set-capabilities"));
  return vm->Qmp("migrate-set-parameters", MigrationParameters(mode, max_downtime_ms, bandwidth))
      .status()
      .Annotate("QMP migrate-set-parameters");
}

Status EnableQemuTls(MigratingVm* vm, const std::string& tls_dir, bool server, const std::string& peer) {
  if (peer.empty()) return InvalidArgument("QEMU migration TLS needs the peer's identity");
  // The identity goes into a glob and a distinguished name below: a name with
  // glob or DN metacharacters could admit others, so it is refused outright.
  if (peer.find_first_of("*?[]\\,=+<>#;\"") != std::string::npos)
    return PermissionDenied("peer identity '" + peer + "' has characters QEMU's TLS authorization cannot match exactly");
  // A VM migrates at most once at a time, but may migrate again later (or
  // back): the objects are made once and reused.
  const std::string creds_id = server ? "agile-mig-tls-server" : "agile-mig-tls-client";
  auto have = vm->Qmp("qom-list", {{"path", "/objects/" + creds_id}});
  if (!have.ok()) {
    AGILE_RETURN_IF_ERROR(vm->Qmp("object-add", {{"qom-type", "tls-creds-x509"},
                                                 {"id", creds_id},
                                                 {"dir", tls_dir},
                                                 {"endpoint", server ? "server" : "client"},
                                                 {"verify-peer", true}})
                              .status()
                              .Annotate("QMP object-add tls-creds-x509"));
  }
  json params = {{"tls-creds", creds_id}};
  if (server) {
    // QEMU matches the client certificate's distinguished name as GnuTLS
    // renders it root-first ("O=agile,CN=NAME"; seen with QEMU 7.2), so the
    // rules admit exactly certificates whose last (common) name is the peer;
    // the CA is ours, so nobody gets a stranger's names signed.
    const std::string authz_id = "agile-mig-authz";
    (void)vm->Qmp("object-del", {{"id", authz_id}});  // absent the first time
    json rules = json::array({json{{"match", "CN=" + peer}, {"policy", "allow"}, {"format", "exact"}},
                              json{{"match", "*,CN=" + peer}, {"policy", "allow"}, {"format", "glob"}}});
    AGILE_RETURN_IF_ERROR(
        vm->Qmp("object-add", {{"qom-type", "authz-list"}, {"id", authz_id}, {"policy", "deny"}, {"rules", rules}})
            .status()
            .Annotate("QMP object-add authz-list"));
    params["tls-authz"] = authz_id;
  } else {
    params["tls-hostname"] = peer;  // the destination's certificate must name it
  }
  return vm->Qmp("migrate-set-parameters", params).status().Annotate("QMP migrate-set-parameters (TLS)");
}

Result<uint16_t> FreePort(const std::string& host) {
  AGILE_ASSIGN_OR_RETURN(UniqueFd fd, TcpListen(HostPort{host, 0}, 1));
  return BoundPort(fd.get());
}

Result<json> WaitForMigration(MigratingVm* vm, int timeout_ms, const std::function<void(const json&)>& on_status,
                              const std::function<bool()>& interrupted, int poll_ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    AGILE_ASSIGN_OR_RETURN(json st, vm->Qmp("query-migrate"));
    if (on_status) on_status(st);
    std::string s = st.value("status", "");
    if (s == "completed") return st;
    if (s == "failed" || s == "cancelled")
      return Internal("QEMU migration " + s + (st.contains("error-desc") ? ": " + st["error-desc"].get<std::string>() : ""));
    if (interrupted && interrupted()) return Unavailable("interrupted while QEMU migrates (migration cancelled)");
    if (std::chrono::steady_clock::now() > end)
      return Unavailable("QEMU migration did not complete within " + std::to_string(timeout_ms) + " ms (" + s + ")");
    std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms));
  }
}

Status WaitIncomingDone(MigratingVm* vm, int timeout_ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    AGILE_ASSIGN_OR_RETURN(json st, vm->Qmp("query-status"));
    std::string s = st.value("status", "");
    if (s != "inmigrate") return Status::Ok();
    if (std::chrono::steady_clock::now() > end) return Unavailable("QEMU still waiting for device state");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace agile::migrate
