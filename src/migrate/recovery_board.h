// Incoming post-copy migrations that may be taken over by a new connection
// after their link broke (post-copy recovery, docs/migration.md). A receiver
// whose pages still come from the source after switchover registers here;
// a connection whose first frame is RESUME (receiver.cc) offers itself, and
// the board hands it to the receiver only if it names the same migration
// (its random 128-bit id, from HELLO) from the same source host.
//
// It also remembers arrivals whose copy here was dropped before SWITCHOVER
// was taken (Dropped, NeverRan), so a source that lost the link across its
// commit point learns that the VM never ran here. With a folder
// (STATE_DIR/recovery) that memory outlives agiled: an arrival is recorded
// there at HELLO (Arriving), its record removed when SWITCHOVER is taken
// (Arrived), and one still there when agiled starts again was dropped by
// the crash or restart that came before SWITCHOVER (LoadDropped; soak seed
// 7, run 182 of session 10). docs/migration.md, "Post-copy recovery".
//
// One board per agiled, shared by every migration connection's thread.
// Thread-safe; Deliver is called with the board's lock held, so it must
// only hand the channel over (and wake whoever waits), never block. A null
// channel means: stop waiting (Close).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "base/status.h"
#include "migrate/channel.h"
#include "wire/migrate_proto.h"

namespace agile::migrate {

class RecoveryBoard {
 public:
  using Deliver = std::function<void(std::unique_ptr<Channel>)>;
  struct Entry {
    uint64_t id_lo = 0, id_hi = 0;  // HELLO's migration id
    std::string src_host;           // HELLO's source host (its certificate name under TLS)
    Deliver deliver;
    std::string store_vm_id;        // Dropped: HELLO's swap-store namespace in agile mode ("" otherwise)
    wire::MigMode mode = wire::MigMode::kPostcopy;  // Arriving, Dropped: HELLO's (kept in the record)
  };

  // dir: where arrivals and dropped copies are recorded, one file each per
  // VM (created when needed); "" keeps them in memory only (tests).
  explicit RecoveryBoard(std::string dir = "") : dir_(std::move(dir)) {}

  // AlreadyExists when the VM has a registered migration already;
  // Unavailable after Close.
  Status Register(const std::string& vm, Entry e);
  // agiled is stopping: every waiting migration's Deliver gets null (give up
  // waiting), and nothing registers any more.
  void Close();
  // Idempotent. After it returns, the entry's Deliver is never called again.
  void Unregister(const std::string& vm);
  // Unregisters a migration that completed (its DONE_ACK went out), and
  // remembers it (the last one per VM): a source whose link broke before the
  // ACK reached it asks again and learns it may let go.
  void Completed(const std::string& vm);
  // Remembers (the last one per VM) a migration whose copy here was dropped
  // before its SWITCHOVER was taken: the VM never ran here. A source that
  // sent SWITCHOVER and lost the link before any answer (soak seed 7, run
  // 112 of session 12: a link throttled across the commit point) is past
  // its commit point and cannot tell that from a copy that runs here; its
  // RESUME learns the truth (NeverRan) and it takes its VM back.
  // Recorded durably (with a folder) before it returns, and the VM's
  // Arriving record removed; an error says the memory will not outlive
  // this agiled (the in-memory part is kept all the same).
  Status Dropped(const std::string& vm, Entry e);
  // An arrival (HELLO accepted, the incoming VM started): recorded durably
  // before the source hears HELLO_ACK. Nothing in memory changes.
  Status Arriving(const std::string& vm, const Entry& e);
  // SWITCHOVER was taken: removed durably before the VM may run here (so a
  // record still there never names a VM that ran here). An error must stop
  // the switchover.
  Status Arrived(const std::string& vm);
  // At start, before agiled serves: every Dropped record is remembered
  // again, and every Arriving record left (its copy died with the previous
  // agiled before SWITCHOVER was taken) becomes a Dropped one, unless
  // `runs_here(vm)` says a VM of that name runs here (then it is only
  // removed, and logged). Damaged files are logged and left. Returns how
  // many dropped migrations are remembered.
  size_t LoadDropped(const std::function<bool(const std::string&)>& runs_here);
  // True when `r` names the migration Dropped remembers for its VM, from
  // the same source host (and, with a certificate, the host it names); then
  // *store_vm_id (if given) is the namespace Dropped was told of.
  bool NeverRan(const wire::MigResume& r, const std::string& peer_identity, std::string* store_vm_id = nullptr);
  // A RESUME from a peer (its certificate name; "" on a plain connection).
  // NotFound: no migration of that VM waits here (it completed, gave up, or
  // this agiled restarted). PermissionDenied: another migration id, another
  // source host, or a certificate naming another host. Ok: *ch went to the
  // receiver (moved from only then, so a refusal can still be answered on it).
  Status Offer(const wire::MigResume& r, const std::string& peer_identity, std::unique_ptr<Channel>* ch);

 private:
  const std::string dir_;
  std::mutex mu_;
  std::map<std::string, Entry> entries_;
  std::map<std::string, Entry> completed_;  // Deliver unused
  std::map<std::string, Entry> dropped_;    // Deliver unused
  bool closed_ = false;
};

}  // namespace agile::migrate
