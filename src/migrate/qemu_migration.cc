#include "migrate/qemu_migration.h"

#include <spdlog/spdlog.h>

#include "migrate/qemu_control.h"
#include "vm/fault_server.h"
#include "wire/migrate_proto.h"

namespace agile::migrate {
using nlohmann::json;

namespace {
// A ROUND frame this often keeps the destination from timing out.
constexpr uint64_t kKeepaliveNs = 5'000'000'000;
constexpr int kMigrationTimeoutMs = 3600 * 1000;
}  // namespace

Status QemuMigration::Run(const std::string& uri, uint64_t t0_ns, Report* report, bool* switched,
                          const std::function<void(uint32_t round)>& progress) {
  auto ms = [t0_ns] { return static_cast<double>(vm::NowNs() - t0_ns) / 1e6; };
  using wire::MigMode;
  // qemu-postcopy switches as soon as the migration is active; qemu-hybrid
  // after the first full pass (the second dirty sync): pre-copy moves what
  // it can once, post-copy the rest, as libvirt's --postcopy-after-precopy.
  const bool postcopy = opt_.mode == MigMode::kQemuPostcopy || opt_.mode == MigMode::kQemuHybrid;
  const uint64_t postcopy_after_syncs = opt_.mode == MigMode::kQemuHybrid ? 2 : 0;
  AGILE_RETURN_IF_ERROR(SetUpMigration(vm_, opt_.mode, opt_.max_downtime_ms, opt_.bandwidth));
  AGILE_RETURN_IF_ERROR(vm_->Qmp("migrate", {{"uri", uri}}).status().Annotate("QMP migrate " + uri));
  bool started_post = false;
  uint32_t round = 0;
  uint64_t last_keepalive_ns = vm::NowNs();
  uint64_t last_moved_ns = vm::NowNs(), last_transferred = 0;
  bool stalled = false, in_postcopy = false, told_ignored = false, cancel_won = false;
  // QEMU's post-copy stream broke (the destination QEMU died, or the link):
  // QEMU then waits in postcopy-paused for a postcopy-recover that agiled
  // does not drive in the qemu-* modes, for ever (soak seed 7, run 295), or
  // hangs its completion in postcopy-active (run 167 of session 9's soak).
  uint64_t post_paused_since_ns = 0;
  std::string post_broken;  // why the job gives up on QEMU's post-copy; empty while it goes on
  auto interrupted = [&] {
    if (!post_broken.empty()) return true;
    // Once QEMU was asked to switch to post-copy it may do so at any moment,
    // and QEMU 7.2's migrate_cancel during post-copy breaks the guest at both
    // ends: the request is the commit point of qemu-postcopy and -hybrid
    // (a cancel here left a job hanging and a broken guest: soak seed 6,
    // run 119). QEMU's own outcome decides from then on.
    if (in_postcopy || started_post) {
      if (!told_ignored && opt_.interrupted && opt_.interrupted()) {
        told_ignored = true;
        spdlog::warn("vm {}: cancel ignored: QEMU was asked to switch to post-copy (the commit point of {}); the "
                     "migration completes", vm_->spec().name, wire::MigModeName(opt_.mode));
      }
      return false;
    }
    return stalled || cancel_won || (opt_.interrupted && opt_.interrupted());
  };
  auto st = WaitForMigration(vm_, kMigrationTimeoutMs, [&](const json& q) {
    std::string s = q.value("status", "");
    if (q.contains("ram")) {
      round = static_cast<uint32_t>(q["ram"].value("dirty-sync-count", 0ull));
      report->bytes_sent = q["ram"].value("transferred", 0ull);
    }
    if (s == "postcopy-active") in_postcopy = true;
    if (s != "postcopy-paused") {
      post_paused_since_ns = 0;
    } else if (post_paused_since_ns == 0) {
      post_paused_since_ns = vm::NowNs();
      spdlog::error("vm {}: QEMU's post-copy stream to the destination broke (status postcopy-paused); the job "
                    "fails if it stays so for {} ms", vm_->spec().name, opt_.stall_ms);
    } else if (vm::NowNs() - post_paused_since_ns > static_cast<uint64_t>(opt_.stall_ms) * 1000000ULL) {
      post_broken = "stayed postcopy-paused for " + std::to_string(opt_.stall_ms) + " ms";
    }
    if (report->bytes_sent != last_transferred) {
      last_transferred = report->bytes_sent;
      last_moved_ns = vm::NowNs();
    } else if (opt_.stall_ms > 0 && vm::NowNs() - last_moved_ns > static_cast<uint64_t>(opt_.stall_ms) * 1000000ULL) {
      stalled = true;
    }
    // Our own connection carries nothing while QEMU migrates; without a
    // frame now and then the destination agiled would take the silence for
    // a dead source and drop its incoming QEMU under a long pre-copy.
    if (vm::NowNs() - last_keepalive_ns > kKeepaliveNs) {
      last_keepalive_ns = vm::NowNs();
      std::vector<uint8_t> f;
      wire::AppendRound(&f, round, q.contains("ram") ? q["ram"].value("normal", 0ull) : 0);
      (void)ch_->Send(f);  // a broken connection shows in QEMU's own migration and in DONE
      if (progress) progress(round);
    }
    // Post-copy: ask for the switch once the migration is active (and, for
    // the hybrid, has finished its first pass); QEMU then moves to post-copy
    // at its next opportunity, pulling the rest on demand.
    if (postcopy && !started_post && !cancel_won && s == "active" && round >= postcopy_after_syncs) {
      // Publish the commit point first, then look at the cancel: one asked
      // before the publication was answered as accepted and wins; one asked
      // after it is refused by its answerer. Never both.
      if (opt_.committing) opt_.committing();
      if (opt_.interrupted && opt_.interrupted())
        cancel_won = true;
      else
        started_post = vm_->Qmp("migrate-start-postcopy").ok();
    }
    const bool past_switch = started_post || in_postcopy;
    if (past_switch && post_broken.empty() &&
        vm::NowNs() - last_moved_ns > static_cast<uint64_t>(opt_.post_stall_ms) * 1000000ULL)
      post_broken = "moved no byte for " + std::to_string(opt_.post_stall_ms) + " ms past the switch (status " + s + ")";
    if (s == "postcopy-active" && report->switchover_ms == 0) {
      report->switchover_ms = ms();
      if (q.contains("ram")) report->pages_precopied = q["ram"].value("normal", 0ull);
    }
  }, interrupted);
  if (!st.ok() && !post_broken.empty())
    st = Unavailable("QEMU's post-copy stream to the destination " + post_broken +
                     " (the destination QEMU is gone, or the link is): the guest's state is split between both "
                     "QEMUs, which agiled does not recover in the " + std::string(wire::MigModeName(opt_.mode)) +
                     " mode; this QEMU stays paused (a destination QEMU still running holds the guest's CPU state)");
  else if (!st.ok() && stalled)
    st = Unavailable("QEMU's migration stream moved no byte for " + std::to_string(opt_.stall_ms) +
                     " ms (link down or destination stuck)");
  if (!st.ok()) {
    if (postcopy && started_post) *switched = true;  // nothing to resume: the guest ran at the destination
    return st.status();
  }
  *switched = true;
  report->rounds = round;
  report->downtime_ms = st->value("downtime", 0.0);
  if (st->contains("ram")) {
    const json& ram = (*st)["ram"];
    report->bytes_sent = ram.value("total", 0ull) > 0 ? ram.value("transferred", 0ull) : 0;
    uint64_t normal = ram.value("normal", 0ull);
    if (report->pages_precopied > 0 && report->pages_precopied <= normal) {
      report->pages_postcopied = normal - report->pages_precopied;  // sent after the switch
    } else {
      report->pages_precopied = normal;
    }
    report->pages_demand = ram.value("postcopy-requests", 0ull);
  }
  if (report->switchover_ms == 0) report->switchover_ms = ms();
  return Status::Ok();
}

}  // namespace agile::migrate
