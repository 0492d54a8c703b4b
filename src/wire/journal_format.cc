#include "wire/journal_format.h"

#include <xxhash.h>
#define XXH_DISPATCH_DISABLE_REPLACE
#include <xxh_x86dispatch.h>

#include "wire/codec.h"

namespace agile::memd {
namespace {

using wire::Decoder;
using wire::Encoder;

enum RecordType : uint8_t { kOwner = 1, kSet = 2, kDel = 3, kLost = 4 };

// Body sizes of guarded SET and DEL records, and of the guard.
constexpr size_t kGuardSize = 12;
constexpr size_t kSetBody = 1 + 24 + kGuardSize;
constexpr size_t kDelBody = 1 + 8 + kGuardSize;

uint32_t GuardSum(uint8_t type, uint64_t index) {
  std::vector<uint8_t> b;
  Encoder e(&b);
  e.U8(type);
  e.U64(index);
  return XXH32(b.data(), b.size(), 0);
}

void AppendGuard(Encoder& e, uint8_t type, uint64_t index) {
  e.U64(index);
  e.U32(GuardSum(type, index));
}

uint32_t Xxh32(const uint8_t* p, size_t n) { return XXH32(p, n, 0); }

}  // namespace

void AppendJournalHeader(std::vector<uint8_t>* out, std::string_view vm) {
  size_t start = out->size();
  Encoder e(out);
  e.U32(kJournalMagic);
  e.U16(kJournalVersion);
  e.Str(vm);
  e.U32(Xxh32(out->data() + start, out->size() - start));
}

Status DecodeJournalHeader(const uint8_t* data, size_t len, std::string* vm, size_t* header_len) {
  Decoder d(data, len);
  uint32_t magic = d.U32();
  uint16_t version = d.U16();
  *vm = d.Str(kMaxIdLen);
  size_t summed = len - d.remaining();
  uint32_t sum = d.U32();
  if (!d.ok() || magic != kJournalMagic) return Corruption("not an agile-memd journal (bad header)");
  if (version != kJournalVersion && version != 1) return Unsupported("journal version " + std::to_string(version) + " not supported");
  if (sum != Xxh32(data, summed)) return Corruption("journal header checksum mismatch");
  *header_len = len - d.remaining();
  return Status::Ok();
}

void AppendJournalRecord(std::vector<uint8_t>* out, const JournalRecord& r) {
  Encoder e(out);
  size_t head = e.Skip(kJournalRecordHead);
  if (const auto* o = std::get_if<JournalOwner>(&r)) {
    e.U8(kOwner);
    e.Str(o->host);
    e.U64(o->token.epoch);
    e.U64(o->token.secret);
    e.U64(o->token.secret_hi);
  } else if (const auto* s = std::get_if<JournalSet>(&r)) {
    e.U8(kSet);
    e.U64(s->index);
    e.U64(s->slot);
    e.U64(s->hash);
    AppendGuard(e, kSet, s->index);
  } else if (const auto* d = std::get_if<JournalDel>(&r)) {
    e.U8(kDel);
    e.U64(d->index);
    AppendGuard(e, kDel, d->index);
  } else {
    e.U8(kLost);
    e.U64(std::get<JournalLost>(r).index);
  }
  size_t body = head + kJournalRecordHead;
  size_t len = out->size() - body;
  e.PatchU32(head, static_cast<uint32_t>(len));
  e.PatchU32(head + 4, Xxh32(out->data() + body, len));
}

size_t JournalRecordAt(const uint8_t* p, size_t len, const uint8_t** body, size_t* body_len) {
  if (len < kJournalRecordHead) return 0;
  Decoder d(p, kJournalRecordHead);
  uint32_t n = d.U32();
  uint32_t sum = d.U32();
  if (n == 0 || n > kMaxJournalRecordBody || len - kJournalRecordHead < n) return 0;
  if (Xxh32(p + kJournalRecordHead, n) != sum) return 0;
  *body = p + kJournalRecordHead;
  *body_len = n;
  return kJournalRecordHead + n;
}

bool JournalRecordKey(const uint8_t* p, size_t len, uint64_t* index, bool* set, size_t* size) {
  if (len < kJournalRecordHead + 1) return false;
  Decoder head(p, 4);
  uint32_t body_len = head.U32();
  const uint8_t* body = p + kJournalRecordHead;
  // One bad byte spoils at most one of: the length, the checksum, the type
  // and index up front, the guard. Try both guarded shapes.
  for (auto [type, n] : {std::pair<uint8_t, size_t>{kSet, kSetBody}, {kDel, kDelBody}}) {
    if (len < kJournalRecordHead + n) continue;
    Decoder front(body, 9);
    uint8_t t = front.U8();
    uint64_t first = front.U64();
    Decoder guard(body + n - kGuardSize, kGuardSize);
    uint64_t second = guard.U64();
    uint32_t sum = guard.U32();
    uint64_t found = 0;
    if (t == type && sum == GuardSum(type, first)) found = first;          // damage elsewhere
    else if (sum == GuardSum(type, second)) found = second;                // damage in type or index
    else if (t == type && body_len == n && first == second) found = first;  // damage in the guard's sum
    else continue;
    *index = found;
    *set = type == kSet;
    *size = kJournalRecordHead + n;
    return true;
  }
  return false;
}

Result<JournalRecord> DecodeJournalRecord(const uint8_t* body, size_t len) {
  Decoder d(body, len);
  uint8_t type = d.U8();
  JournalRecord r;
  switch (type) {
    case kOwner: {
      JournalOwner o;
      o.host = d.Str(kMaxIdLen);
      o.token.epoch = d.U64();
      o.token.secret = d.U64();
      if (d.remaining() > 0) o.token.secret_hi = d.U64();
      r = std::move(o);
      break;
    }
    case kSet: {
      JournalSet s;
      s.index = d.U64();
      s.slot = d.U64();
      s.hash = d.U64();
      // Guarded (version 2) or not (version 1); a guard that disagrees is damage.
      if (d.remaining() == kGuardSize && (d.U64() != s.index || d.U32() != GuardSum(kSet, s.index)))
        return Corruption("journal SET record's guard does not match its index");
      r = s;
      break;
    }
    case kDel: {
      JournalDel del{d.U64()};
      if (d.remaining() == kGuardSize && (d.U64() != del.index || d.U32() != GuardSum(kDel, del.index)))
        return Corruption("journal DEL record's guard does not match its index");
      r = del;
      break;
    }
    case kLost:
      r = JournalLost{d.U64()};
      break;
    default:
      return Corruption("unknown journal record type " + std::to_string(type));
  }
  AGILE_RETURN_IF_ERROR(d.Finish("malformed journal record of type " + std::to_string(type)));
  return r;
}

uint64_t JournalPageHash(const uint8_t* page) { return XXH3_64bits_dispatch(page, kPageSize); }

}  // namespace agile::memd
