#include "wire/journal_format.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include "wire/codec.h"

namespace agile::memd {
namespace {

std::vector<uint8_t> Record(const JournalRecord& r) {
  std::vector<uint8_t> b;
  AppendJournalRecord(&b, r);
  return b;
}

// Decodes the one record in b; fails the test if it does not parse.
JournalRecord Parse(const std::vector<uint8_t>& b) {
  const uint8_t* body = nullptr;
  size_t len = 0;
  EXPECT_EQ(JournalRecordAt(b.data(), b.size(), &body, &len), b.size());
  auto r = DecodeJournalRecord(body, len);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : JournalRecord{};
}

// Re-checksums a record whose body was edited, as leveldb's log_test does, so
// the body decoder (not the checksum) must catch the damage.
void FixChecksum(std::vector<uint8_t>* b) {
  std::vector<uint8_t> head;
  wire::Encoder e(&head);
  e.U32(static_cast<uint32_t>(b->size() - kJournalRecordHead));
  e.U32(XXH32(b->data() + kJournalRecordHead, b->size() - kJournalRecordHead, 0));
  std::copy(head.begin(), head.end(), b->begin());
}

TEST(JournalFormat, HeaderRoundTrip) {
  std::vector<uint8_t> b;
  AppendJournalHeader(&b, "vm-1");
  b.push_back(0xaa);  // the first record's byte: not part of the header
  std::string vm;
  size_t len = 0;
  ASSERT_TRUE(DecodeJournalHeader(b.data(), b.size(), &vm, &len).ok());
  EXPECT_EQ(vm, "vm-1");
  EXPECT_EQ(len, b.size() - 1);
  EXPECT_EQ(len, 4u + 2 + 4 + 4 + 4);
}

TEST(JournalFormat, HeaderRejectsEveryFlippedByteAndTruncation) {
  std::vector<uint8_t> good;
  AppendJournalHeader(&good, "vm-1");
  std::string vm;
  size_t len = 0;
  for (size_t i = 0; i < good.size(); ++i) {
    auto b = good;
    b[i] ^= 0x20;
    EXPECT_FALSE(DecodeJournalHeader(b.data(), b.size(), &vm, &len).ok()) << "byte " << i;
  }
  for (size_t n = 0; n < good.size(); ++n)
    EXPECT_EQ(DecodeJournalHeader(good.data(), n, &vm, &len).code(), Code::kCorruption) << n << " bytes";
}

TEST(JournalFormat, HeaderRejectsOtherVersion) {
  std::vector<uint8_t> b;
  wire::Encoder e(&b);
  e.U32(kJournalMagic);
  e.U16(kJournalVersion + 1);
  e.Str("vm");
  e.U32(XXH32(b.data(), b.size(), 0));
  std::string vm;
  size_t len = 0;
  EXPECT_EQ(DecodeJournalHeader(b.data(), b.size(), &vm, &len).code(), Code::kUnsupported);
}

TEST(JournalFormat, RecordsRoundTrip) {
  auto o = std::get<JournalOwner>(Parse(Record(JournalOwner{"host-a", OwnerToken{3, 0x1234}})));
  EXPECT_EQ(o.host, "host-a");
  EXPECT_EQ(o.token, (OwnerToken{3, 0x1234}));
  auto s = std::get<JournalSet>(Parse(Record(JournalSet{7, 9, 0xabcdef})));
  EXPECT_EQ(s.index, 7u);
  EXPECT_EQ(s.slot, 9u);
  EXPECT_EQ(s.hash, 0xabcdefu);
  EXPECT_EQ(std::get<JournalDel>(Parse(Record(JournalDel{42}))).index, 42u);
  EXPECT_EQ(std::get<JournalLost>(Parse(Record(JournalLost{11}))).index, 11u);
  // Sizes the journal's compaction test relies on: SET 45 bytes, DEL 29 (with guards).
  EXPECT_EQ(Record(JournalSet{}).size(), 45u);
  EXPECT_EQ(Record(JournalDel{}).size(), 29u);
}

// One bad byte anywhere in a SET or DEL record: the record fails its
// checksum, but its guard still names the page, type and size.
TEST(JournalFormat, EveryDamagedByteStillNamesThePage) {
  for (bool is_set : {true, false}) {
    auto good = is_set ? Record(JournalSet{0x1122334455667788, 9, 0xabcdef}) : Record(JournalDel{0x1122334455667788});
    for (size_t i = 0; i < good.size(); ++i)
      for (uint8_t flip : {0x01, 0x80, 0xff}) {
        auto b = good;
        b[i] ^= flip;
        b.push_back(0);  // whatever follows
        const uint8_t* body;
        size_t len;
        ASSERT_EQ(JournalRecordAt(b.data(), b.size(), &body, &len), 0u);
        uint64_t index = 0;
        bool set = !is_set;
        size_t size = 0;
        ASSERT_TRUE(JournalRecordKey(b.data(), b.size(), &index, &set, &size)) << "byte " << i << " set " << is_set;
        EXPECT_EQ(index, 0x1122334455667788u) << "byte " << i;
        EXPECT_EQ(set, is_set) << "byte " << i;
        EXPECT_EQ(size, good.size()) << "byte " << i;
      }
  }
  std::vector<uint8_t> zeros(64, 0);  // a tail of zeros (file extended, never written) names nothing
  uint64_t index;
  bool set;
  size_t size;
  EXPECT_FALSE(JournalRecordKey(zeros.data(), zeros.size(), &index, &set, &size));
}

// Version 1 records (no guard) still decode.
TEST(JournalFormat, UnguardedVersionOneRecordsDecode) {
  std::vector<uint8_t> b;
  wire::Encoder e(&b);
  e.U32(0);
  e.U32(0);
  e.U8(2);
  e.U64(7);
  e.U64(9);
  e.U64(0xabc);
  FixChecksum(&b);
  auto s = std::get<JournalSet>(Parse(b));
  EXPECT_EQ(s.index, 7u);
  EXPECT_EQ(s.slot, 9u);
}

TEST(JournalFormat, TornOrDamagedRecordIsNotARecord) {
  auto good = Record(JournalSet{1, 2, 3});
  const uint8_t* body;
  size_t len;
  for (size_t n = 0; n < good.size(); ++n)
    EXPECT_EQ(JournalRecordAt(good.data(), n, &body, &len), 0u) << n << " bytes";
  for (size_t i = 0; i < good.size(); ++i) {
    auto b = good;
    b[i] ^= 0x01;
    EXPECT_EQ(JournalRecordAt(b.data(), b.size(), &body, &len), 0u) << "byte " << i;
  }
  std::vector<uint8_t> empty(kJournalRecordHead, 0);  // a zero-length body is never written
  EXPECT_EQ(JournalRecordAt(empty.data(), empty.size(), &body, &len), 0u);
}

TEST(JournalFormat, RejectsUnknownTypeAndWrongSizeBodies) {
  auto b = Record(JournalDel{5});
  b[kJournalRecordHead] = 9;
  FixChecksum(&b);
  EXPECT_NE(DecodeJournalRecord(b.data() + kJournalRecordHead, b.size() - kJournalRecordHead)
                .status().message().find("unknown journal record type 9"),
            std::string::npos);
  auto longer = Record(JournalDel{5});
  longer.push_back(0);
  FixChecksum(&longer);
  EXPECT_EQ(DecodeJournalRecord(longer.data() + kJournalRecordHead, longer.size() - kJournalRecordHead).status().code(),
            Code::kCorruption);
  auto shorter = Record(JournalSet{1, 2, 3});
  shorter.pop_back();
  FixChecksum(&shorter);
  EXPECT_EQ(DecodeJournalRecord(shorter.data() + kJournalRecordHead, shorter.size() - kJournalRecordHead)
                .status().code(),
            Code::kCorruption);
}

// Pins the page hash (it is on disk in every SET record).
TEST(JournalFormat, PageHashIsXxh3) {
  std::vector<uint8_t> page(kPageSize);
  for (size_t i = 0; i < page.size(); ++i) page[i] = static_cast<uint8_t>(i * 13);
  EXPECT_EQ(JournalPageHash(page.data()), XXH3_64bits(page.data(), page.size()));
}

}  // namespace
}  // namespace agile::memd
