// The swap store's core: per-VM page namespaces, each owned by one host and
// guarded by its owner token; one capacity for all of them; optionally
// persistent under a data directory.
//
// Guarantees with a data directory (durable_acks, the default): a PUT or
// DELETE is acknowledged only once durable. Callers make a change, note
// LastWrite(), and hold the reply until DurableThrough() reaches that ticket
// (RequestCommit + a commit listener, without blocking: the server) or
// WaitDurable() returns (blocking). A committer thread runs the group
// commits back to back: one fdatasync of every dirty namespace's data, then
// of its journal, covering every change made by any session before the
// commit started, while sessions go on writing the next one's changes.
// After a failed fdatasync nothing more is ever acknowledged (Linux reports
// a writeback error once and forgets which pages it lost): restart memd.
// Without durable_acks (--fsync periodic) a change is in the page cache
// before the reply (survives agile-memd being killed) and on disk after the
// next periodic sync. CLAIM/TRANSFER/RELEASE are always synced before the
// reply. A page whose journal record is later found damaged is dropped and
// listed as lost (Reclaim), never returned with wrong or older bytes.
//
// Thread-safe: every method may be called from any thread at any time.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "base/fd.h"
#include "base/status.h"
#include "wire/memd_proto.h"

namespace agile::memd {

class VmNamespace;
class PinnedPages;

struct StoreStats {
  uint64_t pages = 0;
  uint64_t capacity_pages = 0;
  bool persistent = false;
  std::vector<VmStat> vms;  // sorted by vm id
};

class PageStore {
 public:
  struct Options {
    uint64_t capacity_bytes = 1ull << 30;  // rounded down to whole pages
    std::string data_dir;                  // empty: memory only
    bool sync_each_write = false;  // fdatasync inside every change (slow; for comparison)
    bool durable_acks = true;      // group commit: WaitDurable before replying
    std::chrono::milliseconds sync_interval{1000};  // periodic sync (with durable_acks: when nothing asks)
    // Test hook, called by the committer before each group commit's
    // fdatasyncs (outside every lock); an error fails that commit as a
    // failed fdatasync would.
    std::function<Status()> test_before_commit;
  };

  // With a data directory: creates it if missing, locks it against a second
  // agile-memd, and recovers every namespace in it.
  static Result<std::unique_ptr<PageStore>> Open(const Options& opts);
  // Stops the sync thread and syncs everything.
  ~PageStore();
  PageStore(const PageStore&) = delete;
  PageStore& operator=(const PageStore&) = delete;

  // Creates the namespace `vm`, owned by `host`, and returns its token.
  // kAlreadyExists if it exists (whoever owns it).
  Result<OwnerToken> Claim(std::string_view host, std::string_view vm);
  // Stores all pages or none: kResourceExhausted when the new pages do not fit.
  Result<uint64_t> Put(std::string_view host, std::string_view vm, OwnerToken token, std::span<const PageRef> pages);
  // See VmNamespace::Get; `pages` has room for indexes.size() pages.
  Result<uint32_t> Get(std::string_view host, std::string_view vm, OwnerToken token,
                       std::span<const uint64_t> indexes, uint8_t* present, uint8_t* pages);
  // GET for a reply sent straight from the store: sets present[i] like Get
  // and returns the present pages, packed in request order, readable and
  // unchanged (a concurrent PUT or DELETE of them notwithstanding) until the
  // PinnedPages is destroyed. Memory namespaces hand out their slots; a data
  // directory's pages are read (and their hashes checked) into a buffer.
  Result<PinnedPages> GetPinned(std::string_view host, std::string_view vm, OwnerToken token,
                                std::span<const uint64_t> indexes, uint8_t* present);
  Result<uint64_t> Delete(std::string_view host, std::string_view vm, OwnerToken token,
                          std::span<const uint64_t> indexes);
  // Hands the namespace to new_host: the old token stops working at once and
  // the returned one (next epoch, fresh secret) is the only valid one.
  Result<OwnerToken> Transfer(std::string_view host, std::string_view vm, OwnerToken token,
                              std::string_view new_host);
  // Drops the namespace and all its pages; returns how many were freed.
  Result<uint64_t> Release(std::string_view host, std::string_view vm, OwnerToken token);

  // An owner re-attaching (after its own or agile-memd's restart): checks
  // the token like any request and answers which pages the store lost.
  Result<ReclaimReply> Reclaim(std::string_view host, std::string_view vm, OwnerToken token);

  // The sequence number of the last change made (PUT, DELETE); 0 if none.
  uint64_t LastWrite() const { return written_seq_.load(); }
  // Every change up to the returned ticket is on disk (UINT64_MAX without
  // a data directory or without durable_acks). *failed (if given) receives
  // the error of a failed group commit: no change after the returned ticket
  // may ever be acknowledged then.
  uint64_t DurableThrough(Status* failed = nullptr) const;
  // Asks the committer for a commit covering `ticket`; returns at once.
  void RequestCommit(uint64_t ticket);
  // `efd` (an eventfd) is written after every group commit, good or failed,
  // until removed; the caller then asks DurableThrough again. Remove before
  // closing it.
  void AddCommitListener(int efd);
  void RemoveCommitListener(int efd);
  // Returns once every change up to `ticket` is on disk (RequestCommit, then
  // waits). Ok at once without a data directory or without durable_acks.
  // An error means the changes may not be durable: the caller must not
  // acknowledge them.
  Status WaitDurable(uint64_t ticket);
  // Group commits done (for the benchmark and stats).
  uint64_t commits() const { return commits_.load(); }

  // Makes every change so far durable (with group commit: through the
  // committer) and frees the slots retired by overwrites.
  Status Sync();
  StoreStats Stats() const;

 private:
  struct Entry;
  friend class PinnedPages;
  explicit PageStore(Options opts);
  Status Recover();
  // Finds vm and locks it after checking ownership; the returned lock is held.
  Result<std::pair<std::shared_ptr<Entry>, std::unique_lock<std::mutex>>> Owned(std::string_view host,
                                                                                std::string_view vm,
                                                                                OwnerToken token);
  bool Reserve(uint64_t pages);
  void Unreserve(uint64_t pages) { used_pages_.fetch_sub(pages); }
  void SyncLoop(std::stop_token stop);
  // The committer thread (group_commit() only): commits whenever asked, and
  // every sync_interval if something is dirty (frees retired slots).
  void CommitLoop(std::stop_token stop);
  // One group commit over every dirty namespace.
  Status SyncAllUnlocked();
  bool group_commit() const { return !opts_.data_dir.empty() && opts_.durable_acks && !opts_.sync_each_write; }

  const Options opts_;
  const uint64_t capacity_pages_;
  std::atomic<uint64_t> used_pages_{0};
  UniqueFd dir_lock_;

  mutable std::shared_mutex map_mu_;  // guards namespaces_ (not the namespaces)
  std::map<std::string, std::shared_ptr<Entry>, std::less<>> namespaces_;

  std::atomic<uint64_t> written_seq_{0};
  mutable std::mutex commit_mu_;  // guards the four below
  std::condition_variable_any commit_cv_;  // a commit asked for or done
  uint64_t requested_seq_ = 0;    // the highest ticket a commit was asked for
  uint64_t durable_seq_ = 0;      // every change up to here is on disk
  Status commit_failed_;          // sticky: set by the first failed commit
  std::vector<int> listeners_;    // eventfds told after each commit
  std::atomic<uint64_t> commits_{0};

  std::mutex sync_mu_;
  std::condition_variable_any sync_cv_;
  std::jthread sync_thread_;
  std::jthread commit_thread_;
};

// The pages of one GET (PageStore::GetPinned), kept from reuse until this is
// destroyed. Move-only. May be destroyed on any thread, also after the
// namespace was released (its slots live until then).
class PinnedPages {
 public:
  PinnedPages() = default;
  PinnedPages(PinnedPages&& o) noexcept { *this = std::move(o); }
  PinnedPages& operator=(PinnedPages&& o) noexcept;
  ~PinnedPages() { Release(); }

  std::span<const uint8_t* const> pages() const { return pages_; }

 private:
  friend class PageStore;
  void Release();

  std::shared_ptr<PageStore::Entry> entry_;  // set while a pin is held
  uint64_t pin_ = 0;
  std::vector<const uint8_t*> pages_;
  std::unique_ptr<uint8_t[]> copy_;  // a data directory's pages, read out
};

}  // namespace agile::memd
