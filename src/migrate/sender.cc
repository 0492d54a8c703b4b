#include "migrate/sender.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <thread>

#include "base/fault_point.h"
#include "base/io.h"
#include "base/socket.h"
#include "migrate/qemu_control.h"
#include "migrate/qemu_migration.h"
#include "vm/fault_server.h"

namespace agile::migrate {
using nlohmann::json;
using wire::MigMode;
using wire::PageWhere;

namespace {
constexpr size_t kPage = 4096;
constexpr int kSliceMs = 100;  // how often a wait for the peer looks at a cancel
// ABORT is a courtesy on a link that may be dead: the destination drops its
// copy on its own when the source goes silent.
constexpr int kAbortSendMs = 1000;
}  // namespace

Sender::Sender(MigratingVm* vm, std::string host_id, SendOptions opts)
    : vm_(vm), mem_(vm->memory()), store_(vm->store()), host_id_(std::move(host_id)), opt_(std::move(opts)) {
  report_.mode = wire::MigModeName(opt_.mode);
  report_.vm = vm_->spec().name;
  report_.destination = opt_.to;
  report_.ram_total = vm_->spec().memory_bytes;
}

Sender::~Sender() {
  if (ch_) ch_->Shutdown();
  if (reader_.joinable()) reader_.join();
}

double Sender::Ms() const { return static_cast<double>(vm::NowNs() - t0_ns_) / 1e6; }

Status Sender::CheckCancel() const {
  if (opt_.cancel && opt_.cancel->load()) {
    cancelled_ = true;
    return Status(Code::kUnavailable, "migration cancelled by the operator");
  }
  return Status::Ok();
}

bool Sender::Interrupted() const {
  if (switched_ || !opt_.cancel || !opt_.cancel->load()) return false;
  cancelled_ = true;
  return true;
}

template <typename Pred>
bool Sender::WaitPeer(std::unique_lock<std::mutex>& l, int timeout_ms, bool cancellable, Pred pred) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    if (cancellable && opt_.cancel && opt_.cancel->load()) {
      cancelled_ = true;
      return false;
    }
    cv_.wait_for(l, std::chrono::milliseconds(kSliceMs));
  }
  return true;
}

Status Sender::PeerStatus() {
  std::lock_guard<std::mutex> l(mu_);
  return peer_status_;
}

void Sender::Progress(const char* phase, uint64_t dirty, bool force) {
  const uint64_t now = vm::NowNs();
  // qemu-* modes: QEMU's own stream (report_.bytes_sent, from query-migrate) carries the pages.
  const uint64_t bytes =
      std::max(report_.bytes_sent, prior_bytes_ + (ch_ ? ch_->bytes_sent() : 0) + report_.device_state_bytes);
  if (!force && phase == last_phase_ && now - last_progress_ns_ < 250'000'000) return;
  if (last_progress_ns_ != 0 && now - last_progress_ns_ >= 100'000'000)
    mbps_ = static_cast<double>(bytes - last_progress_bytes_) * 8 / 1e3 / (static_cast<double>(now - last_progress_ns_) / 1e6);
  last_phase_ = phase;
  last_progress_ns_ = now;
  last_progress_bytes_ = bytes;
  const uint64_t remaining = dirty * kPage;
  report_.ram_remaining = remaining;
  const uint64_t postcopied = (postcopy_ ? postcopy_->postcopied() : 0) + report_.pages_postcopied;
  json p = {{"status", StatusOfPhase(phase, switched_)},
            {"phase", phase},
            {"mode", report_.mode},
            {"vm", report_.vm},
            {"destination", report_.destination},
            {"total-time", Ms()},
            {"setup-time", report_.setup_time_ms},
            {"ram",
             {{"transferred", bytes},
              {"remaining", remaining},
              {"total", report_.ram_total},
              {"mbps", mbps_},
              {"dirty-pages-rate", report_.dirty_pages_rate},
              {"dirty-sync-count", round_.load()}}},
            {"pages-precopied", report_.pages_precopied},
            {"disk-transferred", report_.disk_bytes},
            {"pages-postcopied", postcopied},
            // 0.x names, kept for one release
            {"elapsed_ms", Ms()},
            {"round", round_.load()},
            {"bytes_sent", bytes},
            {"pages_precopied", report_.pages_precopied},
            {"pages_postcopied", postcopied},
            {"dirty_pages", dirty},
            {"page_rate", page_rate_}};
  if (page_rate_ > 0 && dirty > 0) {
    double s = static_cast<double>(dirty) / page_rate_;
    p["expected-downtime"] = s * 1e3;  // were the VM stopped now for the rest
    p["remaining-time"] = s * 1e3;
    p["eta_s"] = s;
  } else if (mbps_ > 0 && remaining > 0) {
    // Before the first full round: the rest at the current byte rate.
    p["remaining-time"] = static_cast<double>(remaining) * 8 / 1e3 / mbps_;
  }
  if (!recovery_.is_null()) p["recovery"] = recovery_;
  vm_->SetMigrationStatus(p);
  if (opt_.progress) opt_.progress(p);
}

Report Sender::Run() {
  t0_ns_ = vm::NowNs();
  const bool qemu_mode = wire::IsQemuMode(opt_.mode);
  Status s;
  const bool stock = mem_ == nullptr;
  if (stock != qemu_mode)
    s = InvalidArgument(qemu_mode ? "qemu-* modes migrate stock VMs (vm start --stock); use agile, precopy or postcopy"
                                  : "stock VMs can only use qemu-precopy or qemu-postcopy");
  if (s.ok() && opt_.copy_storage && vm_->spec().disks.empty())
    s = InvalidArgument("--copy-storage: the VM has no disks");
  if (s.ok() && opt_.copy_storage && qemu_mode)
    s = Unsupported("--copy-storage works with the agile, precopy and postcopy modes (not yet with qemu-*)");
  // The disks would cross in clear text beside a TLS link (QEMU's NBD
  // stream is not under the hosts' TLS yet): refused rather than leaked.
  if (s.ok() && opt_.copy_storage && opt_.tls)
    s = Unsupported("--copy-storage does not run under --tls-dir yet (the NBD stream would not be encrypted)");
  const bool outgoing = s.ok() && !qemu_mode;
  if (outgoing) vm_->BeginOutgoing();  // no offload, no tracking scans (they would take pre-copy's dirty bits)
  if (s.ok()) s = Handshake();
  if (s.ok()) {
    reader_ = std::thread([this] { ReaderLoop(); });
    if (qemu_mode) {
      s = RunQemuMode();
    } else {
      if (opt_.copy_storage) s = MirrorDisks();
      if (s.ok() && opt_.mode != MigMode::kPostcopy) s = PrecopyRounds();
      // Device state only; a VM that once left by a qemu-* mode must not keep
      // that mode's capabilities (postcopy-ram, multifd) for this one. Stated
      // before the pause: QEMU reads them only at `migrate`, and two QMP
      // round trips fewer fall in the downtime.
      if (s.ok()) s = SetUpMigration(vm_, opt_.mode);
      if (s.ok()) s = StopAndCopy();
      if (s.ok()) s = SendLocations();
      if (s.ok()) s = DeviceState();
      if (s.ok()) s = Switchover();
      if (s.ok() && (opt_.mode == MigMode::kPostcopy || precopy_.tail) && !completed_there_) s = PostcopyPush();
    }
  }
  return Conclude(s, outgoing);
}

Report Sender::Conclude(const Status& s, bool outgoing) {
  if (!s.ok()) {
    report_.ok = false;
    report_.status = cancelled_ && !switched_ ? kStatusCancelled : kStatusFailed;
    report_.error = s.ToString();
    report_.total_time_ms = Ms();
    if (!switched_) Abort(s.message());
    if (outgoing) (void)vm_->EndOutgoing(/*migrated=*/false, /*keep_store=*/false);
    if (record_saved_) {
      // Past the commit point (or unsure of it) the VM stays paused and
      // fenced here, across restarts too, but nobody re-dials any more;
      // before it the VM is this host's again and the record goes.
      Status r;
      if ((switched_ && !handed_back_) || fenced_) {
        MigrationRecord rec = Record();
        rec.recover = false;
        r = vm_->SaveMigrationRecord(&rec);
      } else {
        r = vm_->SaveMigrationRecord(nullptr);
      }
      if (!r.ok()) spdlog::error("vm {}: migration record: {}", report_.vm, r.ToString());
    }
    spdlog::error("vm {}: migration to {} failed: {}", report_.vm, opt_.to, s.ToString());
  } else {
    report_.ok = true;
    report_.status = kStatusCompleted;
    report_.ram_remaining = 0;
    // Nothing of the VM stays here: QEMU stops, guest RAM is freed, and in
    // agile mode the store namespace stays with its new owner.
    Status r = vm_->EndOutgoing(/*migrated=*/true, /*keep_store=*/opt_.mode == MigMode::kAgile);
    if (!r.ok()) spdlog::warn("vm {}: cleanup after migration: {}", report_.vm, r.ToString());
    report_.total_time_ms = Ms();
    spdlog::info("vm {}: migrated to {} ({}) in {:.0f} ms, downtime {:.0f} ms, {} bytes", report_.vm, opt_.to,
                 report_.mode, report_.total_time_ms, report_.downtime_ms, report_.bytes_sent);
  }
  if (ch_) report_.bytes_sent = std::max(report_.bytes_sent, prior_bytes_ + ch_->bytes_sent() + report_.device_state_bytes);
  vm_->SetMigrationStatus(nullptr);
  return report_;
}

MigrationRecord Sender::Record() const {
  MigrationRecord r;
  r.vm = report_.vm;
  r.role = MigrationRecord::Role::kSource;
  r.mode = opt_.mode;
  r.id_lo = mig_id_lo_;
  r.id_hi = mig_id_hi_;
  r.peer_host = dest_id_;
  r.peer_addr = opt_.to;
  r.tail = precopy_.tail;
  r.lease = lease_;
  r.resume = was_running_;
  r.bandwidth = opt_.bandwidth;
  r.pages = mem_ ? mem_->pages() : 0;
  return r;
}

Report Sender::ResumeAfterRestart(const MigrationRecord& rec) {
  t0_ns_ = vm::NowNs();
  Status s;
  if (mem_ == nullptr || rec.role != MigrationRecord::Role::kSource || rec.pages != mem_->pages() ||
      (rec.mode != MigMode::kPostcopy && !(rec.mode == MigMode::kAgile && rec.tail)))
    s = InvalidArgument("vm " + report_.vm + ": the migration record names no post-copy this VM was the source of");
  // The state of the migration as the previous agiled left it at the commit
  // point: SWITCHOVER sent, the VM paused and fenced here with every page.
  opt_.mode = rec.mode;
  report_.mode = wire::MigModeName(rec.mode);
  report_.destination = opt_.to = rec.peer_addr;
  dest_id_ = rec.peer_host;
  mig_id_lo_ = rec.id_lo;
  mig_id_hi_ = rec.id_hi;
  lease_ = rec.lease;
  was_running_ = rec.resume;  // a VM handed back after all resumes only if it ran
  fenced_ = true;
  switched_ = true;
  record_saved_ = true;
  precopy_.tail = rec.tail;
  const bool outgoing = s.ok();
  if (s.ok()) {
    vm_->BeginOutgoing();  // no offload, no tracking: the destination may still need any page
    // Which pages the destination lacks is its answer to RESUME (Rescope);
    // until then nothing is pushed. The tail's pages are whatever it lists.
    tail_bm_.assign(mem_->pages(), 1);
    stream_ = std::make_unique<PageStream>(mem_.get(), store_, nullptr);
    stream_->RetryStoreReadsFor(opt_.timeouts.migrate_peer_ms / 2);
    postcopy_ = std::make_unique<PostcopyServer>(mem_.get(), stream_.get(), opt_.prepage);
    spdlog::warn("vm {}: agiled restarted during its post-copy migration to {} ({}): the VM stays paused and "
                 "fenced here with every page; re-dialing the destination to resume where it stopped",
                 report_.vm, dest_id_, opt_.to);
    const char* phase = rec.tail ? "postcopy-tail" : "postcopy-push";
    s = Recover(Unavailable("agiled restarted after the commit point"), phase);
    if (s.ok() && !completed_there_) s = PostcopyPush();
  }
  return Conclude(s, outgoing);
}

Result<std::unique_ptr<Channel>> Sender::Dial(const std::string& to, std::string* cert) {
  tls::ConnectOptions co;
  co.user_timeout_ms = opt_.timeouts.migrate_io_ms;
  co.keepalive_idle_s = opt_.timeouts.keepalive_idle_s;
  co.keepalive_interval_s = opt_.timeouts.keepalive_interval_s;
  auto sec = tls::ConnectAddress(to, opt_.tls, co);
  if (!sec.ok()) return sec.status().Annotate("connect to destination agiled " + to);
  *cert = sec->peer;
  auto ch = std::make_unique<Channel>(std::move(sec->fd), opt_.timeouts.migrate_io_ms);
  ch->set_rate_limit(opt_.bandwidth);
  ch->set_interrupt([this] { return Interrupted(); });
  return ch;
}

Status Sender::Handshake() {
  AGILE_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(opt_.to));
  dest_host_ = hp.host;
  std::string dest_cert;
  AGILE_ASSIGN_OR_RETURN(ch_, Dial(opt_.to, &dest_cert));
  wire::MigHello hello;
  hello.mode = opt_.mode;
  hello.page_count = vm_->spec().memory_bytes / kPage;
  hello.spec_json = vm_->spec().ToJson().dump();
  hello.src_host = host_id_;
  if (store_) {
    hello.store_addr = store_->addr();
    hello.store_vm_id = store_->store_vm_id();
  }
  if (opt_.copy_storage) {
    AGILE_ASSIGN_OR_RETURN(hello.copy_disk_bytes, DiskSizes(vm_));
  }
  // Names this migration to the destination for a RESUME after a lost link:
  // random, so neither a stale source nor a guess takes it over.
  std::random_device rd;
  mig_id_lo_ = (static_cast<uint64_t>(rd()) << 32) | rd();
  mig_id_hi_ = (static_cast<uint64_t>(rd()) << 32) | rd();
  hello.migration_id_lo = mig_id_lo_;
  hello.migration_id_hi = mig_id_hi_;
  std::vector<uint8_t> f;
  wire::AppendHello(&f, hello);
  AGILE_RETURN_IF_ERROR(ch_->Send(f));
  Progress("handshake");
  std::vector<uint8_t> payload;
  AGILE_ASSIGN_OR_RETURN(auto h, ch_->Receive(&payload, opt_.timeouts.migrate_peer_ms));
  if (h.type == static_cast<uint16_t>(wire::MigMsg::kAbort)) {
    auto why = wire::DecodeAbort(payload);
    return Unavailable("destination refused: " + (why.ok() ? *why : why.status().ToString()));
  }
  if (h.type != static_cast<uint16_t>(wire::MigMsg::kHelloAck))
    return Corruption(std::string("expected HELLO_ACK, got ") + wire::MigMsgName(h.type));
  AGILE_ASSIGN_OR_RETURN(auto ack, wire::DecodeHelloAck(payload));
  if (ack.status != 0) return Unavailable("destination refused: " + ack.message);
  if (opt_.tls && ack.dst_host != dest_cert)
    return PermissionDenied("destination says it is host '" + ack.dst_host + "' but its certificate names '" +
                            dest_cert + "'");
  qemu_port_ = ack.qemu_port;
  nbd_port_ = ack.nbd_port;
  if (opt_.copy_storage && nbd_port_ == 0) return Internal("the destination exported no disks for --copy-storage");
  dest_id_ = ack.dst_host;
  // QEMU's own stream (device state, or all of RAM in the qemu-* modes) gets
  // the same mutual TLS as this link, to the host this link authenticated.
  if (opt_.tls && !dest_cert.empty()) {
    AGILE_RETURN_IF_ERROR(EnableQemuTls(vm_, opt_.tls->dir(), /*server=*/false, dest_cert));
    // Reported from QEMU's own view, so a test (or an auditor) sees what QEMU will do.
    auto p = vm_->Qmp("query-migrate-parameters");
    if (p.ok() && !p->value("tls-creds", "").empty()) report_.qemu_stream = "tls";
  }
  report_.setup_time_ms = Ms();
  if (mem_) {
    stream_ = std::make_unique<PageStream>(mem_.get(), store_, ch_.get());
    postcopy_ = std::make_unique<PostcopyServer>(mem_.get(), stream_.get(), opt_.prepage);
  }
  return Status::Ok();
}

void Sender::ReaderLoop() {
  std::vector<uint8_t> payload;
  std::vector<uint64_t> req;
  for (;;) {
    auto h = ch_->Receive(&payload, -1);
    if (!h.ok()) {
      std::lock_guard<std::mutex> l(mu_);
      if (peer_status_.ok() && !got_done_ack_) peer_status_ = h.status();
      cv_.notify_all();
      return;
    }
    auto type = static_cast<wire::MigMsg>(h->type);
    if (type == wire::MigMsg::kPageRequest) {
      if (!wire::DecodePageRequest(payload, &req).ok() || !postcopy_) continue;
      Status s = postcopy_->Serve(req, round_, switched_);
      if (!s.ok()) spdlog::warn("vm {}: serving demand pages: {}", report_.vm, s.ToString());
      continue;
    }
    std::lock_guard<std::mutex> l(mu_);
    if (type == wire::MigMsg::kSwitchoverAck) {
      auto st = wire::DecodeSwitchoverAck(payload);
      if (!st.ok()) ack_status_ = st.status();
      else if (st->status == wire::SwitchoverResult::kFailed)
        ack_status_ = Internal("destination could not resume the VM: " + st->message);
      if (st.ok()) ack_ = *st;
      got_ack_ = true;
    } else if (type == wire::MigMsg::kDoneAck) {
      got_done_ack_ = true;
    } else if (type == wire::MigMsg::kAbort) {
      auto why = wire::DecodeAbort(payload);
      peer_status_ = Unavailable("destination aborted: " + (why.ok() ? *why : std::string("?")));
    }
    cv_.notify_all();
  }
}

Status Sender::MirrorDisks() {
  // The disks first: until every mirror is ready the destination's copies
  // lag, and memory pre-copy would only race them for the link.
  Progress("storage");
  mirror_ = std::make_unique<DiskMirror>(vm_);
  AGILE_RETURN_IF_ERROR(mirror_->Start(dest_host_, nbd_port_, vm_->spec().disks.size()));
  return mirror_->WaitReady(
      [this]() -> Status {
        AGILE_RETURN_IF_ERROR(CheckCancel());
        return PeerStatus();
      },
      [this](uint64_t done, uint64_t total) {
        report_.disk_bytes = done;
        (void)total;
        Progress("storage", 0, /*force=*/false);
      },
      /*timeout_ms=*/3600 * 1000);
}

Status Sender::PrecopyRounds() {
  PrecopyOptions o{opt_.mode, opt_.max_downtime_ms, opt_.max_rounds, opt_.postcopy_tail, report_.vm};
  PrecopyLoop::Hooks hooks;
  hooks.cancelled = [this] { return CheckCancel(); };
  hooks.peer = [this] { return PeerStatus(); };
  hooks.progress = [this](const PrecopyResult& r, uint64_t pages) {
    // Before round n > 0: `pages` were written during round n-1.
    const uint64_t now = vm::NowNs();
    if (r.rounds > 0 && now > last_round_ns_)
      report_.dirty_pages_rate = static_cast<double>(pages) / (static_cast<double>(now - last_round_ns_) / 1e9);
    last_round_ns_ = now;
    round_ = r.rounds;
    page_rate_ = r.page_rate;
    report_.pages_precopied = r.pages_sent;
    Progress("precopy", pages);
  };
  hooks.sending = [this](const PrecopyResult&, uint64_t left) { Progress("precopy", left, /*force=*/false); };
  Status s = PrecopyLoop(mem_.get(), stream_.get(), std::move(o), std::move(hooks)).Run(&precopy_);
  round_ = precopy_.rounds;
  page_rate_ = precopy_.page_rate;
  report_.pages_precopied = precopy_.pages_sent;
  report_.converged = precopy_.converged;
  return s;
}

Status Sender::StopAndCopy() {
  AGILE_RETURN_IF_ERROR(CheckCancel());
  std::vector<uint64_t>& pending = precopy_.dirty;
  Progress("stop-and-copy", pending.size());
  AGILE_ASSIGN_OR_RETURN(json status, vm_->Qmp("query-status"));
  was_running_ = status.value("running", false);
  // The downtime starts with `stop`: the guest still ran during the query.
  downtime_start_ns_ = vm::NowNs();
  step_ns_ = downtime_start_ns_;
  if (was_running_) {
    AGILE_RETURN_IF_ERROR(vm_->Qmp("stop").status());
    paused_ = true;
  }
  DowntimeStep("pause");
  if (mirror_) {
    // Paused: no guest write can follow, so once the mirrors complete the
    // destination's disks equal these (before device state inactivates them).
    AGILE_RETURN_IF_ERROR(mirror_->Complete(120000).Annotate("completing the disk mirrors"));
    mirror_.reset();
  }
  if (precopy_.scanner) {
    std::vector<uint64_t> last;
    // The last scan: nothing scans for this migration again, and a VM that
    // resumes here after a failure starts over from a fresh baseline scan
    // (a report is a superset of the writes, never less), so the pages are
    // not write-protected again inside the pause.
    AGILE_RETURN_IF_ERROR(precopy_.scanner->Scan(&last, /*rearm=*/false).status());
    pending.insert(pending.end(), last.begin(), last.end());
    std::sort(pending.begin(), pending.end());
    pending.erase(std::unique(pending.begin(), pending.end()), pending.end());
    if (precopy_.tail) {
      // The remainder stays here until the destination pulls it or the push
      // brings it (SendLocations marks it for both ends).
      tail_bm_.assign(mem_->pages(), 0);
      for (uint64_t p : pending) tail_bm_[p] = 1;
    } else {
      uint64_t sent = 0;
      AGILE_RETURN_IF_ERROR(stream_->Send(pending, round_, &sent));
      report_.pages_precopied += sent;
      ++round_;
    }
  }
  report_.rounds = round_;
  DowntimeStep("stop-and-copy");
  return Status::Ok();
}

void Sender::DowntimeStep(const char* step) {
  if (step_ns_ == 0) return;  // not paused yet (post-copy's LOCATIONS come after the pause too)
  const uint64_t now = vm::NowNs();
  report_.downtime_steps.emplace_back(step, static_cast<double>(now - step_ns_) / 1e6);
  step_ns_ = now;
}

Status Sender::SendLocations() {
  const bool tail = precopy_.tail;
  auto send = [&]() -> Status {
    AGILE_ASSIGN_OR_RETURN(std::vector<vm::PageRun> states, mem_->LocationRuns());
    std::vector<wire::MigRun> runs;
    for (const vm::PageRun& run : states) for (uint64_t i = run.first; i < run.first + run.count; ++i) {
      const vm::PageState st = run.state;
      PageWhere w;
      switch (st) {
        case vm::PageState::kZero: w = PageWhere::kZero; ++report_.pages_zero; break;
        case vm::PageState::kResident:
          w = opt_.mode == MigMode::kPostcopy || (tail && tail_bm_[i]) ? PageWhere::kAtSource : PageWhere::kSent;
          break;
        case vm::PageState::kOffloaded:
          if (opt_.mode == MigMode::kAgile) {
            w = PageWhere::kInStore;
            ++report_.pages_from_store;
          } else {
            w = opt_.mode == MigMode::kPostcopy ? PageWhere::kAtSource : PageWhere::kSent;
          }
          break;
        default: return Internal("page " + std::to_string(i) + " is still " + vm::PageStateName(st) + " at the source");
      }
      if (!runs.empty() && runs.back().where == w && runs.back().first + runs.back().count == i) ++runs.back().count;
      else runs.push_back({i, 1, w});
    }
    std::vector<uint8_t> f;
    for (size_t at = 0; at < runs.size(); at += 32768) {
      f.clear();
      wire::AppendLocations(&f, runs, at, std::min<size_t>(32768, runs.size() - at));
      AGILE_RETURN_IF_ERROR(ch_->Send(f));
    }
    return Status::Ok();
  };
  // Agile's tail: pages the destination now holds stale copies of become
  // "at source" there and are sent (again) from here, once LOCATIONS is out
  // (PostcopyServer::ScopeToTail says why the order matters).
  Status s = tail ? postcopy_->ScopeToTail(tail_bm_, send) : send();
  DowntimeStep("locations");
  return s;
}

Status Sender::DeviceState() {
  Progress("device-state");
  std::string uri = "tcp:" + dest_host_ + ":" + std::to_string(qemu_port_);
  AGILE_RETURN_IF_ERROR(vm_->Qmp("migrate", {{"uri", uri}}).status().Annotate("QMP migrate " + uri));
  AGILE_ASSIGN_OR_RETURN(json st, WaitForMigration(vm_, opt_.timeouts.device_state_ms, nullptr,
                                                    [this] { return Interrupted(); }, /*poll_ms=*/1));
  if (st.contains("ram")) report_.device_state_bytes = st["ram"].value("transferred", 0ull);
  DowntimeStep("device-state");
  return Status::Ok();
}

Status Sender::Switchover() {
  AGILE_RETURN_IF_ERROR(CheckCancel());
  AGILE_RETURN_IF_ERROR(PeerStatus());
  wire::MigSwitchover sw;
  sw.resume = was_running_;
  const bool lease = opt_.mode == MigMode::kAgile && store_ && store_->claimed();
  if (opt_.mode == MigMode::kPostcopy || precopy_.tail) {
    // Pages will exist only here after SWITCHOVER: a restarted agiled must
    // know to keep the VM paused and fenced and to re-dial the destination
    // (docs/invariants.md, "A migration in flight when agiled dies"). Written
    // before the fence and the transfer, so a failure here is still an
    // ordinary abort.
    lease_ = lease;
    MigrationRecord rec = Record();
    AGILE_RETURN_IF_ERROR(vm_->SaveMigrationRecord(&rec).Annotate("migration record"));
    record_saved_ = true;
  }
  // From here a `vm resume` at the source is refused unless the swap store
  // says this host still owns the VM (lease), or the operator forces it.
  vm_->SetFenced("its migration to " + dest_id_ + " (" + opt_.to + ") reached the commit point", lease);
  if (lease) {
    // The commit point: from here the destination owns the cold pages.
    if (FaultPoint("delay-before-transfer")) {
      // Tests: a window between the pause and the TRANSFER to take the store down in.
      spdlog::critical("AGILE_FAULT=delay-before-transfer: waiting 3 s before the TRANSFER");
      std::this_thread::sleep_for(std::chrono::seconds(3));
    }
    auto token = TransferLease();
    if (!token.ok()) {
      // The reply was lost even after asking again, or memd refused: who
      // owns the namespace now decides whether this host may take the VM back.
      auto mine = store_->OwnedHere();
      if (mine.ok() && *mine) {
        vm_->SetFenced("", false);
        return token.status().Annotate("TRANSFER of the swap-store namespace to " + dest_id_ +
                                       " failed, and the store says this host still owns it (resumed here)");
      }
      fenced_ = true;  // Abort tells the destination, but leaves the VM paused here
      return token.status().Annotate(
          std::string("TRANSFER of the swap-store namespace to ") + dest_id_ + " failed, and " +
          (mine.ok() ? "the store says this host no longer owns it"
                     : "the store cannot say who owns it (" + mine.status().message() + ")") +
          ": the VM stays paused here, fenced; `vm resume` asks the store again");
    }
    transferred_ = *token;  // the destination's: sent back to it should it never take SWITCHOVER
    sw.has_token = true;
    sw.epoch = token->epoch;
    sw.secret = token->secret;
    sw.secret_hi = token->secret_hi;
    DowntimeStep("store-transfer");
  }
  std::vector<uint8_t> f;
  wire::AppendSwitchover(&f, sw);
  switched_ = true;  // no abort after this: the destination may already run the VM
  // Pages still read from here after this point (post-copy, agile's tail)
  // must get through a swap-store outage, not end the migration and strand
  // the VM (docs/reliability.md, finding 4). Half the destination's patience
  // with a silent source, so it hears from us before it gives up.
  if (stream_) stream_->RetryStoreReadsFor(opt_.timeouts.migrate_peer_ms / 2);
  AGILE_RETURN_IF_ERROR(ch_->Send(f));
  std::unique_lock<std::mutex> l(mu_);
  // With pages to follow (post-copy, agile's tail) a cancel is not taken
  // past this point: the destination may run the VM on pages only here. A
  // cancel that came as SWITCHOVER left, before the job said post-copy and
  // the API refused it, ended this wait and with it the link, leaving the
  // destination running on 36217 missing pages (soak seed 7, run 104 of
  // session 13). Without them a cancel only stops the wait: the VM stays
  // paused and fenced here, its state there unknown. The cancel is dropped
  // once the ACK is here (the post-copy runs); without an ACK it stays, and
  // ends the recovery wait as a cancel (or agiled stopping) always has.
  const bool pages_follow = record_saved_;
  const bool answered = WaitPeer(l, opt_.timeouts.migrate_peer_ms, /*cancellable=*/!pages_follow,
                                 [&] { return got_ack_ || !peer_status_.ok(); });
  if (pages_follow && got_ack_ && opt_.cancel && opt_.cancel->exchange(false))
    spdlog::warn("vm {}: a cancel that came as SWITCHOVER left is not taken: past the commit point the VM may run at "
                 "{} on pages only here, so the post-copy goes on",
                 report_.vm, dest_id_);
  // The destination closes the connection right after a final ACK: the ACK
  // decides, not what the reader saw afterwards.
  if (!got_ack_) {
    Status cause = !answered ? Unavailable(std::string(cancelled_ ? "cancelled while waiting for SWITCHOVER_ACK (after "
                                                                    "the commit point)"
                                                                  : "no SWITCHOVER_ACK from the destination within " +
                                                                        std::to_string(opt_.timeouts.migrate_peer_ms) +
                                                                        " ms"))
                             : peer_status_.Annotate("waiting for SWITCHOVER_ACK");
    if (record_saved_ && !cancelled_) {
      // Post-copy or agile's tail: the destination recorded the migration
      // at SWITCHOVER before it could run the VM, and keeps its copy for a
      // RESUME (a restarted one too). Whether it ran the VM only it can
      // say, and pages it lacks exist only here: recover as after any link
      // lost past switchover. Failing here stranded both copies, paused
      // (soak seed 7, run 75).
      l.unlock();
      AGILE_RETURN_IF_ERROR(Recover(cause, opt_.mode == MigMode::kPostcopy ? "postcopy-push" : "postcopy-tail"));
      // A lower bound: paused here until the link came back; when the guest
      // ran there (at `cont`, or once every page is there) only the
      // destination knows. 0 would claim no downtime at all.
      report_.downtime_ms = static_cast<double>(vm::NowNs() - downtime_start_ns_) / 1e6;
      report_.switchover_ms = Ms();
      Progress("switched-over");
      return Status::Ok();
    }
    l.unlock();
    if (cancelled_) return cause.Annotate("the VM stays paused here, fenced, its state there unknown");
    return AskWhetherItRan(cause, lease);
  }
  if (!ack_status_.ok()) return ack_status_;
  if (ack_.status == wire::SwitchoverResult::kNotResumed) {
    const wire::MigSwitchoverAck ack = ack_;
    l.unlock();
    return TakeBack(ack, lease);
  }
  report_.downtime_ms = static_cast<double>(vm::NowNs() - downtime_start_ns_) / 1e6;
  DowntimeStep("commit");
  report_.switchover_ms = Ms();
  l.unlock();
  Progress("switched-over");
  return Status::Ok();
}

Status Sender::TakeBack(const wire::MigSwitchoverAck& ack, bool lease) {
  // The copy here is whole: the VM has been paused since stop-and-copy and
  // never ran there. It may run here again only once this host holds the
  // lease (invariant 5): exactly one host owns the namespace at every moment.
  const std::string what = "the destination did not resume the VM: " + ack.message;
  const std::string fenced = "; the VM stays paused here, fenced (`vm resume` asks the swap store again)";
  if (lease) {
    if (!ack.has_token) return Unavailable(what + "; it did not hand the swap-store namespace back" + fenced);
    AGILE_RETURN_IF_ERROR(vm_->AdoptStore(store_->store_vm_id(), ack.epoch, ack.secret, ack.secret_hi)
                              .Annotate(what + "; taking back the swap-store namespace it handed back" + fenced));
    // Asked, not assumed: the token is only as good as memd's word on it.
    auto mine = store_->OwnedHere();
    if (!mine.ok() || !*mine)
      return Unavailable(what + "; it handed the swap-store namespace back, but the store " +
                         (mine.ok() ? "says another host owns it" : "cannot confirm it (" + mine.status().message() + ")") +
                         fenced);
    // The token survives an agiled restart from here; a failure is logged,
    // and `vm stat` shows it, but the VM is this host's either way.
    (void)vm_->PersistState();
  }
  vm_->SetFenced("", false);
  if (was_running_) {
    auto r = vm_->Qmp("cont");
    if (!r.ok()) return r.status().Annotate(what + "; handed back here, but resuming it failed (`vm resume` retries)");
  }
  handed_back_ = true;  // the VM is this host's again: no migration record outlives this failure
  spdlog::warn("vm {}: handed back by {} (it never ran there){}; {} here", report_.vm, dest_id_,
               lease ? " with its swap-store namespace" : "", was_running_ ? "resumed" : "left paused as it was");
  return Unavailable(what + "; handed back: " + (was_running_ ? "the VM runs here again" : "the VM stays here, paused as it was"));
}

Result<memd::OwnerToken> Sender::TransferLease() {
  auto token = store_->Transfer(dest_id_);
  if (token.ok() || token.status().code() != Code::kUnavailable) return token;
  // A store that does not answer may be restarting. Giving up now leaves the
  // VM paused and fenced here until an operator runs `vm resume`; it is
  // paused meanwhile either way, so wait a bounded while for the store.
  const int budget_ms = opt_.timeouts.migrate_peer_ms / 2;
  spdlog::warn("vm {}: swap store unreachable for the TRANSFER to {} ({}); asking again every {} ms for up to {} ms",
               report_.vm, dest_id_, token.status().ToString(), StoreReader::kRetryMs, budget_ms);
  const uint64_t t0 = vm::NowNs();
  const uint64_t end = t0 + static_cast<uint64_t>(budget_ms) * 1000000ULL;
  while (token.status().code() == Code::kUnavailable && vm::NowNs() < end && !Interrupted()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(StoreReader::kRetryMs));
    token = store_->Transfer(dest_id_);
  }
  if (token.ok())
    spdlog::info("vm {}: swap store answered the TRANSFER after {} ms; the migration goes on", report_.vm,
                 (vm::NowNs() - t0) / 1000000ULL);
  return token;
}

Status Sender::PostcopyPush() {
  // Everything the destination has not pulled yet (post-copy: every page with
  // data; agile's tail: the dirty remainder), in order, while demand requests
  // are served in between by the reader thread. A lost link pauses it
  // (Recover) instead of failing it: the pages still here exist nowhere else.
  const char* phase = precopy_.tail ? "postcopy-tail" : "postcopy-push";
  for (;;) {
    Status s = PushRest(phase);
    if (s.ok()) break;
    // Only a failure of the link: a page that cannot be read here (the VM
    // stopped, its store down) is not mended by a new connection.
    if (!ch_->broken() && PeerStatus().ok()) return s;
    AGILE_RETURN_IF_ERROR(Recover(s, phase));
    if (completed_there_) break;
  }
  report_.pages_demand = postcopy_->demand();
  report_.pages_postcopied = postcopy_->postcopied();
  return Status::Ok();
}

Status Sender::PushRest(const char* phase) {
  AGILE_RETURN_IF_ERROR(postcopy_->Push(precopy_.tail ? &tail_bm_ : nullptr, round_, [&] { Progress(phase, 0, /*force=*/false); }));
  AGILE_ASSIGN_OR_RETURN(bool acked, SendDone());
  std::lock_guard<std::mutex> l(mu_);
  if (got_done_ack_) return Status::Ok();
  if (!acked) return Unavailable("no DONE_ACK from the destination");
  return peer_status_;
}

Status Sender::Recover(const Status& cause, const char* phase) {
  // The reader of the old link goes first: a recovery swaps the channel.
  // (No channel at all after a restart: ResumeAfterRestart.)
  if (ch_) ch_->Shutdown();
  if (reader_.joinable()) reader_.join();
  const uint64_t start = vm::NowNs();
  const uint64_t window_ns = static_cast<uint64_t>(opt_.timeouts.migrate_recover_ms) * 1000000ull;
  spdlog::error("vm {}: post-copy link to {} lost after switchover: {}. The VM stays paused here with the pages "
                "the destination still lacks; reconnecting with backoff for up to {} s (or `agilectl migrate "
                "--recover {}`)",
                report_.vm, opt_.to, cause.ToString(), opt_.timeouts.migrate_recover_ms / 1000, report_.vm);
  int backoff_ms = 1000;  // doubling to 30 s between automatic attempts
  uint64_t next_try = start + 1000000000ull;
  bool automatic = true;  // false once the destination said it has no such migration
  uint32_t attempts = 0;
  std::string to = opt_.to;
  Status last = cause;
  for (;;) {
    recovery_ = {{"since-ms", static_cast<double>(vm::NowNs() - start) / 1e6},
                 {"window-ms", opt_.timeouts.migrate_recover_ms},
                 {"attempts", attempts},
                 {"automatic", automatic},
                 {"cause", cause.ToString()},
                 {"last-error", last.ToString()},
                 {"hint", "agilectl migrate --recover " + report_.vm + " [--to HOST:PORT]"}};
    Progress("postcopy-paused");
    bool asked = false;
    for (;;) {
      const uint64_t now = vm::NowNs();
      if (now - start >= window_ns) {
        recovery_ = nullptr;
        return last.Annotate("post-copy link lost after switchover and not recovered within the " +
                             std::to_string(opt_.timeouts.migrate_recover_ms / 1000) + " s recovery window (" +
                             std::to_string(attempts) +
                             " attempts); nothing was freed: the VM stays paused and fenced here with the pages "
                             "the destination still lacks, the destination keeps its copy waiting for them");
      }
      // `migrate --cancel` (or agiled stopping) gives up waiting, not the
      // state: as at the window's end, nothing is freed on either side.
      if (opt_.cancel && opt_.cancel->load()) {
        recovery_ = nullptr;
        return last.Annotate("post-copy link lost after switchover; recovery given up by a cancel (or agiled "
                             "stopping) after " + std::to_string(attempts) +
                             " attempts; nothing was freed: the VM stays paused and fenced here with the pages the "
                             "destination still lacks");
      }
      if (opt_.recover_requested) {
        if (auto r = opt_.recover_requested()) {
          if (!r->empty()) to = *r;
          asked = true;
          break;
        }
      }
      if (automatic && now >= next_try) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(kSliceMs));
    }
    ++attempts;
    last = Reconnect(to);
    if (last.ok() && !never_ran_there_.empty()) {
      // A link lost right after SWITCHOVER went out (soak seed 7, run 112
      // of session 12: throttled across the commit point) left the VM
      // paused here while the destination, which never got SWITCHOVER,
      // dropped its copy: it is this host's again, as after a SWITCHOVER_ACK
      // "not resumed". The lease, gone to a destination that never learned
      // its token, comes back first (LeaseBack).
      recovery_ = nullptr;
      spdlog::warn("vm {}: {} answered RESUME after {:.1f} s: {}", report_.vm, dest_id_,
                   static_cast<double>(vm::NowNs() - start) / 1e9, never_ran_there_);
      return TakeBack(LeaseBack(lease_), lease_);
    }
    if (last.ok()) {
      spdlog::info("vm {}: post-copy link recovered ({}) after {:.1f} s, attempt {}", report_.vm,
                   asked ? "asked by the operator" : "automatic", static_cast<double>(vm::NowNs() - start) / 1e9,
                   attempts);
      opt_.to = to;
      report_.destination = to;
      ++report_.recoveries;
      recovery_ = nullptr;
      if (completed_there_) {
        spdlog::info("vm {}: the destination has every page already (its DONE_ACK was lost with the link)",
                     report_.vm);
        return Status::Ok();
      }
      reader_ = std::thread([this] { ReaderLoop(); });
      Progress(phase);
      return Status::Ok();
    }
    spdlog::warn("vm {}: post-copy recovery attempt {} to {}: {}", report_.vm, attempts, to, last.ToString());
    // The destination answered but has no such migration waiting (it gave
    // up, or it restarted): retrying alone will not change that.
    if (last.code() == Code::kNotFound || last.code() == Code::kPermissionDenied) automatic = false;
    next_try = vm::NowNs() + static_cast<uint64_t>(backoff_ms) * 1000000ull;
    backoff_ms = std::min(backoff_ms * 2, 30000);
  }
}

wire::MigSwitchoverAck Sender::LeaseBack(bool lease) {
  wire::MigSwitchoverAck ack{wire::SwitchoverResult::kNotResumed, never_ran_there_};
  std::unique_ptr<Channel> ch = std::move(handback_ch_);
  if (!lease || !ch) return ack;
  if (!transferred_) {
    // agiled restarted since the TRANSFER: the token it sent is gone.
    ack.message += "; the token this host transferred the namespace with was lost with an agiled restart";
    return ack;
  }
  // The SWITCHOVER that never arrived, for its token: the destination
  // hands the namespace back under it.
  wire::MigSwitchover sw;
  sw.has_token = true;
  sw.epoch = transferred_->epoch;
  sw.secret = transferred_->secret;
  sw.secret_hi = transferred_->secret_hi;
  sw.resume = false;
  std::vector<uint8_t> f, payload;
  wire::AppendSwitchover(&f, sw);
  Status s = ch->Send(f);
  Result<wire::FrameHeader> h = s.ok() ? ch->Receive(&payload, opt_.timeouts.migrate_peer_ms) : Result<wire::FrameHeader>(s);
  auto back = !h.ok() ? Result<wire::MigSwitchoverAck>(h.status())
              : h->type == static_cast<uint16_t>(wire::MigMsg::kSwitchoverAck)
                  ? wire::DecodeSwitchoverAck(payload)
                  : Result<wire::MigSwitchoverAck>(Corruption(std::string("expected SWITCHOVER_ACK, got ") +
                                                               wire::MigMsgName(h->type)));
  if (!back.ok() || back->status != wire::SwitchoverResult::kNotResumed) {
    ack.message += "; asking for the swap-store namespace back: " +
                   (back.ok() ? "the answer was not \"not resumed\"" : back.status().ToString());
    return ack;
  }
  back->message = never_ran_there_ + (back->has_token ? "" : "; " + back->message);
  return *back;
}

Result<wire::MigResumeAck> Sender::AskResume(const std::string& to, std::unique_ptr<Channel>* out) {
  std::string cert;
  AGILE_ASSIGN_OR_RETURN(auto ch, Dial(to, &cert));
  // Under TLS the new link must reach the same agiled the VM switched to.
  if (opt_.tls && cert != dest_id_)
    return PermissionDenied("the agiled at " + to + " is '" + cert + "', but the VM switched over to '" + dest_id_ + "'");
  std::vector<uint8_t> f;
  wire::AppendResume(&f, {report_.vm, host_id_, mig_id_lo_, mig_id_hi_});
  AGILE_RETURN_IF_ERROR(ch->Send(f));
  std::vector<uint8_t> payload;
  AGILE_ASSIGN_OR_RETURN(auto h, ch->Receive(&payload, opt_.timeouts.migrate_peer_ms));
  if (h.type != static_cast<uint16_t>(wire::MigMsg::kResumeAck))
    return Corruption(std::string("expected RESUME_ACK, got ") + wire::MigMsgName(h.type));
  AGILE_ASSIGN_OR_RETURN(auto ack, wire::DecodeResumeAck(payload));
  if (ack.status == 3) {
    // SWITCHOVER never reached the destination's receiver: the VM is whole
    // here and never ran there (TakeBack, over this link when the lease has
    // to come back: LeaseBack).
    never_ran_there_ = ack.message;
    handback_ch_ = std::move(ch);
  }
  *out = std::move(ch);
  return ack;
}

Status Sender::AskWhetherItRan(const Status& cause, bool lease) {
  // Pre-copy, or agile without a tail: the destination keeps nothing to
  // recover, and a copy that took SWITCHOVER runs there once `cont` does.
  // But one dropped before it took SWITCHOVER says so to a RESUME (3), and
  // the VM is this host's again. A destination whose link went silent drops
  // its copy once its kernel gives up on the link (TCP_USER_TIMEOUT,
  // migrate_io_ms), so it is asked for twice that. A refused connection
  // does not end the asking: an agiled restarting there answers from its
  // state dir once it is up (RecoveryBoard::LoadDropped).
  const uint64_t start = vm::NowNs();
  const uint64_t end = start + 2ull * static_cast<uint64_t>(opt_.timeouts.migrate_io_ms) * 1000000ull;
  std::string last;
  uint32_t attempt = 1;
  for (;;) {
    std::unique_ptr<Channel> ch;
    auto ack = AskResume(opt_.to, &ch);
    if (ack.ok() && ack->status == 3) {
      spdlog::warn("vm {}: {} answered RESUME after {:.1f} s (attempt {}): {}", report_.vm, dest_id_,
                   static_cast<double>(vm::NowNs() - start) / 1e9, attempt, never_ran_there_);
      return TakeBack(LeaseBack(lease), lease);
    }
    last = ack.ok() ? ack->message : ack.status().ToString();
    for (int i = 0; i < 10 && vm::NowNs() < end; ++i) {
      if (opt_.cancel && opt_.cancel->load()) return cause.Annotate("the VM stays paused here, fenced, its state there unknown");
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (vm::NowNs() >= end) break;
    ++attempt;
  }
  return cause.Annotate("the VM stays paused here, fenced, its state there unknown (asked " + std::to_string(attempt) +
                        " times whether it ran there; the last answer: " + last + ")");
}

Status Sender::Reconnect(const std::string& to) {
  std::unique_ptr<Channel> ch;
  AGILE_ASSIGN_OR_RETURN(auto ack, AskResume(to, &ch));
  if (ack.status == 2) {
    // DONE arrived and was acknowledged; only the ACK was lost with the link.
    completed_there_ = true;
    return Status::Ok();
  }
  if (ack.status == 3) return Status::Ok();  // never ran there: Recover takes the VM back
  if (ack.status != 0) {
    // The destination's Status text leads with its code's name.
    const Code code = ack.message.rfind("not-found", 0) == 0           ? Code::kNotFound
                      : ack.message.rfind("permission-denied", 0) == 0 ? Code::kPermissionDenied
                                                                       : Code::kUnavailable;
    return Status(code, "destination refused RESUME: " + ack.message);
  }
  // Which pages are still missing there: exactly those go again.
  std::vector<uint8_t> payload;
  std::vector<uint8_t> remote(mem_->pages(), 0);
  uint64_t got = 0;
  std::vector<wire::MigRun> runs;
  while (got < ack.pages_remote) {
    AGILE_ASSIGN_OR_RETURN(auto lh, ch->Receive(&payload, opt_.timeouts.migrate_peer_ms));
    if (lh.type != static_cast<uint16_t>(wire::MigMsg::kLocations))
      return Corruption(std::string("expected LOCATIONS after RESUME_ACK, got ") + wire::MigMsgName(lh.type));
    AGILE_RETURN_IF_ERROR(wire::DecodeLocations(payload, &runs));
    for (const auto& r : runs) {
      if (r.where != PageWhere::kAtSource || r.first + r.count > mem_->pages() || r.first + r.count < r.first ||
          got + r.count > ack.pages_remote)
        return Corruption("RESUME: a run of missing pages out of range");
      for (uint64_t i = r.first; i < r.first + r.count; ++i) remote[i] = 1;
      got += r.count;
    }
  }
  if (ch_) prior_bytes_ += ch_->bytes_sent();
  ch_ = std::move(ch);
  stream_->set_channel(ch_.get());
  postcopy_->Rescope(remote);
  // The destination lists pages it was told are here: any that are not (a
  // hole, or in the swap store) say the two ends disagree; logged, as the
  // first clue should the migration not complete.
  uint64_t elsewhere = 0;
  std::string first;
  for (uint64_t i = 0; i < mem_->pages(); ++i) {
    if (!remote[i]) continue;
    const vm::PageState st = mem_->state(i);
    if (st == vm::PageState::kResident) continue;
    if (++elsewhere <= 8) first += (elsewhere > 1 ? ", " : "") + std::to_string(i) + " " + vm::PageStateName(st);
  }
  if (elsewhere != 0)
    spdlog::warn("vm {}: the destination lacks {} pages, {} of them not resident here (first: {}); a zero page goes "
                 "as a page of zeros", report_.vm, ack.pages_remote, elsewhere, first);
  std::lock_guard<std::mutex> l(mu_);
  peer_status_ = Status::Ok();
  got_done_ack_ = false;
  return Status::Ok();
}

Status Sender::RunQemuMode() {
  // QEMU moves all of guest RAM itself; agiled drives both ends.
  // Once QEMU is asked to switch to post-copy the status says so, before the
  // request, so `migrate --cancel` is refused from then on (api.cc).
  bool committed = false;
  QemuMigration::Options o{opt_.mode, opt_.max_downtime_ms, opt_.bandwidth, opt_.timeouts.migrate_io_ms,
                           [this] { return Interrupted(); }, [&] {
                             committed = true;
                             Progress("qemu-postcopy", 0, /*force=*/true);
                           }};
  o.post_stall_ms = opt_.timeouts.migrate_peer_ms;
  std::string uri = "tcp:" + dest_host_ + ":" + std::to_string(qemu_port_);
  bool switched = false;
  Status s = QemuMigration(vm_, ch_.get(), o).Run(uri, t0_ns_, &report_, &switched, [&](uint32_t round) {
    round_ = round;
    Progress(committed ? "qemu-postcopy" : "qemu-migrate", 0, /*force=*/false);
  });
  if (switched) switched_ = true;
  if (!s.ok() && switched) {
    // Past QEMU's switch to post-copy: the destination QEMU ran the guest
    // and holds its CPU state and the pages it dirtied. `cont` here would
    // run a stale copy beside it (a link cut leaves that QEMU alive), so
    // the VM stays paused and fenced (`vm resume --force` is the operator's call).
    (void)vm_->Qmp("query-status");  // the run state `vm stat` shows: paused
    vm_->SetFenced("QEMU's post-copy to " + dest_id_ + " (" + opt_.to +
                       ") failed after the guest switched there; it may still run there",
                   /*lease=*/false);
    return s.Annotate("the VM stays paused here, fenced");
  }
  AGILE_RETURN_IF_ERROR(s);
  // Tell the destination agiled the VM is its own now.
  Status done = SendDone().status();
  {
    std::lock_guard<std::mutex> l(mu_);
    if (done.ok() && !got_done_ack_) done = peer_status_.Annotate("waiting for DONE_ACK");
  }
  if (!done.ok()) {
    // QEMU's own migration completed: this QEMU is stopped (postmigrate) and
    // the destination's holds the VM; whether its agiled let it run is not
    // known. Say so (paused, fenced; `vm resume --force` is the operator's
    // call), rather than report a running VM no vCPU runs (soak seed 6 run 73).
    (void)vm_->Qmp("query-status");
    vm_->SetFenced("QEMU's migration to " + dest_id_ + " (" + opt_.to +
                       ") completed but its agiled did not confirm it; the VM may run there",
                   /*lease=*/false);
    return done.Annotate("QEMU's migration completed; the VM stays paused here, fenced, its state there unknown");
  }
  return Status::Ok();
}

Result<bool> Sender::SendDone() {
  std::vector<uint8_t> f;
  wire::AppendEmpty(&f, wire::MigMsg::kDone);
  AGILE_RETURN_IF_ERROR(ch_->Send(f));
  std::unique_lock<std::mutex> l(mu_);
  return WaitPeer(l, opt_.timeouts.migrate_peer_ms, /*cancellable=*/false, [&] { return got_done_ack_ || !peer_status_.ok(); });
}

void Sender::Abort(const std::string& why) {
  // The mirrors first: they write into the destination's copies, which it
  // deletes once it sees the ABORT. The source's disks were never changed.
  if (mirror_) {
    mirror_->Abort();
    mirror_.reset();
  }
  if (ch_) {
    std::vector<uint8_t> f;
    wire::AppendAbort(&f, why);
    (void)ch_->Send(f, kAbortSendMs);
  }
  if (paused_ || mem_ == nullptr) {
    (void)vm_->Qmp("migrate_cancel");
  }
  if (paused_ && fenced_) {
    spdlog::error("vm {}: stays paused here: the swap store does not confirm this host still owns it", report_.vm);
  } else if (paused_) {
    auto r = vm_->Qmp("cont");
    if (r.ok()) spdlog::info("vm {}: resumed at the source after the failed migration", report_.vm);
    else spdlog::error("vm {}: could not resume after the failed migration: {}", report_.vm, r.status().ToString());
  }
}

}  // namespace agile::migrate
