// The durable index of one VM namespace: an append-only journal saying who
// owns the namespace (host, token) and which data-file slot holds each page.
// Replaying it rebuilds the namespace after a restart; a torn tail (crash in
// the middle of an append) is cut off. A damaged record before the end is
// skipped and the rest kept: the page it named is dropped and listed as lost
// (a record that names no readable page sets lost_unknown). A bad header, a
// record that passes its checksum but does not decode, or no owner is an error.
// The file's format (header, records, checksums) is wire/journal_format.h;
// this class does the file I/O and the replay policy.
//
// Not thread-safe: owned and locked by one namespace.
#pragma once

#include <cstdint>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/fd.h"
#include "base/status.h"
#include "wire/journal_format.h"
#include "wire/memd_proto.h"

namespace agile::memd {

// Where a page lives and the hash its bytes must have there.
struct SlotRef {
  uint64_t slot = 0;
  uint64_t hash = 0;
};

struct JournalState {
  std::string vm;
  std::string owner;
  OwnerToken token;
  std::unordered_map<uint64_t, SlotRef> pages;
  // Pages whose last record was lost (damaged journal) and that were not
  // stored or deleted again since: the store no longer has them, and their
  // owner must be told (RECLAIM). Journaled as LOST records by compaction.
  std::set<uint64_t> lost;
  bool lost_unknown = false;     // damaged records that named no page
  uint64_t damaged_records = 0;  // skipped by the last replay (for logs)
};

class IndexJournal {
 public:
  // Writes a fresh journal holding `state` (header, OWNER, one SET per page)
  // to path.tmp, syncs it, renames it over path and syncs the directory: used
  // to create a namespace and to compact a long journal.
  static Result<IndexJournal> Write(const std::string& path, const JournalState& state);
  // Replays path. dropped_bytes receives the size of a torn tail that was cut.
  static Result<std::pair<IndexJournal, JournalState>> Replay(const std::string& path, uint64_t* dropped_bytes);

  Status AppendOwner(std::string_view owner, OwnerToken token);
  // SET records for `sets`, then DEL records for `deletes`, in one write. On
  // failure the journal is cut back to where it was; if even that fails every
  // later append fails too, so a half record is never followed by more.
  Status Append(std::span<const std::pair<uint64_t, SlotRef>> sets, std::span<const uint64_t> deletes);
  // Group commit: records are staged in memory (with room reserved for them
  // in the file, so appending them later cannot run out of disk) and
  // appended only once the page data they name is durable, so a journal
  // sync never makes durable a record whose page may not be. Stage fails
  // with kNoSpace (nothing staged) when the room cannot be reserved.
  Status Stage(std::span<const std::pair<uint64_t, SlotRef>> sets, std::span<const uint64_t> deletes);
  // Takes the staged records (encoded) for the committer.
  std::vector<uint8_t> TakeStaged() { return std::exchange(staged_, {}); }
  // Appends records taken by TakeStaged (in the order taken); on failure
  // the journal is cut back as in Append.
  Status AppendStaged(const std::vector<uint8_t>& records);
  // Puts records taken by TakeStaged back, before anything staged since
  // (their commit failed).
  void Restage(std::vector<uint8_t> records);
  Status Sync();
  int fd() const { return fd_.get(); }
  // Records written since the journal was last (re)written: drives compaction.
  uint64_t records() const { return records_; }

 private:
  IndexJournal(UniqueFd fd, uint64_t size, uint64_t records)
      : fd_(std::move(fd)), size_(size), records_(records), reserved_(size) {}
  Status AppendBytes(const std::vector<uint8_t>& bytes, uint64_t n_records);

  UniqueFd fd_;
  uint64_t size_ = 0;
  uint64_t records_ = 0;
  bool broken_ = false;
  std::vector<uint8_t> staged_;
  uint64_t unwritten_ = 0;  // bytes staged or taken, not yet appended
  uint64_t reserved_ = 0;   // the file has blocks allocated up to here
};

// The replay itself, on a journal's bytes (no I/O; fuzzed): fills *st,
// *good_len with the bytes up to any torn tail and *records with the records
// applied. kCorruption for a bad header, a bad record or no owner.
Status ReplayJournalBytes(const uint8_t* data, size_t len, JournalState* st, size_t* good_len, uint64_t* records);

}  // namespace agile::memd
