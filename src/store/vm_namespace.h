// One VM's pages in the swap store: page index -> slot, the slots' bytes,
// the owner and its token, and (with a data directory) the journal that makes
// all of it survive a restart. Capacity and locking are the PageStore's job.
// Not thread-safe: the PageStore serialises calls per namespace.
//
// Write order for durability: a page always goes to a fresh slot, then its
// SET record is journaled (with defer_journal: staged, and appended by the
// group commit once the slot's data is synced); the slot it replaces is reused only after the next
// sync, so a journaled slot is never overwritten before the record that
// abandons it is durable. Every page carries a hash checked on read: a page
// torn by power loss is reported as corrupt, never returned wrong.
#pragma once

#include <deque>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/status.h"
#include "store/index_journal.h"
#include "wire/memd_proto.h"
#include "store/page_slots.h"

namespace agile::memd {

class VmNamespace {
 public:
  struct Options {
    std::string data_dir;          // empty: memory only
    bool sync_each_write = false;  // fdatasync before acknowledging every change
    // Group commit: journal records are staged and written by the commit
    // after the data they name is synced (IndexJournal::Stage). Not with
    // --fsync periodic, whose acknowledged changes must survive a kill.
    bool defer_journal = false;
  };

  static Result<std::unique_ptr<VmNamespace>> Create(const Options& opts, std::string vm, std::string owner,
                                                     OwnerToken token);
  // Rebuilds a namespace from <data_dir>/<vm>.index and .pages.
  static Result<std::unique_ptr<VmNamespace>> Recover(const Options& opts, const std::string& vm);

  // PermissionDenied, with a message saying why, unless `host` owns the
  // namespace and `token` is its current token.
  Status CheckOwner(std::string_view host, OwnerToken token) const;

  // Distinct indexes in `pages` that are not stored yet (what a PUT adds).
  uint64_t CountNew(std::span<const PageRef> pages) const;
  // Stores every page or none (on error nothing visible changes). Later
  // duplicates of an index win.
  Status Put(std::span<const PageRef> pages);
  // present[i] = 1 and the page packed into `pages` for each stored index.
  // Returns how many were present. kCorruption if stored bytes fail their hash.
  Result<uint32_t> Get(std::span<const uint64_t> indexes, uint8_t* present, uint8_t* pages);
  // GET without a copy, memory namespaces only (in_memory()): like Get, but
  // appends a pointer to each present page's slot to *pages. The caller
  // takes a Pin() first and Unpin()s once done with the pointers: until then
  // no slot they point to is reused, so a PUT or DELETE of the same page
  // meanwhile leaves the pinned bytes whole and unchanged.
  uint32_t Peek(std::span<const uint64_t> indexes, uint8_t* present, std::vector<const uint8_t*>* pages) const;
  bool in_memory() const { return !persistent(); }
  uint64_t Pin();
  void Unpin(uint64_t pin);
  // Returns how many of the indexes were stored (and are now gone).
  Result<uint64_t> Delete(std::span<const uint64_t> indexes);
  // Journals (and syncs) the new owner before switching to it.
  Status SetOwner(std::string owner, OwnerToken token);
  // Removes the namespace's files; the object must not be used afterwards.
  Status Destroy();
  // Makes every acknowledged change durable and frees the slots it retired.
  Status Sync();

  // A group commit in four steps, so the fdatasyncs run without the
  // namespace's lock and PUTs go on meanwhile: PrepareSync (locked) takes
  // duplicates of the data and journal descriptors, the staged journal
  // records and the slots retired so far; the committer syncs the data;
  // WriteJournal (locked) appends the records taken, which now name durable
  // data only; the committer syncs the journal; FinishSync (locked) frees
  // those slots, or on failure puts records and slots back and marks the
  // namespace dirty again.
  struct SyncPlan {
    UniqueFd data, journal;
    std::vector<uint64_t> retired;
    std::vector<uint8_t> records;
    uint64_t journal_gen = 0;
  };
  Result<SyncPlan> PrepareSync();
  Status WriteJournal(SyncPlan* plan);
  void FinishSync(SyncPlan plan, bool ok);

  // Pages lost to a damaged journal and not stored again since (RECLAIM).
  const std::set<uint64_t>& lost() const { return state_.lost; }
  bool lost_unknown() const { return state_.lost_unknown; }

  const std::string& vm() const { return state_.vm; }
  const std::string& owner() const { return state_.owner; }
  OwnerToken token() const { return state_.token; }
  uint64_t pages() const { return state_.pages.size(); }
  bool dirty() const { return dirty_; }

 private:
  VmNamespace(Options opts, JournalState state, std::unique_ptr<PageSlots> slots,
              std::optional<IndexJournal> journal);
  bool persistent() const { return journal_.has_value(); }
  std::string PathFor(const char* ext) const;
  uint64_t AllocateSlot();
  void RetireSlot(uint64_t slot);
  void MaybeCompact(bool now = false);

 public:
  // Rewrites the journal now, whatever its length (tests: a compaction at a
  // chosen moment of a group commit).
  void CompactJournalNowForTest() { MaybeCompact(/*now=*/true); }

 private:

  Options opts_;
  JournalState state_;
  std::unique_ptr<PageSlots> slots_;
  std::optional<IndexJournal> journal_;
  std::vector<uint64_t> free_;     // reusable now; popped from the back
  std::vector<uint64_t> retired_;  // reusable after the next sync
  uint64_t next_slot_ = 0;         // slots at or above are unused
  uint64_t journal_gen_ = 0;       // bumped when compaction replaces the journal
  // Memory only: slots retired while a Peek's pointers were out, with the
  // pin count when retired; reusable once every pin taken up to then is gone.
  std::deque<std::pair<uint64_t, uint64_t>> held_;
  std::set<uint64_t> pins_;  // outstanding pins
  uint64_t pin_seq_ = 0;     // the last pin handed out
  bool dirty_ = false;
};

}  // namespace agile::memd
