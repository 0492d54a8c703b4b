#include "migrate/receiver.h"

#include <fcntl.h>

#include <spdlog/spdlog.h>

#include <atomic>
#include <memory>
#include <thread>
#include <mutex>
#include <vector>

#include "base/fault_point.h"
#include "base/io.h"
#include "base/json_depth.h"
#include "migrate/channel.h"
#include "migrate/qemu_control.h"
#include "migrate/receiver_states.h"
#include "migrate/storage_copy.h"
#include "vm/fault_server.h"

namespace agile::migrate {
using nlohmann::json;
using wire::MigMode;
using wire::MigMsg;
using wire::PageWhere;

namespace {

constexpr size_t kPage = 4096;
constexpr int kHelloTimeoutMs = 30000;  // the first frame of a connection the listener took for a migration

// Post-copy (and any early touch by QEMU): asks the source for pages still
// there, once each, batched by the fault thread's retries.
class Pager : public vm::RemotePager {
 public:
  Pager(Channel* ch, uint64_t pages) : ch_(ch), asked_(new std::atomic<uint8_t>[pages]()) {}
  void Request(uint64_t idx) override {
    if (asked_[idx].exchange(1)) return;
    std::vector<uint8_t> f;
    wire::AppendPageRequest(&f, &idx, 1);
    (void)ch_->Send(f);  // a broken connection surfaces in the receive loop
  }
  // The page's copy here went stale (agile's post-copy tail): ask again.
  void Forget(uint64_t idx) { asked_[idx].store(0); }

 private:
  Channel* ch_;
  std::unique_ptr<std::atomic<uint8_t>[]> asked_;
};

class Receiver {
 public:
  Receiver(UniqueFd conn, IncomingHost* vms, std::string listen_host, MigrationPeer peer)
      : ch_(std::move(conn), peer.timeouts.migrate_io_ms),
        vms_(vms),
        listen_host_(std::move(listen_host)),
        peer_(std::move(peer)) {}
  void Run();

 private:
  Status Hello();
  Status Loop();
  Status InstallPages(const std::vector<uint8_t>& payload);
  Status ApplyLocations(const std::vector<uint8_t>& payload);
  Status DoSwitchover(const std::vector<uint8_t>& payload);
  Status Finish();
  void Fail(const Status& s);
  // Pages still come from the source after switchover: post-copy, or agile's tail.
  bool PagesAfterSwitchover() const { return hello_.mode == MigMode::kPostcopy || tail_; }

  Channel ch_;
  IncomingHost* vms_;
  std::string listen_host_;
  MigrationPeer peer_;
  RecvPhase phase_ = RecvPhase::kHello;
  wire::MigHello hello_;
  qemu::VmSpec spec_;
  std::shared_ptr<MigratingVm> vm_;
  std::shared_ptr<vm::GuestMemory> mem_;  // null for stock VMs (qemu-* modes)
  std::unique_ptr<Pager> pager_;
  bool switch_started_ = false;    // SWITCHOVER received (loop thread only)
  bool tail_ = false;              // agile: some pages stay at the source past switchover (post-copy tail)
  std::atomic<bool> switched_{false};  // the VM may run here
  bool done_ = false;
  uint64_t pages_received_ = 0;
  // Resumes the VM; runs beside the receive loop, which must keep installing
  // the pages QEMU may fault on while it loads device state.
  std::thread switch_thread_;
  std::atomic<bool> finished_{false};  // non-post-copy: the switch thread completed the migration
  bool disk_copies_ = false;  // --copy-storage: we created local disk images (deleted on failure)
};

void Receiver::Run() {
  Status s = Hello();
  if (s.ok()) s = Loop();
  if (switch_thread_.joinable()) switch_thread_.join();
  if (finished_) s = Finish();
  if (!s.ok()) Fail(s);
}

Status Receiver::Hello() {
  std::vector<uint8_t> payload;
  AGILE_ASSIGN_OR_RETURN(auto h, ch_.Receive(&payload, kHelloTimeoutMs));
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
  mem_ = vm_->memory();
  if (!qemu_mode) {
    if (mem_ == nullptr) return Internal("incoming VM " + spec_.name + " has no guest memory of ours");
    pager_ = std::make_unique<Pager>(&ch_, mem_->pages());
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
  return ch_.Send(f);
}

Status Receiver::Loop() {
  std::vector<uint8_t> payload;
  while (!done_) {
    auto got = ch_.Receive(&payload, peer_.timeouts.migrate_peer_ms);
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
        vm_->SetMigrationStatus({{"phase", "incoming"}, {"round", round}, {"pages_received", pages_received_}});
        break;
      }
      case MigMsg::kLocations: AGILE_RETURN_IF_ERROR(ApplyLocations(payload)); break;
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
    for (uint64_t i = r.first; i < r.first + r.count; ++i) {
      vm::PageState st = mem_->state(i);
      switch (r.where) {
        case PageWhere::kSent:
          if (st != vm::PageState::kResident)
            return Internal("page " + std::to_string(i) + " should have arrived but did not");
          break;
        case PageWhere::kZero:
        case PageWhere::kInStore:
          AGILE_RETURN_IF_ERROR(
              mem_->Relocate(i, r.where == PageWhere::kZero ? vm::PageState::kZero : vm::PageState::kOffloaded));
          break;
        case PageWhere::kAtSource:
          if (hello_.mode == MigMode::kPostcopy) break;  // stays kRemote (or already arrived, current: VM paused)
          if (hello_.mode != MigMode::kAgile) return Corruption("page left at the source outside post-copy");
          // Agile's tail: the guest wrote this page after it was sent, so the
          // copy here is stale: back to "at the source" (GuestMemory::MarkStale).
          tail_ = true;
          if (st == vm::PageState::kResident) {
            pager_->Forget(i);
            AGILE_RETURN_IF_ERROR(mem_->MarkStale(i));
          }
          break;
      }
    }
  }
  return Status::Ok();
}

Status Receiver::DoSwitchover(const std::vector<uint8_t>& payload) {
  AGILE_ASSIGN_OR_RETURN(auto sw, wire::DecodeSwitchover(payload));
  if (switch_started_) return Corruption("a second SWITCHOVER in one migration");
  if (mem_ == nullptr) return Corruption("migration SWITCHOVER in a qemu-* mode");
  if (!PagesAfterSwitchover() && mem_->count(vm::PageState::kRemote) != 0)
    return Internal(std::to_string(mem_->count(vm::PageState::kRemote)) + " pages were never placed");
  if (sw.has_token) AGILE_RETURN_IF_ERROR(vm_->AdoptStore(hello_.store_vm_id, sw.epoch, sw.secret, sw.secret_hi));
  if (FaultPoint("exit-before-switchover-ack")) {
    // Tests: the worst moment to die, the lease taken and the source not told.
    spdlog::critical("AGILE_FAULT=exit-before-switchover-ack: exiting now");
    std::_Exit(86);
  }
  switch_started_ = true;
  switch_thread_ = std::thread([this, sw] {
    Status s = WaitIncomingDone(vm_.get(), peer_.timeouts.device_state_ms);
    if (s.ok() && disk_copies_) {
      // The source completed its mirrors before device state and has
      // disconnected: the exports have served their purpose.
      Status n = StopDiskExports(vm_.get());
      if (!n.ok()) spdlog::warn("vm {}: {}", spec_.name, n.ToString());
    }
    if (s.ok()) {
      switched_ = true;
      if (sw.resume) s = vm_->Qmp("cont").status();
    }
    std::vector<uint8_t> f;
    wire::AppendSwitchoverAck(&f, {s.ok() ? 0u : 1u, s.ok() ? "running" : s.message()});
    Status sent = ch_.Send(f);
    if (!s.ok() || !sent.ok()) {
      spdlog::error("vm {}: could not resume after switchover: {}", spec_.name, (s.ok() ? sent : s).ToString());
      ch_.Shutdown();  // ends the receive loop
      return;
    }
    vm_->MarkRunning(/*all_pages_here=*/!PagesAfterSwitchover());
    spdlog::info("vm {}: running here after {} migration ({} pages received)", spec_.name,
                 wire::MigModeName(hello_.mode), pages_received_);
    if (!PagesAfterSwitchover()) {
      finished_ = true;
      ch_.Shutdown();  // nothing more will come; the loop ends cleanly
    } else {
      vm_->SetMigrationStatus({{"phase", "postcopy"}, {"pages_remote", mem_->count(vm::PageState::kRemote)}});
    }
  });
  return Status::Ok();
}

Status Receiver::Finish() {
  const bool qemu_mode = wire::IsQemuMode(hello_.mode);
  if (qemu_mode) {
    AGILE_RETURN_IF_ERROR(WaitIncomingDone(vm_.get(), peer_.timeouts.device_state_ms));
    // QEMU resumes the guest itself when the source was running.
    auto st = vm_->Qmp("query-status");
    if (st.ok() && st->value("status", "") != "running") AGILE_RETURN_IF_ERROR(vm_->Qmp("cont").status());
    vm_->MarkRunning();
    switched_ = true;
  } else if (mem_ == nullptr) {
    return Corruption("migration DONE before SWITCHOVER");
  } else if (mem_->count(vm::PageState::kRemote) != 0) {
    // Post-copy DONE: every page must be here now.
    return Internal(std::to_string(mem_->count(vm::PageState::kRemote)) + " pages still at the source at DONE");
  }
  vm_->SetRemotePager(nullptr);
  vm_->SetMigrationStatus(nullptr);
  if (PagesAfterSwitchover()) vm_->MarkRunning(/*all_pages_here=*/true);  // the last page is here: adoptable
  if (PagesAfterSwitchover() || qemu_mode) {
    std::vector<uint8_t> f;
    wire::AppendEmpty(&f, MigMsg::kDoneAck);
    AGILE_RETURN_IF_ERROR(ch_.Send(f));
  }
  done_ = true;
  return Status::Ok();
}

void Receiver::Fail(const Status& s) {
  std::string name = vm_ ? spec_.name : "?";
  if (!switched_) {
    spdlog::error("vm {}: incoming migration failed before switchover: {}; dropping the copy here", name, s.ToString());
    std::vector<uint8_t> f;
    wire::AppendAbort(&f, s.message());
    (void)ch_.Send(f, 1000);  // a courtesy on a link that may be dead
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
    vm_->SetMigrationStatus(nullptr);
    spdlog::warn("vm {}: migration connection failed after switchover ({}), but every page is here: the VM is "
                 "complete", name, s.ToString());
    return;
  }
  // A terminal status instead of the last progress report, which would
  // otherwise say "postcopy" for ever (docs/reliability.md, finding 6); the
  // VM keeps its record's "incoming" mark while pages are missing.
  vm_->SetMigrationStatus({{"phase", "failed-after-switchover"},
                           {"error", s.message()},
                           {"pages_remote", remote},
                           {"source", hello_.src_host}});
  spdlog::error("vm {}: migration connection failed after switchover: {} ({} pages still at the source; "
                "vCPUs touching them wait)",
                name, s.ToString(), remote);
}

}  // namespace

void ReceiveMigration(UniqueFd conn, IncomingHost* vms, const std::string& listen_host, const MigrationPeer& peer) {
  Receiver r(std::move(conn), vms, listen_host, peer);
  r.Run();
}

}  // namespace agile::migrate
