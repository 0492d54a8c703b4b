// The source side of a migration (see wire/migrate_proto.h for the protocol
// and docs/migration.md for the modes). Runs on the control thread that got
// the vm.migrate request; one migration per VM at a time.
//
// Failure safety: until SWITCHOVER is sent, any error, a cancel or a timeout
// aborts - the destination is told (ABORT) and drops its copy, and the source
// VM is resumed if it had been paused: it keeps running, intact and managed.
// In agile mode ownership of the swap-store pages moves to the destination
// right before SWITCHOVER; that is the commit point.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/timeouts.h"
#include "tls/tls.h"
#include "migrate/migrating_vm.h"
#include "migrate/channel.h"
#include "migrate/migration_record.h"
#include "migrate/page_stream.h"
#include "migrate/postcopy_server.h"
#include "migrate/precopy.h"
#include "migrate/report.h"
#include "migrate/storage_copy.h"
#include "wire/migrate_proto.h"

namespace agile::migrate {

struct SendOptions {
  std::string to;                  // destination agiled HOST:PORT (its --listen)
  wire::MigMode mode = wire::MigMode::kAgile;
  uint64_t max_downtime_ms = 300;  // pre-copy stops iterating when the rest fits in this
  uint64_t bandwidth = 0;          // bytes/s cap on the page stream; 0 = unlimited
  uint32_t max_rounds = 30;
  uint32_t prepage = 8;            // post-copy: pages pushed after each faulted one
  // agile: when the guest dirties its working set about as fast as the link
  // moves it, switch over and post-copy the dirty remainder from here instead
  // of stopping the VM for it (cold pages still come from the swap store).
  // false: stop-and-copy the remainder however long it takes.
  bool postcopy_tail = true;
  // Mirror the VM's disks to the destination (storage_copy.h) instead of
  // expecting it to open the same images (shared storage).
  bool copy_storage = false;
  std::function<void(const nlohmann::json&)> progress;
  std::atomic<bool>* cancel = nullptr;
  // Post-copy recovery: polled while the migration is paused after a lost
  // link. A value asks for a reconnect now (`migrate --recover`): "" to the
  // same destination, else the new HOST:PORT it listens on. Null: only the
  // automatic attempts.
  std::function<std::optional<std::string>()> recover_requested;
  // Set: the connection is mutual TLS, and the destination's certificate
  // must name the host it says it is (the swap store's next owner).
  std::shared_ptr<const tls::Credentials> tls;
  Timeouts timeouts;  // docs/timeouts.md
};

class Sender {
 public:
  Sender(MigratingVm* vm, std::string host_id, SendOptions opts);
  ~Sender();
  // Returns the report; report.ok=false with report.error on failure.
  Report Run();
  // A post-copy this VM was the source of when agiled died (after the commit
  // point, `rec` from migration.record): re-dials the destination with
  // RESUME, then pushes what it still lacks, as after a lost link. The VM
  // stays paused and fenced here until that completes (or for good, when
  // the recovery window ends). opts.to is taken from the record.
  Report ResumeAfterRestart(const MigrationRecord& rec);

 private:
  // The report, and the VM's state here, once the migration ended with `s`.
  Report Conclude(const Status& s, bool outgoing);
  // What migration.record says of this migration at the commit point.
  MigrationRecord Record() const;
  Status Handshake();
  Status MirrorDisks();
  Status PrecopyRounds();
  Status StopAndCopy();
  Status SendLocations();
  Status DeviceState();
  Status Switchover();
  // SWITCHOVER_ACK said "not resumed": the VM never ran at the destination.
  // Takes the lease back (agile: the token in the ACK, confirmed by the
  // store), unfences and resumes the VM here; the migration still failed.
  // Without the lease back the VM stays paused and fenced.
  Status TakeBack(const wire::MigSwitchoverAck& ack, bool lease);
  // RESUME_ACK 3 (the destination never took SWITCHOVER): the "not
  // resumed" answer TakeBack needs; with the lease, asked for on that link
  // by sending the SWITCHOVER's token again.
  wire::MigSwitchoverAck LeaseBack(bool lease);
  // Dials `to` and sends RESUME for this migration: the RESUME_ACK, the
  // link in *ch (LOCATIONS follow a 0). A 3 is kept: never_ran_there_ and
  // the link in handback_ch_ instead.
  Result<wire::MigResumeAck> AskResume(const std::string& to, std::unique_ptr<Channel>* ch);
  // SWITCHOVER_ACK never came and there is nothing to recover (pre-copy,
  // agile without a tail): asks the destination (RESUME) whether it dropped
  // its copy before taking SWITCHOVER; if so, TakeBack. Otherwise fails
  // with `cause`, the VM paused and fenced.
  Status AskWhetherItRan(const Status& cause, bool lease);
  // TRANSFER of the swap-store namespace to the destination, asked again
  // while the store does not answer (a memd restarting) for up to half the
  // peer timeout: memd answers a repeated TRANSFER with the same token.
  Result<memd::OwnerToken> TransferLease();
  Status PostcopyPush();
  // Pushes what the destination still lacks, then DONE and its ACK.
  Status PushRest(const char* phase);
  // Post-copy recovery: the link broke after switchover with `cause`. The
  // VM stays paused here with every page; reconnects (with backoff, or at
  // once on `migrate --recover`) until one is accepted or the recovery
  // window ends (the error then says what each side keeps).
  Status Recover(const Status& cause, const char* phase);
  // One reconnect: dial, RESUME, RESUME_ACK and the pages still missing
  // there; on success the migration continues on the new connection.
  Status Reconnect(const std::string& to);
  // TCP (+TLS) connection to `to`; *cert: the peer certificate's name.
  Result<std::unique_ptr<Channel>> Dial(const std::string& to, std::string* cert);
  Status RunQemuMode();
  // DONE, then waits for DONE_ACK or the peer failing; true when it came.
  Result<bool> SendDone();
  void Abort(const std::string& why);
  // Takes the destination's frames: demand requests (served here, on this
  // thread), SWITCHOVER_ACK, DONE_ACK and ABORT.
  void ReaderLoop();
  Status CheckCancel() const;
  // True while a cancel may still stop the migration (before SWITCHOVER);
  // what the channel's and QEMU's waits check.
  bool Interrupted() const;
  // Waits on cv_ for pred, at most timeout_ms; with cancellable, a cancel
  // ends it early (sets cancelled_). False on timeout or cancel.
  template <typename Pred>
  bool WaitPeer(std::unique_lock<std::mutex>& l, int timeout_ms, bool cancellable, Pred pred);
  Status PeerStatus();
  // Reports where the migration stands (report.h's vocabulary) to the VM's
  // stat and opt_.progress; within a phase at most every 250 ms unless forced.
  void Progress(const char* phase, uint64_t dirty = 0, bool force = true);
  double Ms() const;
  // Records the time since the previous step under `step` in the report's
  // downtime breakdown (only once the VM is paused).
  void DowntimeStep(const char* step);

  MigratingVm* vm_;
  // Held for the whole migration: a `vm stop` meanwhile retires it (our
  // reads then fail) but its descriptors stay this VM's. Null for stock VMs.
  std::shared_ptr<vm::GuestMemory> mem_;
  offload::SwapStore* store_;  // null without a swap store
  std::string host_id_;
  SendOptions opt_;
  Report report_;
  std::unique_ptr<Channel> ch_;
  std::unique_ptr<PageStream> stream_;          // agile modes, after the handshake
  std::unique_ptr<PostcopyServer> postcopy_;    // agile modes, after the handshake
  std::string dest_host_;
  std::string dest_id_;  // the destination agiled's id (new owner in the swap store)
  uint64_t mig_id_lo_ = 0, mig_id_hi_ = 0;  // HELLO's random migration id (RESUME names it)
  uint64_t prior_bytes_ = 0;  // bytes sent on connections a recovery replaced
  bool completed_there_ = false;  // a RESUME learnt the destination has every page (DONE_ACK lost)
  nlohmann::json recovery_;   // while paused for recovery: what Progress shows of it
  uint16_t qemu_port_ = 0;
  uint16_t nbd_port_ = 0;               // --copy-storage: the destination's NBD exports
  std::unique_ptr<DiskMirror> mirror_;  // --copy-storage, from MirrorDisks until complete
  std::thread reader_;
  uint64_t t0_ns_ = 0;
  bool paused_ = false;       // we paused the VM (and resume it on abort)
  bool was_running_ = true;   // the VM ran when we stopped it: resume at the destination
  std::atomic<bool> switched_{false};  // SWITCHOVER sent (read by the demand-serving reader thread)
  // RESUME_ACK 3: the destination dropped its copy before SWITCHOVER
  // arrived (its words); the VM never ran there.
  std::string never_ran_there_;
  std::unique_ptr<Channel> handback_ch_;  // the RESUME link that answered 3 (LeaseBack)
  // TRANSFER's answer at the commit point: the destination's token, in
  // memory only (LeaseBack returns it to the destination that never got it).
  std::optional<memd::OwnerToken> transferred_;
  bool handed_back_ = false;  // the destination never ran it and gave it back (TakeBack)
  std::atomic<uint32_t> round_{0};     // the round pages are tagged with now
  double page_rate_ = 0;  // pages/s achieved by the last full pre-copy round
  mutable std::atomic<bool> cancelled_{false};  // a cancel was seen: the report says "cancelled"
  // The commit point was reached and the swap store could not confirm this
  // host kept the VM: Abort must not resume it here (docs/migration.md).
  bool fenced_ = false;
  bool lease_ = false;         // the swap-store namespace moves with the VM (agile, offloaded pages)
  bool record_saved_ = false;  // migration.record was written for this migration
  // For the progress's rates: the previous report, and the previous round's start.
  std::string last_phase_;
  uint64_t last_progress_ns_ = 0, last_progress_bytes_ = 0, last_round_ns_ = 0;
  double mbps_ = 0;
  PrecopyResult precopy_;  // the pre-copy's outcome: dirty remainder, tail, scanner
  std::vector<uint8_t> tail_bm_;  // the tail (precopy_.dirty) as a bitmap, when precopy_.tail

  std::mutex mu_;
  std::condition_variable cv_;
  bool got_ack_ = false, got_done_ack_ = false;
  Status peer_status_;  // ABORT from the destination, or the connection failing
  Status ack_status_;   // what SWITCHOVER_ACK said
  wire::MigSwitchoverAck ack_;  // the SWITCHOVER_ACK itself, once got_ack_
  uint64_t downtime_start_ns_ = 0;
  uint64_t step_ns_ = 0;  // end of the last downtime step recorded

};

}  // namespace agile::migrate
