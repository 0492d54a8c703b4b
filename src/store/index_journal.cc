#include "store/index_journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "base/io.h"
#include "wire/codec.h"

namespace agile::memd {
namespace {

constexpr uint32_t kJournalMagic = 0x4a4d4741;  // "AGMJ"
constexpr uint16_t kJournalVersion = 1;
constexpr uint32_t kMaxRecordBody = 512;

enum RecordType : uint8_t { kOwner = 1, kSet = 2, kDel = 3 };

std::string DirOf(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

// Appends one record: its body is encoded by `body` after the 8-byte prefix.
template <typename F>
void AppendRecord(std::vector<uint8_t>* out, F&& body) {
  size_t start = out->size();
  out->resize(start + 8);
  wire::Encoder e(out);
  body(e);
  size_t len = out->size() - start - 8;
  uint32_t sum = XXH32(out->data() + start + 8, len, 0);
  std::vector<uint8_t> prefix;
  wire::Encoder p(&prefix);
  p.U32(static_cast<uint32_t>(len));
  p.U32(sum);
  std::copy(prefix.begin(), prefix.end(), out->begin() + static_cast<ptrdiff_t>(start));
}

void AppendOwnerRecord(std::vector<uint8_t>* out, std::string_view owner, OwnerToken t) {
  AppendRecord(out, [&](wire::Encoder& e) {
    e.U8(kOwner);
    e.Str(owner);
    e.U64(t.epoch);
    e.U64(t.secret);
  });
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
  wire::Decoder d(body, len);
  uint8_t type = d.U8();
  switch (type) {
    case kOwner:
      st->owner = d.Str(kMaxIdLen);
      st->token.epoch = d.U64();
      st->token.secret = d.U64();
      *have_owner = true;
      break;
    case kSet: {
      uint64_t index = d.U64();
      SlotRef ref;
      ref.slot = d.U64();
      ref.hash = d.U64();
      st->pages[index] = ref;
      break;
    }
    case kDel:
      st->pages.erase(d.U64());
      break;
    default:
      return Corruption("unknown journal record type " + std::to_string(type));
  }
  if (!d.AtEnd()) return Corruption("malformed journal record of type " + std::to_string(type));
  if (type != kOwner && !*have_owner) return Corruption("journal has page records before its owner");
  return Status::Ok();
}

}  // namespace

Status SyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return ErrnoStatus("open directory " + dir);
  if (::fsync(fd.get()) != 0) return ErrnoStatus("fsync directory " + dir);
  return Status::Ok();
}

Result<IndexJournal> IndexJournal::Write(const std::string& path, const JournalState& state) {
  std::vector<uint8_t> bytes;
  wire::Encoder e(&bytes);
  e.U32(kJournalMagic);
  e.U16(kJournalVersion);
  e.Str(state.vm);
  e.U32(XXH32(bytes.data(), bytes.size(), 0));
  AppendOwnerRecord(&bytes, state.owner, state.token);
  for (const auto& [index, ref] : state.pages) {
    AppendRecord(&bytes, [&](wire::Encoder& r) {
      r.U8(kSet);
      r.U64(index);
      r.U64(ref.slot);
      r.U64(ref.hash);
    });
  }
  std::string tmp = path + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600));
  if (!fd) return ErrnoStatus("create " + tmp);
  AGILE_RETURN_IF_ERROR(WriteFull(fd.get(), bytes.data(), bytes.size()).Annotate(tmp));
  if (::fsync(fd.get()) != 0) return ErrnoStatus("fsync " + tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return ErrnoStatus("rename " + tmp + " to " + path);
  AGILE_RETURN_IF_ERROR(SyncDir(DirOf(path)));
  return IndexJournal(std::move(fd), bytes.size(), 1 + state.pages.size());
}

Result<std::pair<IndexJournal, JournalState>> IndexJournal::Replay(const std::string& path,
                                                                   uint64_t* dropped_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_APPEND | O_CLOEXEC));
  if (!fd) return ErrnoStatus("open " + path);
  AGILE_ASSIGN_OR_RETURN(std::vector<uint8_t> data, ReadWholeFile(fd.get(), path));

  wire::Decoder d(data.data(), data.size());
  JournalState st;
  uint32_t magic = d.U32();
  uint16_t version = d.U16();
  st.vm = d.Str(kMaxIdLen);
  size_t head_len = data.size() - d.remaining();
  uint32_t head_sum = d.U32();
  if (!d.ok() || magic != kJournalMagic) return Corruption(path + ": not an agile-memd journal (bad header)");
  if (version != kJournalVersion)
    return Unsupported(path + ": journal version " + std::to_string(version) + " not supported");
  if (head_sum != XXH32(data.data(), head_len, 0)) return Corruption(path + ": journal header checksum mismatch");

  size_t off = data.size() - d.remaining();
  uint64_t records = 0;
  bool have_owner = false;
  while (off < data.size()) {
    // A record that is cut short or fails its checksum ends the journal: it
    // is the torn tail of an append that never completed.
    if (data.size() - off < 8) break;
    wire::Decoder p(data.data() + off, 8);
    uint32_t len = p.U32();
    uint32_t sum = p.U32();
    if (len == 0 || len > kMaxRecordBody || data.size() - off - 8 < len) break;
    const uint8_t* body = data.data() + off + 8;
    if (XXH32(body, len, 0) != sum) break;
    AGILE_RETURN_IF_ERROR(ApplyRecord(body, len, &st, &have_owner).Annotate(path));
    off += 8 + len;
    ++records;
  }
  if (!have_owner) return Corruption(path + ": journal names no owner");
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
  for (const auto& [index, ref] : sets) {
    AppendRecord(&bytes, [&](wire::Encoder& e) {
      e.U8(kSet);
      e.U64(index);
      e.U64(ref.slot);
      e.U64(ref.hash);
    });
  }
  for (uint64_t index : deletes) {
    AppendRecord(&bytes, [&](wire::Encoder& e) {
      e.U8(kDel);
      e.U64(index);
    });
  }
  return AppendBytes(bytes, sets.size() + deletes.size());
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
