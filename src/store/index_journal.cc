#include "store/index_journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/io.h"

namespace agile::memd {
namespace {

std::string DirOf(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

void AppendOwnerRecord(std::vector<uint8_t>* out, std::string_view owner, OwnerToken t) {
  AppendJournalRecord(out, JournalOwner{std::string(owner), t});
}

Result<std::vector<uint8_t>> ReadWholeFile(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return ErrnoStatus("fstat " + path);
  std::vector<uint8_t> data(static_cast<size_t>(st.st_size));
  if (!data.empty()) AGILE_RETURN_IF_ERROR(PreadFull(fd, data.data(), data.size(), 0).Annotate(path));
  return data;
}

// Applies one checksummed record body to the state.
Status ApplyRecord(const uint8_t* body, size_t len, JournalState* st, bool* have_owner) {
  AGILE_ASSIGN_OR_RETURN(JournalRecord r, DecodeJournalRecord(body, len));
  if (auto* o = std::get_if<JournalOwner>(&r)) {
    st->owner = std::move(o->host);
    st->token = o->token;
    *have_owner = true;
    return Status::Ok();
  }
  if (!*have_owner) return Corruption("journal has page records before its owner");
  if (const auto* s = std::get_if<JournalSet>(&r)) {
    st->pages[s->index] = SlotRef{s->slot, s->hash};
    st->lost.erase(s->index);
  } else if (const auto* d = std::get_if<JournalDel>(&r)) {
    st->pages.erase(d->index);
    st->lost.erase(d->index);
  } else {
    uint64_t i = std::get<JournalLost>(r).index;
    if (i == kLostUnknown) {
      st->lost_unknown = true;
    } else {
      st->pages.erase(i);
      st->lost.insert(i);
    }
  }
  return Status::Ok();
}

// The first offset at or after `from` where a whole, checksummed record
// starts; len when there is none.
size_t NextGoodRecord(const uint8_t* data, size_t len, size_t from) {
  for (size_t off = from; off + kJournalRecordHead < len; ++off) {
    const uint8_t* body = nullptr;
    size_t body_len = 0;
    if (JournalRecordAt(data + off, len - off, &body, &body_len) != 0 && DecodeJournalRecord(body, body_len).ok())
      return off;
  }
  return len;
}

}  // namespace

Status ReplayJournalBytes(const uint8_t* data, size_t len, JournalState* st, size_t* good_len, uint64_t* records) {
  size_t off = 0;
  AGILE_RETURN_IF_ERROR(DecodeJournalHeader(data, len, &st->vm, &off));
  *records = 0;
  bool have_owner = false;
  while (off < len) {
    const uint8_t* body = nullptr;
    size_t body_len = 0;
    size_t n = JournalRecordAt(data + off, len - off, &body, &body_len);
    if (n != 0) {
      AGILE_RETURN_IF_ERROR(ApplyRecord(body, body_len, st, &have_owner));
      off += n;
      ++*records;
      continue;
    }
    // A record that is cut short or fails its checksum. If its guard still
    // names the page, the page is lost (never an older version of it served)
    // and replay goes on after it, even at the very end: it may have been
    // acknowledged. If not, and no good record follows, it is the torn tail
    // of an append that never completed: cut. Else skip to the next good one.
    uint64_t index = 0;
    bool set = false;
    size_t size = 0;
    if (have_owner && JournalRecordKey(data + off, len - off, &index, &set, &size)) {
      st->pages.erase(index);
      if (set) st->lost.insert(index);
      else st->lost.erase(index);  // a lost DEL: the page is gone either way
      ++st->damaged_records;
      off += size;
      continue;
    }
    size_t next = NextGoodRecord(data, len, off + 1);
    if (next == len) break;
    st->lost_unknown = true;
    ++st->damaged_records;
    off = next;
  }
  if (!have_owner) return Corruption("journal names no owner");
  *good_len = off;
  return Status::Ok();
}

Result<IndexJournal> IndexJournal::Write(const std::string& path, const JournalState& state) {
  std::vector<uint8_t> bytes;
  AppendJournalHeader(&bytes, state.vm);
  AppendOwnerRecord(&bytes, state.owner, state.token);
  for (const auto& [index, ref] : state.pages) AppendJournalRecord(&bytes, JournalSet{index, ref.slot, ref.hash});
  // Losses outlive compaction until the page is stored or deleted again.
  for (uint64_t index : state.lost) AppendJournalRecord(&bytes, JournalLost{index});
  if (state.lost_unknown) AppendJournalRecord(&bytes, JournalLost{kLostUnknown});
  std::string tmp = path + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600));
  if (!fd) return ErrnoStatus("create " + tmp);
  AGILE_RETURN_IF_ERROR(WriteFull(fd.get(), bytes.data(), bytes.size()).Annotate(tmp));
  if (::fsync(fd.get()) != 0) return ErrnoStatus("fsync " + tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return ErrnoStatus("rename " + tmp + " to " + path);
  AGILE_RETURN_IF_ERROR(SyncDir(DirOf(path)));
  return IndexJournal(std::move(fd), bytes.size(), 1 + state.pages.size() + state.lost.size());
}

Result<std::pair<IndexJournal, JournalState>> IndexJournal::Replay(const std::string& path,
                                                                   uint64_t* dropped_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_APPEND | O_CLOEXEC));
  if (!fd) return ErrnoStatus("open " + path);
  AGILE_ASSIGN_OR_RETURN(std::vector<uint8_t> data, ReadWholeFile(fd.get(), path));

  JournalState st;
  size_t off = 0;
  uint64_t records = 0;
  AGILE_RETURN_IF_ERROR(ReplayJournalBytes(data.data(), data.size(), &st, &off, &records).Annotate(path));
  *dropped_bytes = data.size() - off;
  if (off < data.size() && ::ftruncate(fd.get(), static_cast<off_t>(off)) != 0)
    return ErrnoStatus("truncate torn tail of " + path);
  return std::make_pair(IndexJournal(std::move(fd), off, records), std::move(st));
}

Status IndexJournal::AppendOwner(std::string_view owner, OwnerToken token) {
  std::vector<uint8_t> bytes;
  AppendOwnerRecord(&bytes, owner, token);
  return AppendBytes(bytes, 1);
}

Status IndexJournal::Append(std::span<const std::pair<uint64_t, SlotRef>> sets, std::span<const uint64_t> deletes) {
  std::vector<uint8_t> bytes;
  bytes.reserve(sets.size() * 33 + deletes.size() * 17);
  for (const auto& [index, ref] : sets) AppendJournalRecord(&bytes, JournalSet{index, ref.slot, ref.hash});
  for (uint64_t index : deletes) AppendJournalRecord(&bytes, JournalDel{index});
  return AppendBytes(bytes, sets.size() + deletes.size());
}

Status IndexJournal::Stage(std::span<const std::pair<uint64_t, SlotRef>> sets, std::span<const uint64_t> deletes) {
  if (broken_) return Internal("journal is unusable after a failed append; restart agile-memd");
  const size_t before = staged_.size();
  for (const auto& [index, ref] : sets) AppendJournalRecord(&staged_, JournalSet{index, ref.slot, ref.hash});
  for (uint64_t index : deletes) AppendJournalRecord(&staged_, JournalDel{index});
  const uint64_t added = staged_.size() - before;
  if (size_ + unwritten_ + added > reserved_) {
    // Room past the end of the file (its size unchanged, so replay never
    // sees it), a MiB at a time.
    uint64_t want = size_ + unwritten_ + added + (1u << 20);
    if (::fallocate(fd_.get(), FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(want)) == 0) {
      reserved_ = want;
    } else if (errno != EOPNOTSUPP) {
      Status st = ErrnoStatus("reserve journal space");
      staged_.resize(before);
      return st;
    }  // else a file system without fallocate: no reservation, as an append would be
  }
  unwritten_ += added;
  records_ += sets.size() + deletes.size();
  return Status::Ok();
}

Status IndexJournal::AppendStaged(const std::vector<uint8_t>& records) {
  if (records.empty()) return Status::Ok();
  AGILE_RETURN_IF_ERROR(AppendBytes(records, 0));
  unwritten_ -= std::min<uint64_t>(unwritten_, records.size());
  return Status::Ok();
}

void IndexJournal::Restage(std::vector<uint8_t> records) {
  records.insert(records.end(), staged_.begin(), staged_.end());
  staged_ = std::move(records);
}

Status IndexJournal::AppendBytes(const std::vector<uint8_t>& bytes, uint64_t n_records) {
  if (broken_) return Internal("journal is unusable after a failed append; restart agile-memd");
  Status st = WriteFull(fd_.get(), bytes.data(), bytes.size());
  if (!st.ok()) {
    if (::ftruncate(fd_.get(), static_cast<off_t>(size_)) != 0) broken_ = true;
    return st.Annotate("append to journal");
  }
  size_ += bytes.size();
  records_ += n_records;
  return Status::Ok();
}

Status IndexJournal::Sync() {
  if (::fdatasync(fd_.get()) != 0) return ErrnoStatus("fdatasync journal");
  return Status::Ok();
}

}  // namespace agile::memd
