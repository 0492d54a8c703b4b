#include "migrate/receiver.h"

#include <fcntl.h>

#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <thread>
#include <mutex>
#include <vector>

#include "base/fault_point.h"
#include "base/io.h"
#include "base/json_depth.h"
#include "migrate/channel.h"
#include "migrate/page_requester.h"
#include "migrate/recovery_board.h"
#include "migrate/qemu_control.h"
#include "migrate/receiver_states.h"
#include "migrate/storage_copy.h"
#include "qemu/qmp.h"
#include "vm/fault_server.h"

namespace agile::migrate {
using nlohmann::json;
using wire::MigMode;
using wire::MigMsg;
using wire::PageWhere;

namespace {

constexpr size_t kPage = 4096;
constexpr int kHelloTimeoutMs = 30000;  // the first frame of a connection the listener took for a migration

class Receiver {
 public:
  Receiver(std::unique_ptr<Channel> ch, IncomingHost* vms, std::string listen_host, MigrationPeer peer)
      : ch_(std::move(ch)), vms_(vms), listen_host_(std::move(listen_host)), peer_(std::move(peer)) {}
  // first/payload: the connection's first frame (HELLO), already read.
  void Run(const wire::FrameHeader& first, const std::vector<uint8_t>& payload);
  // After an agiled restart: takes up the incoming post-copy `rec`
  // describes, of the re-adopted VM `vm`, registered as paused (no channel
  // yet). Then Continue(what this returned) waits for the source's RESUME.
  Status Adopt(std::shared_ptr<MigratingVm> vm, const MigrationRecord& rec);
  // From the first failure (or success) of the loop on: recovery while the
  // failure is the link's, then the end (Finish or Fail).
  void Continue(Status s);

 private:
  // Registers this migration on peer_.recovery, so a RESUME finds it.
  void RegisterForRecovery();
  // This migration as the recovery board knows it (HELLO's id, source host,
  // mode, and the store namespace that moves with the VM in agile mode).
  RecoveryBoard::Entry RecoveryEntry() const;
  // migration.record at SWITCHOVER: the pages still at the source.
  Status SaveRecord();
  void ContAfterRestart();
  Status Hello(const wire::FrameHeader& h, const std::vector<uint8_t>& payload);
  // After switchover with pages still at the source: the link broke with
  // `cause`. Keeps everything, waits (up to the recovery window) for a
  // RESUME connection from the source, and hands it the pages still
  // missing. Ok: the migration goes on on the new connection.
  Status AwaitRecovery(const Status& cause);
  // The link may be recovered: SWITCHOVER came (the VM may run here, or
  // will once its `cont` is answered), pages still come from the source,
  // the switch thread has not given the VM up, and the failure was the
  // link's own (a protocol error stays an error). Whether the ACK reached
  // the source does not matter: a source without it recovers too
  // (Sender::Switchover), and a `cont` waiting in QEMU's main loop for a
  // page only the source can send is answered only after a recovery.
  bool Recoverable() const {
    return switch_started_ && PagesAfterSwitchover() && !done_ && registered_ && !switch_gave_up_ &&
           (ch_ == nullptr || ch_->broken());
  }
  // The switch thread's use of the link: under rec_mu_, as AwaitRecovery
  // swaps the channel beside it (the thread may outlive the old link).
  Status SendOnLink(const std::vector<uint8_t>& frame);
  void ShutdownLink();
  // The switch thread's end without the VM running here: AwaitRecovery
  // stops waiting for a RESUME that has nothing left to resume.
  void GiveUpSwitch();
  Status Loop();
  // Publishes this incoming migration's status on the VM (`vm stat`,
  // `migrate status` here): `fields` plus what every such status carries.
  void SetStatus(const char* status, const char* phase, nlohmann::json fields);
  Status InstallPages(const std::vector<uint8_t>& payload);
  Status ApplyLocations(const std::vector<uint8_t>& payload);
  Status DoSwitchover(const std::vector<uint8_t>& payload);
  // Switch thread: the VM never ran here (QEMU gone or hung before `cont`,
  // or `cont` refused). Hands the lease back to the source, then answers
  // SWITCHOVER_ACK "not resumed" with it (wire/migrate_proto.h).
  void HandBack(const wire::MigSwitchover& sw, const Status& cause);
  void HoldBeforeCont();  // AGILE_FAULT=hold-before-cont
  Status Finish();
  void Fail(const Status& s);
  // Pages still come from the source after switchover: post-copy, or agile's tail.
  bool PagesAfterSwitchover() const { return hello_.mode == MigMode::kPostcopy || tail_; }

  std::unique_ptr<Channel> ch_;  // replaced only by AwaitRecovery, under rec_mu_
  IncomingHost* vms_;
  std::string listen_host_;
  MigrationPeer peer_;
  RecvPhase phase_ = RecvPhase::kHello;
  wire::MigHello hello_;
  qemu::VmSpec spec_;
  std::shared_ptr<MigratingVm> vm_;
  std::shared_ptr<vm::GuestMemory> mem_;  // null for stock VMs (qemu-* modes)
  std::unique_ptr<PageRequester> pager_;
  bool switch_started_ = false;    // SWITCHOVER received (loop thread only)
  bool tail_ = false;              // agile: some pages stay at the source past switchover (post-copy tail)
  bool resume_ = false;            // SWITCHOVER asked for the guest to run here (the migration record keeps it)
  // Re-adopted after a restart that may have come before `cont`: resume the
  // guest once the last page is here, if it is still paused then.
  bool cont_when_done_ = false;
  std::atomic<bool> switched_{false};  // the VM may run here
  bool done_ = false;
  uint64_t pages_received_ = 0;
  // Loop thread: LOCATIONS applied (time in it, when the last one ended),
  // reported with the commit steps, as SWITCHOVER is read only after them.
  uint64_t locations_ns_ = 0, locations_end_ns_ = 0;
  // Resumes the VM; runs beside the receive loop, which must keep installing
  // the pages QEMU may fault on while it loads device state.
  std::thread switch_thread_;
  std::atomic<bool> finished_{false};  // non-post-copy: the switch thread completed the migration
  bool disk_copies_ = false;  // --copy-storage: we created local disk images (deleted on failure)
  std::atomic<bool> switch_gave_up_{false};  // the switch thread handed the VM back, or could not start it
  Status handed_back_;  // set by HandBack: why the VM went back to the source (read after the join)
  // Post-copy recovery: a RESUME connection the board handed over.
  bool registered_ = false;  // on peer_.recovery's board (loop thread)
  std::mutex rec_mu_;
  std::condition_variable rec_cv_;
  std::unique_ptr<Channel> pending_;  // guarded by rec_mu_
  bool abandoned_ = false;            // guarded by rec_mu_: agiled stops, stop waiting
  // Threads that send on ch_ (the switch thread) or shut it (the board's
  // deliver) hold rec_mu_; its owner, the loop thread, swaps it under it.
  uint64_t paused_since_ns_ = 0;      // loop thread: 0 while the link is up
  uint32_t recoveries_ = 0;
  // DONEs that came with pages still missing, each answered with a recovery
  // (Finish); a source that leaves a gap again after that is broken.
  static constexpr uint32_t kIncompleteDonesAskedAgain = 2;
  uint32_t incomplete_dones_ = 0;
};

// A "not resumed" SWITCHOVER_ACK carries the token the namespace was handed
// back with, or says why it could not go back.
void PutHandedBackToken(const Result<memd::OwnerToken>& token, wire::MigSwitchoverAck* ack) {
  if (!token.ok()) {
    ack->message += "; " + token.status().message();
    return;
  }
  ack->has_token = true;
  ack->epoch = token->epoch;
  ack->secret = token->secret;
  ack->secret_hi = token->secret_hi;
}

uint64_t NowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

void Receiver::Run(const wire::FrameHeader& first, const std::vector<uint8_t>& payload) {
  Status s = Hello(first, payload);
  if (s.ok()) s = Loop();
  Continue(std::move(s));
}

Status Receiver::Adopt(std::shared_ptr<MigratingVm> vm, const MigrationRecord& rec) {
  hello_.mode = rec.mode;
  hello_.src_host = rec.peer_host;
  hello_.migration_id_lo = rec.id_lo;
  hello_.migration_id_hi = rec.id_hi;
  hello_.store_vm_id = rec.store_vm_id;
  hello_.page_count = rec.pages;
  spec_ = vm->spec();
  vm_ = std::move(vm);
  mem_ = vm_->memory();
  // Where the previous agiled stood: SWITCHOVER handled and acknowledged,
  // the VM running here, pages still coming from the source.
  tail_ = rec.tail;
  resume_ = rec.resume;
  cont_when_done_ = rec.resume;
  phase_ = RecvPhase::kSwitched;
  switch_started_ = true;
  switched_ = true;
  Status s = Unavailable("agiled restarted during the post-copy");
  if (mem_ == nullptr || mem_->pages() != rec.pages || !PagesAfterSwitchover()) {
    s = Internal("vm " + spec_.name + ": the migration record does not fit the adopted VM");
  } else {
    pager_ = std::make_unique<PageRequester>(nullptr, mem_->pages());
    vm_->SetRemotePager(pager_.get());
    RegisterForRecovery();
    spdlog::warn("vm {}: re-adopted in the middle of its {} migration from {}: {} pages are still at the source; "
                 "waiting for it to resume", spec_.name, wire::MigModeName(hello_.mode), hello_.src_host,
                 mem_->count(vm::PageState::kRemote));
  }
  return s;
}

void Receiver::Continue(Status s) {
  // No join of the switch thread before a recovery: its `cont` may wait for
  // a page that only the recovered link brings (soak seed 7, run 259: the
  // RESUME sat behind it until QMP's timeout, and the VM stayed stranded).
  while (!s.ok() && Recoverable()) {
    // A recovery that did not happen (window over, agiled stopping) is the
    // end: its error leaves the old channel broken, and going round again
    // would find the window spent and fail at once, for ever.
    s = AwaitRecovery(s);
    if (!s.ok()) break;
    s = Loop();
  }
  // No Deliver after this; a completed migration is remembered, so a source
  // that lost the DONE_ACK with the link learns it on RESUME.
  if (registered_ && done_ && s.ok()) peer_.recovery->Completed(spec_.name);
  else if (registered_) peer_.recovery->Unregister(spec_.name);
  if (switch_thread_.joinable()) switch_thread_.join();
  if (finished_) s = Finish();
  if (!handed_back_.ok()) s = handed_back_;  // not the closed channel that followed it
  if (!s.ok()) Fail(s);
}

Status Receiver::Hello(const wire::FrameHeader& h, const std::vector<uint8_t>& payload) {
  AGILE_RETURN_IF_ERROR(Admit(phase_, h.type, false));
  AGILE_ASSIGN_OR_RETURN(hello_, wire::DecodeHello(payload));
  if (!JsonDepthWithin(hello_.spec_json)) return Corruption("migration HELLO: VM spec nests too deep");
  phase_ = After(phase_, h.type, hello_.mode);
  if (!peer_.identity.empty() && hello_.src_host != peer_.identity)
    return PermissionDenied("migration HELLO says it comes from host '" + hello_.src_host +
                            "', but the peer's certificate names '" + peer_.identity + "'");
  json spec_json = json::parse(hello_.spec_json, nullptr, false);
  if (spec_json.is_discarded()) return Corruption("migration HELLO: VM spec is not JSON");
  AGILE_ASSIGN_OR_RETURN(spec_, qemu::VmSpec::FromJson(spec_json));
  const bool qemu_mode = wire::IsQemuMode(hello_.mode);
  if (spec_.memory_bytes / kPage != hello_.page_count) return Corruption("migration HELLO: page count mismatch");
  if (hello_.mode == MigMode::kAgile && !hello_.store_vm_id.empty() && !vms_->has_store())
    return Unsupported("this agiled has no --memd, but the VM's cold pages live in a swap store");
  if (hello_.mode == MigMode::kAgile && !hello_.store_vm_id.empty() && hello_.store_addr != peer_.store_addr)
    return Unsupported("the source's swap store is " + hello_.store_addr + ", ours is " + peer_.store_addr +
                       ": both sides must use the same agile-memd");
  if (!spec_.extra_qemu_args.empty() && !peer_.may_pass_qemu_args)
    return PermissionDenied("the VM spec carries raw QEMU arguments, accepted only from an authenticated peer");
  if ((!spec_.disks.empty() || !spec_.nics.empty()) && !peer_.may_pass_qemu_args)
    return PermissionDenied("the VM spec names disks or NICs (host files and interfaces), accepted only from an authenticated peer");
  const bool copy = !hello_.copy_disk_bytes.empty();
  if (copy) {
    if (hello_.copy_disk_bytes.size() != spec_.disks.size())
      return Corruption("migration HELLO: " + std::to_string(hello_.copy_disk_bytes.size()) + " disk sizes for " +
                        std::to_string(spec_.disks.size()) + " disks");
    if (qemu_mode) return Unsupported("--copy-storage is not supported with the qemu-* modes yet");
    if (!peer_.identity.empty())
      return Unsupported("--copy-storage does not run over TLS yet (the NBD stream would not be encrypted)");
    // The VM's disks here are new local images, which the source fills.
    disk_copies_ = true;
    for (size_t i = 0; i < spec_.disks.size(); ++i) {
      AGILE_ASSIGN_OR_RETURN(std::string path, vms_->CreateDiskCopy(spec_.name, i, spec_.disks[i].format,
                                                                    hello_.copy_disk_bytes[i]));
      spec_.disks[i].path = path;
    }
  }
  spdlog::info("vm {}: incoming {} migration from {}{}", spec_.name, wire::MigModeName(hello_.mode), hello_.src_host,
               copy ? " (copying its disks)" : "");
  // The VM keeps its store namespace only in agile mode (ownership moves with
  // it); otherwise the source empties it and the copy here starts afresh.
  std::string store_id = hello_.mode == MigMode::kAgile ? hello_.store_vm_id : "";
  AGILE_ASSIGN_OR_RETURN(vm_, vms_->StartIncoming(spec_, store_id));
  // Recorded before the source hears HELLO_ACK: should this agiled die
  // before SWITCHOVER is taken, the next one knows the VM never ran here.
  if (peer_.recovery != nullptr && !qemu_mode)
    AGILE_RETURN_IF_ERROR(peer_.recovery->Arriving(spec_.name, RecoveryEntry()).Annotate("recording the arrival"));
  mem_ = vm_->memory();
  // The cold pages' connection is dialled now, not at the first refault
  // after switchover: QEMU loading device state may wait on one (seen: a
  // page of the legacy ROM area), and a dial there was 65-275 ms of downtime.
  if (!store_id.empty() && vm_->store() != nullptr) vm_->store()->Prepare();
  if (!qemu_mode) {
    if (mem_ == nullptr) return Internal("incoming VM " + spec_.name + " has no guest memory of ours");
    pager_ = std::make_unique<PageRequester>(ch_.get(), mem_->pages());
    vm_->SetRemotePager(pager_.get());
  }
  // The same capabilities and multifd channels as the source (a fresh QEMU,
  // but stated explicitly all the same: nothing is left to defaults).
  AGILE_RETURN_IF_ERROR(SetUpMigration(vm_.get(), hello_.mode));
  // An authenticated source gets QEMU's incoming stream under TLS as well,
  // admitting only its certificate (a plain QEMU port would take device
  // state - code, in effect - from anyone who reached it first).
  if (!peer_.identity.empty() && !peer_.tls_dir.empty())
    AGILE_RETURN_IF_ERROR(EnableQemuTls(vm_.get(), peer_.tls_dir, /*server=*/true, peer_.identity));
  AGILE_ASSIGN_OR_RETURN(uint16_t port, FreePort(listen_host_));
  std::string uri = "tcp:" + listen_host_ + ":" + std::to_string(port);
  AGILE_RETURN_IF_ERROR(vm_->Qmp("migrate-incoming", {{"uri", uri}}).status().Annotate("QMP migrate-incoming"));
  uint16_t nbd_port = 0;
  if (copy) {
    AGILE_ASSIGN_OR_RETURN(nbd_port, FreePort(listen_host_));
    AGILE_RETURN_IF_ERROR(ExportDisks(vm_.get(), listen_host_, nbd_port, spec_.disks.size()));
  }
  std::vector<uint8_t> f;
  wire::AppendHelloAck(&f, {0, "ok", port, vms_->host_id(), nbd_port});
  return ch_->Send(f);
}

Status Receiver::Loop() {
  std::vector<uint8_t> payload;
  while (!done_) {
    auto got = ch_->Receive(&payload, peer_.timeouts.migrate_peer_ms);
    if (!got.ok() && finished_) return Status::Ok();  // closed by the switch thread on success
    AGILE_ASSIGN_OR_RETURN(auto h, std::move(got));
    AGILE_RETURN_IF_ERROR(Admit(phase_, h.type, PagesAfterSwitchover()));
    phase_ = After(phase_, h.type, hello_.mode);
    switch (static_cast<MigMsg>(h.type)) {
      case MigMsg::kPages: AGILE_RETURN_IF_ERROR(InstallPages(payload)); break;
      case MigMsg::kRound: {
        uint32_t round;
        uint64_t n;
        AGILE_RETURN_IF_ERROR(wire::DecodeRound(payload, &round, &n));
        SetStatus("active", "incoming", {{"round", round},
                                         {"pages_received", pages_received_}});
        break;
      }
      case MigMsg::kLocations: {
        const uint64_t t = NowNs();
        AGILE_RETURN_IF_ERROR(ApplyLocations(payload));
        locations_end_ns_ = NowNs();
        locations_ns_ += locations_end_ns_ - t;
        break;
      }
      case MigMsg::kSwitchover: AGILE_RETURN_IF_ERROR(DoSwitchover(payload)); break;
      case MigMsg::kDone: AGILE_RETURN_IF_ERROR(Finish()); break;
      case MigMsg::kAbort: {
        auto why = wire::DecodeAbort(payload);
        return Unavailable("source aborted: " + (why.ok() ? *why : std::string("?")));
      }
      default: return Corruption(std::string("unexpected migration message ") + wire::MigMsgName(h.type));
    }
  }
  return Status::Ok();
}

Status Receiver::InstallPages(const std::vector<uint8_t>& payload) {
  uint32_t round;
  std::vector<wire::MigPage> pages;
  AGILE_RETURN_IF_ERROR(wire::DecodePages(payload, &round, &pages));
  if (mem_ == nullptr) return Corruption("migration PAGES in a qemu-* mode");
  for (const auto& p : pages) {
    if (p.index >= mem_->pages()) return Corruption("migration PAGES: index out of range");
    // A page already here is overwritten by later pre-copy rounds only until
    // switchover: after that the guest's copy wins.
    AGILE_ASSIGN_OR_RETURN(bool placed, mem_->InstallIncoming(p.index, p.data, /*overwrite_resident=*/!switch_started_));
    if (placed || !switch_started_) ++pages_received_;
  }
  return Status::Ok();
}

Status Receiver::ApplyLocations(const std::vector<uint8_t>& payload) {
  std::vector<wire::MigRun> runs;
  AGILE_RETURN_IF_ERROR(wire::DecodeLocations(payload, &runs));
  if (mem_ == nullptr) return Corruption("migration LOCATIONS in a qemu-* mode");
  for (const auto& r : runs) {
    if (r.first + r.count > mem_->pages() || r.first + r.count < r.first)
      return Corruption("migration LOCATIONS: run out of range");
    if (r.where == PageWhere::kInStore && vm_->store() == nullptr)
      return Unsupported("page in a swap store, but this agiled has no --memd");
    // A run at a time: these verbs take whole runs (one punch per stretch,
    // one wake of waiting faults), as the switchover waits for them.
    switch (r.where) {
      case PageWhere::kSent:
        for (uint64_t i = r.first; i < r.first + r.count; ++i)
          if (mem_->state(i) != vm::PageState::kResident)
            return Internal("page " + std::to_string(i) + " should have arrived but did not");
        break;
      case PageWhere::kZero:
      case PageWhere::kInStore:
        AGILE_RETURN_IF_ERROR(mem_->Relocate(r.first, r.count,
                                             r.where == PageWhere::kZero ? vm::PageState::kZero
                                                                         : vm::PageState::kOffloaded));
        break;
      case PageWhere::kAtSource:
        if (hello_.mode == MigMode::kPostcopy) break;  // stays kRemote (or already arrived, current: VM paused)
        if (hello_.mode != MigMode::kAgile) return Corruption("page left at the source outside post-copy");
        // Agile's tail: the guest wrote these pages after they were sent, so
        // the copies here are stale: back to "at the source" (GuestMemory::MarkStale).
        tail_ = true;
        for (uint64_t i = r.first; i < r.first + r.count; ++i)
          if (mem_->state(i) == vm::PageState::kResident) pager_->Forget(i);  // to be asked for again
        AGILE_RETURN_IF_ERROR(mem_->MarkStale(r.first, r.count));
        break;
    }
  }
  return Status::Ok();
}

Status Receiver::DoSwitchover(const std::vector<uint8_t>& payload) {
  if (FaultPoint("lose-switchover")) {
    // Tests: the link lost as SWITCHOVER arrives, before it is taken (soak
    // seed 7, run 112 of session 12): the source is past its commit point.
    spdlog::critical("AGILE_FAULT=lose-switchover: closing the link instead of taking SWITCHOVER");
    ShutdownLink();
    return Unavailable("AGILE_FAULT=lose-switchover: the link closed as SWITCHOVER arrived");
  }
  if (FaultPoint("exit-at-switchover")) {
    // Tests: this agiled dies as SWITCHOVER arrives, before it is taken
    // (soak seed 7, run 182 of session 10); the next one must still tell
    // the source that the VM never ran here.
    spdlog::critical("AGILE_FAULT=exit-at-switchover: exiting instead of taking SWITCHOVER");
    std::_Exit(86);
  }
  AGILE_ASSIGN_OR_RETURN(auto sw, wire::DecodeSwitchover(payload));
  if (switch_started_) return Corruption("a second SWITCHOVER in one migration");
  // From here the VM may run on pages that exist only at the source: a
  // lost link must be recoverable (AwaitRecovery).
  if (PagesAfterSwitchover()) RegisterForRecovery();
  if (mem_ == nullptr) return Corruption("migration SWITCHOVER in a qemu-* mode");
  if (!PagesAfterSwitchover() && mem_->count(vm::PageState::kRemote) != 0)
    return Internal(std::to_string(mem_->count(vm::PageState::kRemote)) + " pages were never placed");
  // The source's `commit` downtime step is spent here: each part is timed
  // and logged, so a slow commit says which part (bench/README.md).
  const uint64_t t_switch = NowNs();
  if (sw.has_token) AGILE_RETURN_IF_ERROR(vm_->AdoptStore(hello_.store_vm_id, sw.epoch, sw.secret, sw.secret_hi));
  // Before the VM may run here: which pages are still at the source, so an
  // agiled restarted from now on re-adopts it with those waiting for the
  // source instead of dropping (or zero-filling) them.
  resume_ = sw.resume;
  // Before anything lets the VM run here (the records below, `cont`): from
  // now on a restarted agiled must never say that it never ran here.
  if (peer_.recovery != nullptr)
    AGILE_RETURN_IF_ERROR(peer_.recovery->Arrived(spec_.name).Annotate("marking the arrival taken over"));
  if (PagesAfterSwitchover()) AGILE_RETURN_IF_ERROR(SaveRecord());
  const uint64_t t_adopted = NowNs();
  if (FaultPoint("exit-before-switchover-ack")) {
    // Tests: the worst moment to die, the lease taken and the source not told.
    spdlog::critical("AGILE_FAULT=exit-before-switchover-ack: exiting now");
    std::_Exit(86);
  }
  switch_started_ = true;
  const double locations_ms = static_cast<double>(locations_ns_) / 1e6;
  const double locations_gap_ms = static_cast<double>(t_switch - locations_end_ns_) / 1e6;
  switch_thread_ = std::thread([this, sw, t_switch, t_adopted, locations_ms, locations_gap_ms] {
    // With every page here, the record says "arrived" before `cont`, so no
    // crash of this agiled from now on loses the VM (the source lets go at
    // the ACK, and cannot resume without the lease before it). Written
    // beside the device-state load, off the downtime's critical path.
    std::thread arrival;
    Status recorded;
    if (!PagesAfterSwitchover()) arrival = std::thread([this, &recorded] { recorded = vm_->RecordArrival(true); });
    if (FaultPoint("hold-before-cont")) {
      if (arrival.joinable()) arrival.join();  // the window a test kills in starts with the record written
      HoldBeforeCont();
    }
    if (FaultPoint("delay-before-cont")) {
      // Tests: SWITCHOVER taken, its ACK 5 s late: the source waits for it
      // past its commit point, where a cancel must not end the migration.
      spdlog::critical("AGILE_FAULT=delay-before-cont: holding vm {} 5 s before cont", spec_.name);
      SetStatus("device", "delayed-before-cont", {{"fault", "delay-before-cont"}});
      std::this_thread::sleep_for(std::chrono::seconds(5));
    }
    Status s = WaitIncomingDone(vm_.get(), peer_.timeouts.device_state_ms);
    if (arrival.joinable()) arrival.join();
    // Not recorded as arrived: a restart would drop a copy that may have
    // run, whose source let go. It never runs here, then; it goes back.
    if (s.ok() && !recorded.ok()) s = recorded.Annotate("recording the VM as arrived before cont");
    const uint64_t t_loaded = NowNs();
    // Until `cont` the guest cannot have run here: the device state carries
    // the source's run state, paused since stop-and-copy, so QEMU does not
    // start it by itself. A QEMU that died or hung before is known unrun.
    bool never_ran = !s.ok();
    if (s.ok() && disk_copies_) {
      // The source completed its mirrors before device state and has
      // disconnected: the exports have served their purpose.
      Status n = StopDiskExports(vm_.get());
      if (!n.ok()) spdlog::warn("vm {}: {}", spec_.name, n.ToString());
    }
    std::string cont_note;
    if (s.ok()) {
      switched_ = true;
      if (sw.resume) s = vm_->Qmp("cont").status();
      // QEMU answered `cont` with an error: it checks everything before it
      // starts the vCPUs, so the guest did not run. No answer (QEMU died, or
      // the QMP socket broke mid-command) may hide a `cont` that did run.
      if (qemu::QmpRefused(s)) {
        never_ran = true;
        switched_ = false;
      } else if (qemu::QmpTimedOut(s) && PagesAfterSwitchover()) {
        // QEMU has the command and runs it once its main loop is free; in
        // post-copy that loop may wait for a page only the source can send
        // (and the link to it may be down). The guest starts when that page
        // arrives: the migration goes on, recoverable, as with a `cont` answered.
        cont_note = "; QEMU had not answered cont yet (" + s.message() +
                    "): the guest starts once the page its main loop waits for arrives";
        spdlog::warn("vm {}: {}", spec_.name, cont_note.substr(2));
        s = Status::Ok();
      }
    }
    if (never_ran) {
      HandBack(sw, s);
      return;
    }
    const uint64_t t_resumed = NowNs();
    std::vector<uint8_t> f;
    wire::AppendSwitchoverAck(&f, {s.ok() ? wire::SwitchoverResult::kRunning : wire::SwitchoverResult::kFailed,
                                   s.ok() ? "running" + cont_note : s.message()});
    Status sent = SendOnLink(f);
    const uint64_t t_acked = NowNs();
    auto ms = [](uint64_t a, uint64_t b) { return static_cast<double>(b - a) / 1e6; };
    spdlog::info("vm {}: commit steps here: adopt-store {:.1f} ms, device-state-load {:.1f} ms, cont {:.1f} ms, "
                 "ack {:.1f} ms (SWITCHOVER to ACK sent: {:.1f} ms; before it, LOCATIONS applied in {:.1f} ms, "
                 "the last {:.1f} ms before SWITCHOVER was read)",
                 spec_.name, ms(t_switch, t_adopted), ms(t_adopted, t_loaded), ms(t_loaded, t_resumed),
                 ms(t_resumed, t_acked), ms(t_switch, t_acked), locations_ms, locations_gap_ms);
    if (!s.ok() || (!sent.ok() && !PagesAfterSwitchover())) {
      spdlog::error("vm {}: could not resume after switchover: {}", spec_.name, (s.ok() ? sent : s).ToString());
      if (!s.ok()) GiveUpSwitch();
      ShutdownLink();  // ends the receive loop
      return;
    }
    if (!sent.ok())
      spdlog::warn("vm {}: SWITCHOVER_ACK lost with the link ({}); the VM runs here and the source, which has the "
                   "pages still missing, recovers the post-copy", spec_.name, sent.ToString());
    if (FaultPoint("exit-after-switchover-ack")) {
      // Tests: the source has let go; only this copy's record can save the VM.
      spdlog::critical("AGILE_FAULT=exit-after-switchover-ack: exiting now");
      std::_Exit(86);
    }
    vm_->MarkRunning(/*all_pages_here=*/!PagesAfterSwitchover());
    spdlog::info("vm {}: running here after {} migration ({} pages received)", spec_.name,
                 wire::MigModeName(hello_.mode), pages_received_);
    if (!PagesAfterSwitchover()) {
      finished_ = true;
      ShutdownLink();  // nothing more will come; the loop ends cleanly
    } else {
      SetStatus("postcopy-active", "postcopy", {{"mode", wire::MigModeName(hello_.mode)},
                                                {"pages_remote", mem_->count(vm::PageState::kRemote)}});
    }
  });
  return Status::Ok();
}

void Receiver::HandBack(const wire::MigSwitchover& sw, const Status& cause) {
  // The source's paused copy is whole (nothing ran anywhere since it paused).
  // The lease goes back before the answer, so exactly one host owns the
  // namespace at every moment and the source resumes only once it does;
  // Run then drops this copy, which no longer holds a token to release.
  // First of all the record goes back to `incoming`: a copy that never ran
  // here must not be re-adopted by a restart once the source runs the VM.
  if (!PagesAfterSwitchover()) {
    Status r = vm_->RecordArrival(false);
    if (!r.ok())
      spdlog::error("vm {}: its state record still says arrived ({}): an agiled restart before this copy is "
                    "dropped would adopt it, paused, while its source runs the VM",
                    spec_.name, r.ToString());
  }
  wire::MigSwitchoverAck ack{wire::SwitchoverResult::kNotResumed,
                             "not resumed: the VM never ran here (" + cause.message() + ")"};
  if (sw.has_token) PutHandedBackToken(vm_->HandBackStore(hello_.src_host), &ack);
  spdlog::error("vm {}: not resumed after switchover, the VM never ran here: {}; handing it back to {}{}",
                spec_.name, cause.ToString(), hello_.src_host,
                !sw.has_token ? "" : ack.has_token ? " with its swap-store namespace" : " (its namespace could not go back)");
  std::vector<uint8_t> f;
  wire::AppendSwitchoverAck(&f, ack);
  Status sent = SendOnLink(f);
  if (!sent.ok()) spdlog::error("vm {}: the source was not told: {}", spec_.name, sent.ToString());
  handed_back_ = Unavailable(ack.message);
  GiveUpSwitch();
  ShutdownLink();  // ends the receive loop; Run drops the copy here
}

Status Receiver::SendOnLink(const std::vector<uint8_t>& frame) {
  std::lock_guard<std::mutex> l(rec_mu_);
  if (ch_ == nullptr) return Unavailable("no link to the source");
  return ch_->Send(frame);
}

void Receiver::ShutdownLink() {
  std::lock_guard<std::mutex> l(rec_mu_);
  if (ch_) ch_->Shutdown();
}

void Receiver::GiveUpSwitch() {
  std::lock_guard<std::mutex> l(rec_mu_);
  switch_gave_up_ = true;
  rec_cv_.notify_all();
}

void Receiver::ContAfterRestart() {
  // The previous agiled may have died between SWITCHOVER and `cont`: the
  // guest then waited, paused, for the pages to come. The source ran it, so
  // it runs here now; one the operator paused meanwhile is paused already
  // and a second `cont` is harmless either way.
  auto st = vm_->Qmp("query-status");
  if (!st.ok()) {
    spdlog::warn("vm {}: every page is here, but its run state cannot be read ({}); `agilectl vm resume {}` if it "
                 "stays paused", spec_.name, st.status().ToString(), spec_.name);
    return;
  }
  if (st->value("status", "") != "paused") return;
  Status c = vm_->Qmp("cont").status();
  if (c.ok())
    spdlog::warn("vm {}: resumed now that every page is here: agiled had restarted after SWITCHOVER, before the "
                 "guest was started", spec_.name);
  else
    spdlog::error("vm {}: every page is here, but resuming it failed: {}", spec_.name, c.ToString());
}

void Receiver::HoldBeforeCont() {
  // Tests: a window to kill this QEMU (SIGKILL, as the soak does) after
  // SWITCHOVER and before `cont`. Ends once QEMU stops answering, or after 60 s.
  spdlog::critical("AGILE_FAULT=hold-before-cont: holding vm {} before cont", spec_.name);
  SetStatus("device", "held-before-cont", {{"fault", "hold-before-cont"}});
  for (int i = 0; i < 600 && vm_->Qmp("query-status").ok(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
}

void Receiver::RegisterForRecovery() {
  if (peer_.recovery == nullptr || registered_) return;
  // A RESUME that comes while this connection still looks alive here (a
  // half-open link) ends it, so the loop fails over to the new one.
  RecoveryBoard::Entry e = RecoveryEntry();
  e.deliver = [this](std::unique_ptr<Channel> ch) {
    std::lock_guard<std::mutex> l(rec_mu_);
    if (ch) pending_ = std::move(ch);
    else abandoned_ = true;  // agiled stops
    if (ch_) ch_->Shutdown();
    rec_cv_.notify_all();
  };
  Status r = peer_.recovery->Register(spec_.name, std::move(e));
  if (!r.ok()) spdlog::warn("vm {}: post-copy recovery not available: {}", spec_.name, r.ToString());
  registered_ = r.ok();
}

RecoveryBoard::Entry Receiver::RecoveryEntry() const {
  RecoveryBoard::Entry e;
  e.id_lo = hello_.migration_id_lo;
  e.id_hi = hello_.migration_id_hi;
  e.src_host = hello_.src_host;
  e.mode = hello_.mode;
  e.store_vm_id = hello_.mode == MigMode::kAgile ? hello_.store_vm_id : "";
  return e;
}

Status Receiver::SaveRecord() {
  MigrationRecord r;
  r.vm = spec_.name;
  r.role = MigrationRecord::Role::kDestination;
  r.mode = hello_.mode;
  r.id_lo = hello_.migration_id_lo;
  r.id_hi = hello_.migration_id_hi;
  r.peer_host = hello_.src_host;
  r.tail = tail_;
  r.resume = resume_;
  r.store_vm_id = hello_.store_vm_id;
  r.pages = mem_->pages();
  r.remote.resize(r.pages);
  // Final: LOCATIONS (the only way a page goes back to the source) all came
  // before SWITCHOVER; from here kRemote pages only arrive.
  for (uint64_t i = 0; i < r.pages; ++i) r.remote[i] = mem_->state(i) == vm::PageState::kRemote;
  return vm_->SaveMigrationRecord(&r).Annotate("migration record at switchover");
}

void Receiver::SetStatus(const char* status, const char* phase, nlohmann::json fields) {
  fields["status"] = status;
  fields["phase"] = phase;
  fields["direction"] = "incoming";
  fields["source"] = hello_.src_host;
  vm_->SetMigrationStatus(std::move(fields));
}

Status Receiver::AwaitRecovery(const Status& cause) {
  ShutdownLink();
  pager_->Detach();
  if (paused_since_ns_ == 0) paused_since_ns_ = NowNs();
  const uint64_t window_ns = static_cast<uint64_t>(peer_.timeouts.migrate_recover_ms) * 1000000ull;
  const uint64_t remote = mem_->count(vm::PageState::kRemote);
  spdlog::error("vm {}: post-copy link to {} lost after switchover ({}): {} pages are still only at the source; "
                "vCPUs touching them wait, everything else runs. Waiting up to {} s for the source to recover it "
                "(automatically, or `agilectl migrate --recover {}` there)",
                spec_.name, hello_.src_host, cause.ToString(), remote, peer_.timeouts.migrate_recover_ms / 1000,
                spec_.name);
  SetStatus("postcopy-paused", "postcopy-paused", {{"mode", wire::MigModeName(hello_.mode)},
                                                   {"pages_remote", remote},
                                                   {"error", cause.ToString()},
                                                   {"recovery_window_ms", peer_.timeouts.migrate_recover_ms},
                                                   {"recoveries", recoveries_}});
  std::unique_ptr<Channel> old;
  std::unique_lock<std::mutex> l(rec_mu_);
  const uint64_t elapsed = NowNs() - paused_since_ns_;
  const auto left = std::chrono::nanoseconds(elapsed < window_ns ? window_ns - elapsed : 0);
  if (!rec_cv_.wait_for(l, left, [&] { return pending_ != nullptr || abandoned_ || switch_gave_up_; }))
    return cause.Annotate("post-copy link lost and not recovered within the " +
                          std::to_string(peer_.timeouts.migrate_recover_ms / 1000) + " s recovery window");
  if (pending_ == nullptr && switch_gave_up_)
    return cause.Annotate("post-copy link lost, and the VM was not started here");
  if (pending_ == nullptr) return cause.Annotate("post-copy link lost; recovery given up: agiled is stopping");
  old = std::move(ch_);
  ch_ = std::move(pending_);
  // Every page still missing, requested or not: the source sends exactly
  // these again (anything sent on the old link and lost is among them; a
  // page that did arrive is here and is not sent twice).
  std::vector<wire::MigRun> runs;
  uint64_t n = 0;
  for (uint64_t i = 0; i < mem_->pages(); ++i) {
    if (mem_->state(i) != vm::PageState::kRemote) continue;
    ++n;
    if (!runs.empty() && runs.back().first + runs.back().count == i) ++runs.back().count;
    else runs.push_back({i, 1, PageWhere::kAtSource});
  }
  std::vector<uint8_t> f;
  wire::AppendResumeAck(&f, {0, "resumed", n});
  for (size_t at = 0; at < runs.size(); at += 32768)
    wire::AppendLocations(&f, runs, at, std::min<size_t>(32768, runs.size() - at));
  // Still under rec_mu_: RESUME_ACK is the new link's first frame, before a
  // SWITCHOVER_ACK the switch thread may send on it (Sender::Recover reads
  // RESUME_ACK first).
  Status sent = ch_->Send(f).Annotate("answering RESUME");
  l.unlock();
  old.reset();
  AGILE_RETURN_IF_ERROR(sent);
  pager_->Attach(ch_.get());
  ++recoveries_;
  spdlog::info("vm {}: post-copy link recovered after {:.1f} s; {} pages still to come from {}", spec_.name,
               static_cast<double>(NowNs() - paused_since_ns_) / 1e9, n, hello_.src_host);
  paused_since_ns_ = 0;
  SetStatus("postcopy-active", "postcopy", {{"pages_remote", n},
                                            {"recoveries", recoveries_}});
  return Status::Ok();
}

Status Receiver::Finish() {
  const bool qemu_mode = wire::IsQemuMode(hello_.mode);
  if (qemu_mode && FaultPoint("exit-before-done-ack")) {
    // Tests: QEMU's own migration has completed (its QEMU runs the guest), the source is not told.
    spdlog::critical("AGILE_FAULT=exit-before-done-ack: exiting now");
    std::_Exit(86);
  }
  if (qemu_mode) {
    AGILE_RETURN_IF_ERROR(WaitIncomingDone(vm_.get(), peer_.timeouts.device_state_ms));
    // QEMU resumes the guest itself when the source was running.
    auto st = vm_->Qmp("query-status");
    if (st.ok() && st->value("status", "") != "running") AGILE_RETURN_IF_ERROR(vm_->Qmp("cont").status());
    vm_->MarkRunning();
    switched_ = true;
  } else if (mem_ == nullptr) {
    return Corruption("migration DONE before SWITCHOVER");
  } else if (const uint64_t missing = mem_->count(vm::PageState::kRemote); missing != 0) {
    // Post-copy DONE: every page must be here now. A source that counts
    // everything sent while pages are missing here (a CI rehearsal, session
    // 9: 5 pages after a restarted source's tail recovery) is asked for them
    // the way a lost link is: the link goes down, and its RESUME is answered
    // with what is still missing. Failing here instead strands the VM: its
    // vCPUs wait on those pages, and the source, refused, keeps it paused.
    std::string first;
    for (uint64_t i = 0, k = 0; i < mem_->pages() && k < 8; ++i)
      if (mem_->state(i) == vm::PageState::kRemote) first += (k++ ? ", " : "") + std::to_string(i);
    const std::string what = std::to_string(missing) + " pages still at the source at DONE (first: " + first + ")";
    if (PagesAfterSwitchover() && incomplete_dones_ < kIncompleteDonesAskedAgain) {
      ++incomplete_dones_;
      phase_ = RecvPhase::kSwitched;  // DONE is expected again, after the pages
      spdlog::error("vm {}: {}; closing the link so the source's recovery sends them again (time {} of {})",
                    spec_.name, what, incomplete_dones_, kIncompleteDonesAskedAgain);
      ShutdownLink();
      return Unavailable(what + ": asked for again through a recovery");
    }
    return Internal(what);
  }
  // The switch thread's last word first (its MarkRunning keeps the record's
  // "incoming" mark, which must not follow the one below). With every page
  // here its `cont` waits for nothing of the source's.
  if (PagesAfterSwitchover() && switch_thread_.joinable()) switch_thread_.join();
  vm_->SetRemotePager(nullptr);
  vm_->SetMigrationStatus(nullptr);
  if (PagesAfterSwitchover()) {
    vm_->MarkRunning(/*all_pages_here=*/true);  // the last page is here: adoptable
    if (cont_when_done_) ContAfterRestart();
    // After MarkRunning: a restart in between adopts a whole VM and drops
    // the stale record.
    Status r = vm_->SaveMigrationRecord(nullptr);
    if (!r.ok()) spdlog::warn("vm {}: {}", spec_.name, r.ToString());
  }
  if (PagesAfterSwitchover() || qemu_mode) {
    std::vector<uint8_t> f;
    wire::AppendEmpty(&f, MigMsg::kDoneAck);
    AGILE_RETURN_IF_ERROR(ch_->Send(f));
  }
  done_ = true;
  return Status::Ok();
}

void Receiver::Fail(const Status& s) {
  std::string name = vm_ ? spec_.name : "?";
  if (!switched_) {
    spdlog::error("vm {}: incoming migration failed {}: {}; dropping the copy here", name,
                  handed_back_.ok() ? "before switchover" : "at switchover (handed back: the VM never ran here)",
                  s.ToString());
    // Remembered before the copy goes: a source that sent SWITCHOVER and
    // lost the link before any answer is past its commit point, paused and
    // fenced; its RESUME must learn that the VM never ran here.
    if (vm_ && peer_.recovery != nullptr && !wire::IsQemuMode(hello_.mode)) {
      Status d = peer_.recovery->Dropped(spec_.name, RecoveryEntry());
      if (!d.ok()) spdlog::error("vm {}: {}", name, d.ToString());
    }
    std::vector<uint8_t> f;
    wire::AppendAbort(&f, s.message());
    (void)ch_->Send(f, 1000);  // a courtesy on a link that may be dead
    if (vm_) {
      vm_->SetRemotePager(nullptr);
      vms_->DropIncoming(spec_.name);
    }
    if (disk_copies_) vms_->RemoveDiskCopies(spec_.name);
    return;
  }
  // After switchover the guest runs here; in post-copy it may still need
  // pages from the source. Faults on them wait (never zero-filled); the pager
  // dies with this connection, so the fault server must not call it again.
  if (!vm_) return;
  vm_->SetRemotePager(nullptr);
  const uint64_t remote = mem_ ? mem_->count(vm::PageState::kRemote) : 0;
  if (remote == 0 && mem_ != nullptr) {
    // Every page arrived before the link broke (only DONE or its ACK was
    // lost): the VM is whole here, adoptable after a restart and free to
    // migrate on, and `vm stat` must not say a migration still runs.
    vm_->MarkRunning(/*all_pages_here=*/true);
    (void)vm_->SaveMigrationRecord(nullptr);
    vm_->SetMigrationStatus(nullptr);
    spdlog::warn("vm {}: migration connection failed after switchover ({}), but every page is here: the VM is "
                 "complete", name, s.ToString());
    return;
  }
  // A terminal status instead of the last progress report, which would
  // otherwise say "postcopy" for ever (docs/reliability.md, finding 6). Nothing
  // is dropped on either side: the source keeps the pages (its VM paused and
  // fenced), this copy keeps running on what it has, and keeps its record's
  // "incoming" mark while pages are missing.
  spdlog::error("vm {}: migration connection failed after switchover: {} ({} pages still at the source; "
                "vCPUs touching them wait)",
                name, s.ToString(), remote);
  const std::string error = s.ToString() + "; " + std::to_string(remote) +
                            " pages exist only at the source, whose VM stays paused and fenced there";
  SetStatus("failed", "failed-after-switchover", {{"pages_remote", remote}, {"error", error}});
}

// A connection whose first frame is RESUME: hands it to the paused
// post-copy it names, or answers why not.
// After RESUME_ACK 3 in agile mode: the source may send the SWITCHOVER that
// never arrived, for its token; the namespace goes back to it under that
// token and SWITCHOVER_ACK "not resumed" carries the new one, as HandBack's.
void HandBackLease(Channel& ch, const wire::MigResume& r, const std::string& store_vm_id, IncomingHost* vms,
                   const MigrationPeer& peer) {
  std::vector<uint8_t> payload;
  auto h = ch.Receive(&payload, peer.timeouts.migrate_peer_ms);
  if (!h.ok()) return;  // the source had no token to send (or went): nothing to hand back
  wire::MigSwitchoverAck ack{wire::SwitchoverResult::kNotResumed, "not resumed: the VM never ran here"};
  auto sw = h->type == static_cast<uint16_t>(MigMsg::kSwitchover)
                ? wire::DecodeSwitchover(payload)
                : Result<wire::MigSwitchover>(Corruption(std::string("expected SWITCHOVER after RESUME_ACK 3, got ") +
                                                         wire::MigMsgName(h->type)));
  if (!sw.ok()) {
    ack.message += "; " + sw.status().message();
  } else if (sw->has_token) {
    PutHandedBackToken(vms->HandBackNamespace(store_vm_id, {sw->epoch, sw->secret, sw->secret_hi}, r.src_host), &ack);
  }
  spdlog::warn("vm {}: the swap-store namespace {} {}", r.vm, store_vm_id,
               ack.has_token ? "went back to " + r.src_host : "could not go back: " + ack.message);
  std::vector<uint8_t> f;
  wire::AppendSwitchoverAck(&f, ack);
  (void)ch.Send(f, 1000);
}

Status TakeOver(std::unique_ptr<Channel> ch, const std::vector<uint8_t>& payload, IncomingHost* vms,
                const MigrationPeer& peer) {
  auto resume = wire::DecodeResume(payload);
  Status s = resume.status();
  if (s.ok() && peer.recovery == nullptr) s = Unsupported("this agiled takes no post-copy recovery");
  if (s.ok()) s = peer.recovery->Offer(*resume, peer.identity, &ch);
  if (s.ok()) {
    spdlog::info("vm {}: RESUME from {} accepted: the paused post-copy takes the new connection", resume->vm,
                 resume->src_host);
    return s;
  }
  std::vector<uint8_t> f;
  // 3: its copy here was dropped before SWITCHOVER was taken, so the VM
  // never ran here and the source may take it back (lease permitting).
  std::string store_vm_id;
  if (s.code() == Code::kNotFound && peer.recovery != nullptr && resume.ok() &&
      peer.recovery->NeverRan(*resume, peer.identity, &store_vm_id)) {
    const std::string why = "the VM never ran here: its copy was dropped before SWITCHOVER arrived";
    wire::AppendResumeAck(&f, {3u, why, 0});
    spdlog::warn("vm {}: RESUME from {}: {}; the source may take it back", resume->vm, resume->src_host, why);
    if (ch->Send(f, 1000).ok() && !store_vm_id.empty()) HandBackLease(*ch, *resume, store_vm_id, vms, peer);
    return Status::Ok();
  }
  // 2: that migration completed here; the source may let go of the VM.
  wire::AppendResumeAck(&f, {s.code() == Code::kAlreadyExists ? 2u : 1u, s.ToString(), 0});
  (void)ch->Send(f, 1000);
  return s.code() == Code::kAlreadyExists ? Status::Ok() : s;
}

}  // namespace

std::thread ResumeIncomingAfterRestart(std::shared_ptr<MigratingVm> vm, const MigrationRecord& rec,
                                       IncomingHost* host, const MigrationPeer& peer) {
  auto r = std::make_shared<Receiver>(nullptr, host, "", peer);
  Status s = r->Adopt(std::move(vm), rec);  // registered on the board before this returns
  return std::thread([r, s]() mutable { r->Continue(std::move(s)); });
}

void ReceiveMigration(UniqueFd conn, IncomingHost* vms, const std::string& listen_host, const MigrationPeer& peer) {
  auto ch = std::make_unique<Channel>(std::move(conn), peer.timeouts.migrate_io_ms);
  std::vector<uint8_t> payload;
  auto h = ch->Receive(&payload, kHelloTimeoutMs);
  if (!h.ok()) {
    spdlog::warn("migration connection: no first frame: {}", h.status().ToString());
    return;
  }
  if (h->type == static_cast<uint16_t>(MigMsg::kResume)) {
    Status s = TakeOver(std::move(ch), payload, vms, peer);
    if (!s.ok()) spdlog::warn("migration RESUME refused: {}", s.ToString());
    return;
  }
  Receiver r(std::move(ch), vms, listen_host, peer);
  r.Run(*h, payload);
}

}  // namespace agile::migrate
