// The on-disk format of agile-memd's index journal (one file per VM
// namespace: who owns it, and which data-file slot holds each page). Encoding
// and decoding only; store/index_journal.h does the file I/O and decides what
// a bad record means (a torn tail is cut, anything else is an error).
//
//   file   := header record*
//   header := magic u32 "AGMJ" | version u16 = 2 | vm str | xxh32 u32 (of the bytes before it)
//   record := body_len u32 | xxh32(body) u32 | body          (1 <= body_len <= 512)
//   body   := 1 OWNER  host str | epoch u64 | secret u64 | secret_hi u64
//                        (secret_hi absent in records written before 128-bit
//                        secrets: it then reads as 0)
//           | 2 SET    index u64 | slot u64 | hash u64 | guard  (hash = JournalPageHash(page))
//           | 3 DEL    index u64 | guard
//           | 4 LOST   index u64   (the page was lost: see below)
//   guard  := index u64 | xxh32(type u8 | index u64) u32
//   (str = u32 length + bytes; all integers little-endian; xxh32 seed 0)
//
// The guard repeats the page index under a checksum of its own, so a record
// damaged by one bad byte still names its page (JournalRecordKey): replay
// skips it and reports exactly that page lost instead of serving an older
// version of it. LOST records carry such losses through compaction; index
// kLostUnknown means records were lost that named no readable page.
//
// Version 1 (no guards, no LOST) is still read; SET and DEL bodies without a
// guard are accepted in either version. Records use XXH32 (frames moved to
// XXH3 in their version 2; records are small and hashed once per append).
// Pure functions, no I/O: thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "base/status.h"
#include "wire/memd_proto.h"

namespace agile::memd {

constexpr uint32_t kJournalMagic = 0x4a4d4741;  // the bytes "AGMJ" on disk
constexpr uint16_t kJournalVersion = 2;
constexpr uint64_t kLostUnknown = ~uint64_t{0};
constexpr size_t kJournalRecordHead = 8;  // body_len u32 | xxh32 u32
constexpr uint32_t kMaxJournalRecordBody = 512;

struct JournalOwner {
  std::string host;
  OwnerToken token;
};
struct JournalSet {
  uint64_t index = 0, slot = 0, hash = 0;
};
struct JournalDel {
  uint64_t index = 0;
};
struct JournalLost {
  uint64_t index = 0;
};
using JournalRecord = std::variant<JournalOwner, JournalSet, JournalDel, JournalLost>;

void AppendJournalHeader(std::vector<uint8_t>* out, std::string_view vm);
// Parses the header at the start of a journal's bytes; on success *vm is the
// namespace's id and *header_len the bytes the header takes. kCorruption for
// a foreign magic, a short or bad header, kUnsupported for another version.
Status DecodeJournalHeader(const uint8_t* data, size_t len, std::string* vm, size_t* header_len);

void AppendJournalRecord(std::vector<uint8_t>* out, const JournalRecord& r);
// The record at p (len bytes available): 0 when they do not hold a whole
// record with a good checksum (a torn append), else the record's size with
// *body and *body_len set to its checksummed body.
size_t JournalRecordAt(const uint8_t* p, size_t len, const uint8_t** body, size_t* body_len);
// For a record at p that fails its checksum (JournalRecordAt returned 0):
// whether its guard still names its page. On true, *index is that page, *set
// whether it was a SET (else a DEL), and *size the record's size, so the
// reader can step over it.
bool JournalRecordKey(const uint8_t* p, size_t len, uint64_t* index, bool* set, size_t* size);
// Decodes a checksummed body: kCorruption for an unknown type or a body of
// the wrong size.
Result<JournalRecord> DecodeJournalRecord(const uint8_t* body, size_t len);

// The hash a SET record keeps of its page's kPageSize bytes (XXH3-64, seed 0).
uint64_t JournalPageHash(const uint8_t* page);

}  // namespace agile::memd
