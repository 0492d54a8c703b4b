#include "migrate/sender.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "base/io.h"
#include "base/socket.h"
#include "migrate/qemu_control.h"
#include "track/write_scanner.h"
#include "vm/fault_server.h"

namespace agile::migrate {
using nlohmann::json;
using wire::MigMode;
using wire::PageWhere;

namespace {
constexpr size_t kPage = 4096;
constexpr int kPeerTimeoutMs = 120000;  // the destination launching QEMU, or answering SWITCHOVER
constexpr uint64_t kSmallDirtyPages = 64;
// Pre-copy rescans for writes this often while a round sends, so a page
// written since the round began waits for the next round instead of being
// sent twice.
constexpr uint64_t kRescanNs = 50'000'000;
// qemu-* modes: a ROUND frame this often keeps the destination from timing out.
constexpr uint64_t kKeepaliveNs = 5'000'000'000;
}  // namespace

Sender::Sender(MigratingVm* vm, std::string host_id, SendOptions opts)
    : vm_(vm), mem_(vm->memory()), store_(vm->store()), host_id_(std::move(host_id)), opt_(std::move(opts)) {
  if (store_ != nullptr) store_reader_ = std::make_unique<BulkStoreReader>(store_);
  report_.mode = wire::MigModeName(opt_.mode);
  report_.vm = vm_->spec().name;
  report_.destination = opt_.to;
}

Sender::~Sender() {
  if (ch_) ch_->Shutdown();
  if (reader_.joinable()) reader_.join();
}

double Sender::Ms() const { return static_cast<double>(vm::NowNs() - t0_ns_) / 1e6; }

Status Sender::CheckCancel() const {
  if (opt_.cancel && opt_.cancel->load()) return Status(Code::kUnavailable, "migration cancelled by the operator");
  return Status::Ok();
}

void Sender::Progress(const char* phase, uint64_t dirty) {
  json p = {{"phase", phase},
            {"mode", report_.mode},
            {"elapsed_ms", Ms()},
            {"round", round_},
            {"bytes_sent", ch_ ? ch_->bytes_sent() : 0},
            {"pages_precopied", report_.pages_precopied},
            {"pages_postcopied", postcopied_.load() + report_.pages_postcopied},
            {"dirty_pages", dirty},
            {"page_rate", page_rate_}};
  if (page_rate_ > 0 && dirty > 0) p["eta_s"] = static_cast<double>(dirty) / page_rate_;
  vm_->SetMigrationStatus(p);
  if (opt_.progress) opt_.progress(p);
}

Report Sender::Run() {
  t0_ns_ = vm::NowNs();
  bool qemu_mode = opt_.mode == MigMode::kQemuPrecopy || opt_.mode == MigMode::kQemuPostcopy;
  Status s;
  const bool stock = mem_ == nullptr;
  if (stock != qemu_mode)
    s = InvalidArgument(qemu_mode ? "qemu-* modes migrate stock VMs (vm start --stock); use agile, precopy or postcopy"
                                  : "stock VMs can only use qemu-precopy or qemu-postcopy");
  const bool outgoing = s.ok() && !qemu_mode;
  if (outgoing) vm_->BeginOutgoing();  // no offload, no tracking scans (they would take pre-copy's dirty bits)
  if (s.ok()) s = Handshake();
  if (s.ok()) {
    reader_ = std::thread([this] { ReaderLoop(); });
    if (qemu_mode) {
      s = RunQemuMode();
    } else {
      if (opt_.mode != MigMode::kPostcopy) s = PrecopyRounds();
      if (s.ok()) s = StopAndCopy();
      if (s.ok()) s = SendLocations();
      if (s.ok()) s = DeviceState();
      if (s.ok()) s = Switchover();
      if (s.ok() && (opt_.mode == MigMode::kPostcopy || tail_)) s = PostcopyPush();
    }
  }
  if (!s.ok()) {
    report_.ok = false;
    report_.error = s.ToString();
    if (!switched_) Abort(s.message());
    if (outgoing) (void)vm_->EndOutgoing(/*migrated=*/false, /*keep_store=*/false);
    spdlog::error("vm {}: migration to {} failed: {}", report_.vm, opt_.to, s.ToString());
  } else {
    report_.ok = true;
    // Nothing of the VM stays here: QEMU stops, guest RAM is freed, and in
    // agile mode the store namespace stays with its new owner.
    Status r = vm_->EndOutgoing(/*migrated=*/true, /*keep_store=*/opt_.mode == MigMode::kAgile);
    if (!r.ok()) spdlog::warn("vm {}: cleanup after migration: {}", report_.vm, r.ToString());
    report_.total_time_ms = Ms();
    spdlog::info("vm {}: migrated to {} ({}) in {:.0f} ms, downtime {:.0f} ms, {} bytes", report_.vm, opt_.to,
                 report_.mode, report_.total_time_ms, report_.downtime_ms, report_.bytes_sent);
  }
  if (ch_) report_.bytes_sent = std::max(report_.bytes_sent, ch_->bytes_sent() + report_.device_state_bytes);
  vm_->SetMigrationStatus(nullptr);
  return report_;
}

Status Sender::Handshake() {
  AGILE_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(opt_.to));
  dest_host_ = hp.host;
  auto sec = tls::ConnectAddress(opt_.to, opt_.tls);
  if (!sec.ok()) return sec.status().Annotate("connect to destination agiled");
  std::string dest_cert = sec->peer;
  ch_ = std::make_unique<Channel>(std::move(sec->fd));
  ch_->set_rate_limit(opt_.bandwidth);
  wire::MigHello hello;
  hello.mode = opt_.mode;
  hello.page_count = vm_->spec().memory_bytes / kPage;
  hello.spec_json = vm_->spec().ToJson().dump();
  hello.src_host = host_id_;
  if (store_) {
    hello.store_addr = store_->addr();
    hello.store_vm_id = store_->store_vm_id();
  }
  std::vector<uint8_t> f;
  wire::AppendHello(&f, hello);
  AGILE_RETURN_IF_ERROR(ch_->Send(f));
  Progress("handshake");
  std::vector<uint8_t> payload;
  AGILE_ASSIGN_OR_RETURN(auto h, ch_->Receive(&payload, kPeerTimeoutMs));
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
  dest_id_ = ack.dst_host;
  if (mem_) sent_.reset(new std::atomic<uint8_t>[mem_->pages()]());
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
      if (!wire::DecodePageRequest(payload, &req).ok()) continue;
      // Demand pages first, each with the pages after it (prepaging).
      std::lock_guard<std::mutex> serve(serve_mu_);
      std::vector<uint64_t> pages;
      for (uint64_t idx : req) {
        for (uint64_t n = idx; n < idx + 1 + opt_.prepage && n < mem_->pages(); ++n) {
          if (sent_[n].exchange(1)) continue;
          if (n == idx) demand_.fetch_add(1);
          pages.push_back(n);
        }
      }
      uint64_t sent = 0;
      Status s = SendPages(pages, round_, &sent);
      if (switched_) postcopied_.fetch_add(sent);
      if (!s.ok()) spdlog::warn("vm {}: serving demand pages: {}", report_.vm, s.ToString());
      continue;
    }
    std::lock_guard<std::mutex> l(mu_);
    if (type == wire::MigMsg::kSwitchoverAck) {
      auto st = wire::DecodeStatus(payload);
      if (!st.ok()) ack_status_ = st.status();
      else if (st->status != 0) ack_status_ = Internal("destination could not resume the VM: " + st->message);
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

Status Sender::SendPages(std::vector<uint64_t> idx, uint32_t round, uint64_t* sent) {
  std::sort(idx.begin(), idx.end());
  std::vector<uint8_t> buf(wire::kMigMaxPagesPerFrame * kPage);
  std::vector<wire::MigPage> batch;
  std::vector<uint64_t> from_store;
  std::vector<uint8_t> frame;
  auto flush = [&]() -> Status {
    if (batch.empty()) return Status::Ok();
    frame.clear();
    wire::AppendPages(&frame, round, batch.data(), batch.size());
    *sent += batch.size();
    batch.clear();
    return ch_->Send(frame);
  };
  for (size_t i = 0; i < idx.size(); ++i) {
    uint64_t n = idx[i];
    uint8_t* slot = buf.data() + batch.size() * kPage;
    AGILE_ASSIGN_OR_RETURN(vm::PageState st, mem_->ReadPage(n, slot, store_reader_.get()));
    if (st == vm::PageState::kZero) continue;  // nothing stored anywhere: the destination maps zeros
    if (st == vm::PageState::kRemote) return Internal("page " + std::to_string(n) + " is not here to send");
    batch.push_back({n, slot});
    if (batch.size() == wire::kMigMaxPagesPerFrame) AGILE_RETURN_IF_ERROR(flush());
  }
  return flush();
}

Status Sender::PrecopyRounds() {
  AGILE_ASSIGN_OR_RETURN(track::WriteScanner scanner, track::WriteScanner::Open(mem_->mapping()));
  const uint64_t npages = mem_->pages();
  // Pages written since the current round began: the next round's scope.
  std::vector<uint8_t> dirty_bm(npages, 0);
  std::vector<uint64_t> dirty, scanned;
  auto collect = [&]() -> Status {
    scanned.clear();
    AGILE_RETURN_IF_ERROR(scanner.Scan(&scanned).status());
    for (uint64_t p : scanned) {
      if (p < npages && !dirty_bm[p]) {
        dirty_bm[p] = 1;
        dirty.push_back(p);
      }
    }
    return Status::Ok();
  };
  // Baseline: from here on every write is seen by a later scan.
  AGILE_RETURN_IF_ERROR(scanner.Scan(&scanned).status());
  // Round 0: what lives here (agile) or everything with data (precopy).
  std::vector<uint64_t> pages;
  for (uint64_t i = 0; i < npages; ++i) {
    vm::PageState st = mem_->state(i);
    if (st == vm::PageState::kResident || st == vm::PageState::kInFlight ||
        (st == vm::PageState::kOffloaded && opt_.mode == MigMode::kPrecopy))
      pages.push_back(i);
  }
  const bool tail_allowed = opt_.mode == MigMode::kAgile && opt_.postcopy_tail;
  for (;;) {
    AGILE_RETURN_IF_ERROR(CheckCancel());
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!peer_status_.ok()) return peer_status_;
    }
    Progress("precopy", pages.size());
    uint64_t t = vm::NowNs(), last_scan = t, sent = 0, skipped = 0;
    std::vector<uint64_t> chunk;
    for (size_t at = 0; at < pages.size();) {
      if (vm::NowNs() - last_scan >= kRescanNs) {
        AGILE_RETURN_IF_ERROR(collect());
        last_scan = vm::NowNs();
        AGILE_RETURN_IF_ERROR(CheckCancel());
      }
      chunk.clear();
      for (; at < pages.size() && chunk.size() < 1024; ++at) {
        if (dirty_bm[pages[at]]) ++skipped;  // written again already: goes next round
        else chunk.push_back(pages[at]);
      }
      AGILE_RETURN_IF_ERROR(SendPages(chunk, round_, &sent));
    }
    double secs = static_cast<double>(vm::NowNs() - t) / 1e9;
    if (sent > 256 && secs > 0) page_rate_ = static_cast<double>(sent) / secs;
    report_.pages_precopied += sent;
    std::vector<uint8_t> f;
    wire::AppendRound(&f, round_, sent);
    AGILE_RETURN_IF_ERROR(ch_->Send(f));
    ++round_;
    AGILE_RETURN_IF_ERROR(collect());
    for (uint64_t p : dirty) dirty_bm[p] = 0;
    std::sort(dirty.begin(), dirty.end());
    pages.swap(dirty);
    dirty.clear();
    // The rest must fit the downtime target at the measured page rate.
    double rate = page_rate_ > 0 ? page_rate_ : 20000;
    double est_ms = static_cast<double>(pages.size()) / rate * 1000;
    spdlog::info("vm {}: round {} sent {} pages in {:.0f} ms (skipped {} written again); {} dirty, {:.0f} ms to send",
                 report_.vm, round_ - 1, sent, secs * 1000, skipped, pages.size(), est_ms);
    if (est_ms <= static_cast<double>(opt_.max_downtime_ms) || pages.size() <= kSmallDirtyPages) break;
    // Agile's hybrid: when the guest writes at least half as many pages as a
    // round sends, further rounds converge slowly or never; post-copying the
    // remainder costs one pass over it instead of one per round plus a long
    // stop-and-copy.
    if (tail_allowed && (pages.size() * 2 >= sent || round_ >= opt_.max_rounds)) {
      tail_ = true;
      report_.converged = false;
      spdlog::info("vm {}: {} pages were written during round {} ({} sent); they follow after switchover "
                   "(post-copy tail), cold pages from the swap store",
                   report_.vm, pages.size(), round_ - 1, sent);
      break;
    }
    // The guest dirties its pages as fast as the link moves them: more rounds
    // only resend the same set. Stop after two rounds without real progress.
    no_progress_ = (round_ > 1 && pages.size() * 10 >= last_dirty_ * 9) ? no_progress_ + 1 : 0;
    last_dirty_ = pages.size();
    if (no_progress_ >= 2) {
      report_.converged = false;
      spdlog::warn("vm {}: pre-copy is not converging ({} pages dirty per round at {:.0f} pages/s, target {} ms); "
                   "stopping the VM for the rest",
                   report_.vm, pages.size(), rate, opt_.max_downtime_ms);
      break;
    }
    if (round_ >= opt_.max_rounds) {
      report_.converged = false;
      spdlog::warn("vm {}: pre-copy did not converge after {} rounds ({} pages still dirty, {:.0f} ms at {:.0f} "
                   "pages/s, target {} ms); stopping the VM for the rest",
                   report_.vm, round_, pages.size(), est_ms, rate, opt_.max_downtime_ms);
      break;
    }
  }
  // Pages dirtied in the last round go with the final stop-and-copy (or the
  // post-copy tail).
  pending_.swap(pages);
  scanner_ = std::make_unique<track::WriteScanner>(std::move(scanner));
  return Status::Ok();
}

Status Sender::StopAndCopy() {
  AGILE_RETURN_IF_ERROR(CheckCancel());
  Progress("stop-and-copy", pending_.size());
  downtime_start_ns_ = vm::NowNs();
  AGILE_ASSIGN_OR_RETURN(json status, vm_->Qmp("query-status"));
  was_running_ = status.value("running", false);
  if (was_running_) {
    AGILE_RETURN_IF_ERROR(vm_->Qmp("stop").status());
    paused_ = true;
  }
  if (scanner_) {
    std::vector<uint64_t> last;
    AGILE_RETURN_IF_ERROR(scanner_->Scan(&last).status());
    pending_.insert(pending_.end(), last.begin(), last.end());
    std::sort(pending_.begin(), pending_.end());
    pending_.erase(std::unique(pending_.begin(), pending_.end()), pending_.end());
    if (tail_) {
      // The remainder stays here until the destination pulls it or the push
      // brings it (SendLocations marks it for both ends).
      tail_bm_.assign(mem_->pages(), 0);
      for (uint64_t p : pending_) tail_bm_[p] = 1;
    } else {
      uint64_t sent = 0;
      AGILE_RETURN_IF_ERROR(SendPages(pending_, round_, &sent));
      report_.pages_precopied += sent;
      ++round_;
    }
  }
  report_.rounds = round_;
  return Status::Ok();
}

Status Sender::SendLocations() {
  // Agile's tail: pages the destination now holds stale copies of become
  // "at source" there and are sent (again) from here. Demand serving waits
  // from resetting what was sent until LOCATIONS is on the wire: a page it
  // sent in between would arrive before LOCATIONS, be discarded as stale
  // there, and count as sent here - never to be sent again.
  std::unique_lock<std::mutex> serve(serve_mu_, std::defer_lock);
  if (tail_) {
    serve.lock();
    for (uint64_t i = 0; i < mem_->pages(); ++i) sent_[i].store(tail_bm_[i] ? 0 : 1);
  }
  AGILE_ASSIGN_OR_RETURN(std::vector<vm::PageRun> states, mem_->LocationRuns());
  std::vector<wire::MigRun> runs;
  for (const vm::PageRun& run : states) for (uint64_t i = run.first; i < run.first + run.count; ++i) {
    const vm::PageState st = run.state;
    PageWhere w;
    switch (st) {
      case vm::PageState::kZero: w = PageWhere::kZero; ++report_.pages_zero; break;
      case vm::PageState::kResident:
        w = opt_.mode == MigMode::kPostcopy || (tail_ && tail_bm_[i]) ? PageWhere::kAtSource : PageWhere::kSent;
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
}

Status Sender::DeviceState() {
  Progress("device-state");
  AGILE_RETURN_IF_ERROR(SetCapabilities(vm_, {{"x-ignore-shared", true}}));
  std::string uri = "tcp:" + dest_host_ + ":" + std::to_string(qemu_port_);
  AGILE_RETURN_IF_ERROR(vm_->Qmp("migrate", {{"uri", uri}}).status().Annotate("QMP migrate " + uri));
  AGILE_ASSIGN_OR_RETURN(json st, WaitForMigration(vm_, 60000));
  if (st.contains("ram")) report_.device_state_bytes = st["ram"].value("transferred", 0ull);
  return Status::Ok();
}

Status Sender::Switchover() {
  AGILE_RETURN_IF_ERROR(CheckCancel());
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!peer_status_.ok()) return peer_status_;
  }
  wire::MigSwitchover sw;
  sw.resume = was_running_;
  if (opt_.mode == MigMode::kAgile && store_ && store_->claimed()) {
    // The commit point: from here the destination owns the cold pages.
    AGILE_ASSIGN_OR_RETURN(auto token, store_->Transfer(dest_id_));
    sw.has_token = true;
    sw.epoch = token.epoch;
    sw.secret = token.secret;
    sw.secret_hi = token.secret_hi;
  }
  std::vector<uint8_t> f;
  wire::AppendSwitchover(&f, sw);
  switched_ = true;  // no abort after this: the destination may already run the VM
  AGILE_RETURN_IF_ERROR(ch_->Send(f));
  std::unique_lock<std::mutex> l(mu_);
  if (!cv_.wait_for(l, std::chrono::milliseconds(kPeerTimeoutMs), [&] { return got_ack_ || !peer_status_.ok(); }))
    return Unavailable("no SWITCHOVER_ACK from the destination; the VM stays paused here, its state there unknown");
  // The destination closes the connection right after a final ACK: the ACK
  // decides, not what the reader saw afterwards.
  if (!got_ack_) return peer_status_.Annotate("waiting for SWITCHOVER_ACK; the VM stays paused here");
  if (!ack_status_.ok()) return ack_status_;
  report_.downtime_ms = static_cast<double>(vm::NowNs() - downtime_start_ns_) / 1e6;
  report_.switchover_ms = Ms();
  l.unlock();
  Progress("switched-over");
  return Status::Ok();
}

Status Sender::PostcopyPush() {
  // Everything the destination has not pulled yet (post-copy: every page with
  // data; agile's tail: the dirty remainder), in order, while demand requests
  // are served in between by the reader thread.
  std::vector<uint64_t> chunk;
  for (uint64_t i = 0; i < mem_->pages(); ++i) {
    if (tail_ && !tail_bm_[i]) continue;
    vm::PageState st = mem_->state(i);
    if (st == vm::PageState::kZero || sent_[i].exchange(1)) continue;
    chunk.push_back(i);
    if (chunk.size() == 256) {
      uint64_t sent = 0;
      AGILE_RETURN_IF_ERROR(SendPages(chunk, round_, &sent));
      postcopied_.fetch_add(sent);
      chunk.clear();
      Progress(tail_ ? "postcopy-tail" : "postcopy-push");
    }
  }
  uint64_t sent = 0;
  AGILE_RETURN_IF_ERROR(SendPages(chunk, round_, &sent));
  postcopied_.fetch_add(sent);
  std::vector<uint8_t> f;
  wire::AppendEmpty(&f, wire::MigMsg::kDone);
  AGILE_RETURN_IF_ERROR(ch_->Send(f));
  std::unique_lock<std::mutex> l(mu_);
  if (!cv_.wait_for(l, std::chrono::milliseconds(kPeerTimeoutMs), [&] { return got_done_ack_ || !peer_status_.ok(); }))
    return Unavailable("no DONE_ACK from the destination");
  report_.pages_demand = demand_.load();
  report_.pages_postcopied = postcopied_.load();
  return got_done_ack_ ? Status::Ok() : peer_status_;
}

Status Sender::RunQemuMode() {
  // QEMU moves all of guest RAM itself; agiled drives both ends.
  bool post = opt_.mode == MigMode::kQemuPostcopy;
  AGILE_RETURN_IF_ERROR(SetCapabilities(vm_, post ? json{{"postcopy-ram", true}} : json::object()));
  json params = {{"downtime-limit", opt_.max_downtime_ms}};
  if (opt_.bandwidth > 0) {
    params["max-bandwidth"] = opt_.bandwidth;
    params["max-postcopy-bandwidth"] = opt_.bandwidth;  // post-copy has its own cap
  }
  AGILE_RETURN_IF_ERROR(vm_->Qmp("migrate-set-parameters", params).status());
  std::string uri = "tcp:" + dest_host_ + ":" + std::to_string(qemu_port_);
  AGILE_RETURN_IF_ERROR(vm_->Qmp("migrate", {{"uri", uri}}).status().Annotate("QMP migrate " + uri));
  bool started_post = false;
  uint64_t last_keepalive_ns = vm::NowNs();
  auto st = WaitForMigration(vm_, 3600 * 1000, [&](const json& q) {
    std::string s = q.value("status", "");
    if (q.contains("ram")) {
      round_ = static_cast<uint32_t>(q["ram"].value("dirty-sync-count", 0ull));
      report_.bytes_sent = q["ram"].value("transferred", 0ull);
    }
    // Our own connection carries nothing while QEMU migrates; without a
    // frame now and then the destination agiled would take the silence for
    // a dead source and drop its incoming QEMU under a long pre-copy.
    if (vm::NowNs() - last_keepalive_ns > kKeepaliveNs) {
      last_keepalive_ns = vm::NowNs();
      std::vector<uint8_t> f;
      wire::AppendRound(&f, round_, q.contains("ram") ? q["ram"].value("normal", 0ull) : 0);
      (void)ch_->Send(f);  // a broken connection shows in QEMU's own migration and in DONE
      Progress("qemu-migrate");
    }
    // Post-copy: ask for the switch as soon as the migration is active; QEMU
    // then moves to post-copy at its next opportunity, pulling the rest on demand.
    if (post && !started_post && s == "active") {
      started_post = vm_->Qmp("migrate-start-postcopy").ok();
      if (started_post) downtime_start_ns_ = vm::NowNs();
    }
    if (s == "postcopy-active" && report_.switchover_ms == 0) {
      report_.switchover_ms = Ms();
      if (q.contains("ram")) report_.pages_precopied = q["ram"].value("normal", 0ull);
    }
  });
  if (!st.ok()) {
    if (post && started_post)
      switched_ = true;  // nothing to resume: the guest ran at the destination
    return st.status();
  }
  switched_ = true;
  report_.rounds = round_;
  report_.downtime_ms = st->value("downtime", 0.0);
  if (st->contains("ram")) {
    report_.bytes_sent = (*st)["ram"].value("total", 0ull) > 0 ? (*st)["ram"].value("transferred", 0ull) : 0;
    uint64_t normal = (*st)["ram"].value("normal", 0ull);
    if (report_.pages_precopied > 0 && report_.pages_precopied <= normal) {
      report_.pages_postcopied = normal - report_.pages_precopied;  // sent after the switch
    } else {
      report_.pages_precopied = normal;
    }
    report_.pages_demand = (*st)["ram"].value("postcopy-requests", 0ull);
  }
  if (report_.switchover_ms == 0) report_.switchover_ms = Ms();
  // Tell the destination agiled the VM is its own now.
  std::vector<uint8_t> f;
  wire::AppendEmpty(&f, wire::MigMsg::kDone);
  AGILE_RETURN_IF_ERROR(ch_->Send(f));
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait_for(l, std::chrono::milliseconds(kPeerTimeoutMs), [&] { return got_done_ack_ || !peer_status_.ok(); });
  return got_done_ack_ ? Status::Ok() : peer_status_.Annotate("waiting for DONE_ACK");
}

void Sender::Abort(const std::string& why) {
  if (ch_) {
    std::vector<uint8_t> f;
    wire::AppendAbort(&f, why);
    (void)ch_->Send(f);
  }
  if (paused_ || mem_ == nullptr) {
    (void)vm_->Qmp("migrate_cancel");
  }
  if (paused_) {
    auto r = vm_->Qmp("cont");
    if (r.ok()) spdlog::info("vm {}: resumed at the source after the failed migration", report_.vm);
    else spdlog::error("vm {}: could not resume after the failed migration: {}", report_.vm, r.status().ToString());
  }
}

}  // namespace agile::migrate
