#include "store/page_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "base/io.h"
#include "base/testing/scratch_dir.h"

namespace agile::memd {
namespace {

constexpr uint64_t kMiB = 1 << 20;

// Page contents derived from (index, version), so any mix-up shows.
std::vector<uint8_t> MakePage(uint64_t index, uint32_t version = 0) {
  std::vector<uint8_t> p(kPageSize);
  for (size_t i = 0; i < kPageSize; i += 8) {
    uint64_t v = index * 0x9e3779b97f4a7c15ull + i + (uint64_t{version} << 48);
    std::memcpy(&p[i], &v, 8);
  }
  return p;
}

class Pages {
 public:
  void Add(uint64_t index, uint32_t version = 0) {
    data_.push_back(MakePage(index, version));
    refs_.push_back(PageRef{index, nullptr});
  }
  std::span<const PageRef> refs() {
    for (size_t i = 0; i < refs_.size(); ++i) refs_[i].data = data_[i].data();
    return refs_;
  }

 private:
  std::vector<std::vector<uint8_t>> data_;
  std::vector<PageRef> refs_;
};

Pages Range(uint64_t first, uint64_t n, uint32_t version = 0) {
  Pages p;
  for (uint64_t i = first; i < first + n; ++i) p.Add(i, version);
  return p;
}

struct Fetched {
  Status status;
  std::vector<uint8_t> present;
  std::vector<std::vector<uint8_t>> pages;  // empty where absent
};

Fetched Fetch(PageStore& s, std::string_view host, std::string_view vm, OwnerToken t,
              const std::vector<uint64_t>& idx) {
  Fetched f;
  f.present.resize(idx.size());
  std::vector<uint8_t> buf(idx.size() * kPageSize);
  auto n = s.Get(host, vm, t, idx, f.present.data(), buf.data());
  f.status = n.status();
  if (!n.ok()) return f;
  size_t k = 0;
  for (size_t i = 0; i < idx.size(); ++i) {
    if (!f.present[i]) {
      f.pages.emplace_back();
      continue;
    }
    f.pages.emplace_back(buf.begin() + static_cast<ptrdiff_t>(k * kPageSize),
                         buf.begin() + static_cast<ptrdiff_t>((k + 1) * kPageSize));
    ++k;
  }
  return f;
}

// Expects pages [first, first+n) to hold `version` for (host, vm, t).
void ExpectPages(PageStore& s, std::string_view host, std::string_view vm, OwnerToken t, uint64_t first,
                 uint64_t n, uint32_t version = 0) {
  std::vector<uint64_t> idx;
  for (uint64_t i = first; i < first + n; ++i) idx.push_back(i);
  Fetched f = Fetch(s, host, vm, t, idx);
  ASSERT_TRUE(f.status.ok()) << f.status.ToString();
  for (size_t i = 0; i < idx.size(); ++i) {
    ASSERT_TRUE(f.present[i]) << "page " << idx[i];
    ASSERT_EQ(f.pages[i], MakePage(idx[i], version)) << "page " << idx[i];
  }
}

std::unique_ptr<PageStore> OpenStore(uint64_t capacity = 64 * kMiB, std::string dir = "", bool sync = false) {
  PageStore::Options o;
  o.capacity_bytes = capacity;
  o.data_dir = std::move(dir);
  o.sync_each_write = sync;
  auto s = PageStore::Open(o);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return std::move(s).value();
}

TEST(PageStore, PutGetDeleteRoundTrip) {
  auto s = OpenStore();
  auto t = s->Claim("host-a", "vm-1");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->epoch, 1u);
  Pages p = Range(0, 100);
  ASSERT_TRUE(s->Put("host-a", "vm-1", *t, p.refs()).ok());
  ExpectPages(*s, "host-a", "vm-1", *t, 0, 100);

  Fetched f = Fetch(*s, "host-a", "vm-1", *t, {5, 1000, 6});
  ASSERT_TRUE(f.status.ok());
  EXPECT_EQ(f.present, (std::vector<uint8_t>{1, 0, 1}));
  EXPECT_EQ(f.pages[2], MakePage(6));

  auto del = s->Delete("host-a", "vm-1", *t, std::vector<uint64_t>{5, 5, 1000});
  ASSERT_TRUE(del.ok());
  EXPECT_EQ(*del, 1u);
  EXPECT_EQ(Fetch(*s, "host-a", "vm-1", *t, {5}).present[0], 0);
  EXPECT_EQ(s->Stats().pages, 99u);
}

TEST(PageStore, OverwriteAndDuplicatesInOneBatch) {
  auto s = OpenStore();
  auto t = *s->Claim("host-a", "vm-1");
  Pages p;
  p.Add(1, 0);
  p.Add(1, 1);  // the later copy wins
  ASSERT_TRUE(s->Put("host-a", "vm-1", t, p.refs()).ok());
  EXPECT_EQ(s->Stats().pages, 1u);
  ExpectPages(*s, "host-a", "vm-1", t, 1, 1, /*version=*/1);
  Pages q = Range(1, 1, 2);
  ASSERT_TRUE(s->Put("host-a", "vm-1", t, q.refs()).ok());
  ExpectPages(*s, "host-a", "vm-1", t, 1, 1, 2);
  EXPECT_EQ(s->Stats().pages, 1u);
}

TEST(PageStore, ClaimRules) {
  auto s = OpenStore();
  ASSERT_TRUE(s->Claim("host-a", "vm-1").ok());
  auto again = s->Claim("host-b", "vm-1");
  EXPECT_EQ(again.status().code(), Code::kAlreadyExists);
  EXPECT_NE(again.status().message().find("host-a"), std::string::npos);
  EXPECT_EQ(s->Claim("host-a", "../x").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(s->Claim("bad host", "vm-2").status().code(), Code::kInvalidArgument);
  auto other = s->Claim("host-a", "vm-2");
  ASSERT_TRUE(other.ok());
  EXPECT_NE(other->secret, s->Claim("host-a", "vm-3")->secret);
}

// Every refused request changes nothing: the owner still sees the same pages.
TEST(PageStore, OwnershipRulesChangeNothing) {
  auto s = OpenStore();
  auto t = *s->Claim("host-a", "vm-1");
  Pages orig = Range(0, 10);
  ASSERT_TRUE(s->Put("host-a", "vm-1", t, orig.refs()).ok());

  OwnerToken wrong_secret{t.epoch, t.secret ^ 1, t.secret_hi};
  OwnerToken wrong_high{t.epoch, t.secret, t.secret_hi ^ 1};  // the secret is 128 bits
  OwnerToken future{t.epoch + 1, t.secret, t.secret_hi};
  Pages evil = Range(0, 10, 9);
  std::vector<uint64_t> idx = {0, 1, 2};
  struct Who {
    const char* host;
    OwnerToken token;
    const char* why;
  };
  for (Who w : {Who{"host-a", wrong_secret, "wrong ownership token"}, Who{"host-a", wrong_high, "wrong ownership token"},
                Who{"host-a", future, "wrong ownership token"},
                Who{"host-b", t, "owned by host 'host-a'"}}) {
    SCOPED_TRACE(w.why);
    auto put = s->Put(w.host, "vm-1", w.token, evil.refs());
    EXPECT_EQ(put.status().code(), Code::kPermissionDenied);
    EXPECT_NE(put.status().message().find(w.why), std::string::npos) << put.status().message();
    EXPECT_EQ(Fetch(*s, w.host, "vm-1", w.token, idx).status.code(), Code::kPermissionDenied);
    EXPECT_EQ(s->Delete(w.host, "vm-1", w.token, idx).status().code(), Code::kPermissionDenied);
    EXPECT_EQ(s->Transfer(w.host, "vm-1", w.token, "host-c").status().code(), Code::kPermissionDenied);
    EXPECT_EQ(s->Release(w.host, "vm-1", w.token).status().code(), Code::kPermissionDenied);
  }
  ExpectPages(*s, "host-a", "vm-1", t, 0, 10);
  EXPECT_EQ(s->Stats().pages, 10u);
  EXPECT_EQ(s->Stats().vms.at(0).owner, "host-a");
  EXPECT_EQ(Fetch(*s, "host-a", "vm-nope", t, idx).status.code(), Code::kNotFound);
}

TEST(PageStore, TransferInvalidatesOldTokenAtOnce) {
  auto s = OpenStore();
  auto t1 = *s->Claim("host-a", "vm-1");
  Pages p = Range(0, 4);
  ASSERT_TRUE(s->Put("host-a", "vm-1", t1, p.refs()).ok());
  auto t2 = s->Transfer("host-a", "vm-1", t1, "host-b");
  ASSERT_TRUE(t2.ok());
  EXPECT_EQ(t2->epoch, 2u);
  EXPECT_NE(t2->secret, t1.secret);

  // The old owner, with the old token: stale.
  Pages evil = Range(0, 4, 9);
  auto stale = s->Put("host-a", "vm-1", t1, evil.refs());
  EXPECT_EQ(stale.status().code(), Code::kPermissionDenied);
  EXPECT_NE(stale.status().message().find("stale token"), std::string::npos) << stale.status().message();
  // The new host with the old token: stale too.
  EXPECT_EQ(Fetch(*s, "host-b", "vm-1", t1, {0}).status.code(), Code::kPermissionDenied);
  // The old host, even holding the new token: not the owner.
  EXPECT_EQ(Fetch(*s, "host-a", "vm-1", *t2, {0}).status.code(), Code::kPermissionDenied);
  EXPECT_EQ(s->Transfer("host-a", "vm-1", t1, "host-c").status().code(), Code::kPermissionDenied);

  ExpectPages(*s, "host-b", "vm-1", *t2, 0, 4);
  auto t3 = s->Transfer("host-b", "vm-1", *t2, "host-a");  // and back
  ASSERT_TRUE(t3.ok());
  ExpectPages(*s, "host-a", "vm-1", *t3, 0, 4);
}

TEST(PageStore, RetriedTransferGetsTheSameTokenAndNothingElseDoes) {
  // The old owner lost TRANSFER's reply and asks again (docs/memd-protocol.md).
  auto s = OpenStore();
  auto t1 = *s->Claim("host-a", "vm-1");
  Pages p = Range(0, 2);
  ASSERT_TRUE(s->Put("host-a", "vm-1", t1, p.refs()).ok());
  auto t2 = s->Transfer("host-a", "vm-1", t1, "host-b");
  ASSERT_TRUE(t2.ok());
  auto again = s->Transfer("host-a", "vm-1", t1, "host-b");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(*again, *t2) << "a retry must not transfer a second time";
  ExpectPages(*s, "host-b", "vm-1", *t2, 0, 2);

  // Not a retry: another target, another asker, or a wrong secret.
  EXPECT_EQ(s->Transfer("host-a", "vm-1", t1, "host-c").status().code(), Code::kPermissionDenied);
  EXPECT_EQ(s->Transfer("host-c", "vm-1", t1, "host-b").status().code(), Code::kPermissionDenied);
  OwnerToken forged = t1;
  forged.secret ^= 1;
  EXPECT_EQ(s->Transfer("host-a", "vm-1", forged, "host-b").status().code(), Code::kPermissionDenied);
  // The old owner still cannot use what the retry told it.
  EXPECT_EQ(Fetch(*s, "host-a", "vm-1", *again, {0}).status.code(), Code::kPermissionDenied);

  // Once the new owner has passed it on, the old retry is stale.
  auto t3 = s->Transfer("host-b", "vm-1", *t2, "host-c");
  ASSERT_TRUE(t3.ok());
  EXPECT_EQ(s->Transfer("host-a", "vm-1", t1, "host-b").status().code(), Code::kPermissionDenied);
}

TEST(PageStore, FullStoreRejectsWholeBatch) {
  auto s = OpenStore(/*capacity=*/10 * kPageSize);
  auto t = *s->Claim("host-a", "vm-1");
  Pages first = Range(0, 8);
  ASSERT_TRUE(s->Put("host-a", "vm-1", t, first.refs()).ok());

  Pages too_many = Range(100, 3);  // 3 new pages, 2 free
  auto r = s->Put("host-a", "vm-1", t, too_many.refs());
  EXPECT_EQ(r.status().code(), Code::kResourceExhausted);
  EXPECT_NE(r.status().message().find("store full"), std::string::npos);
  Fetched f = Fetch(*s, "host-a", "vm-1", t, {100, 101, 102});
  EXPECT_EQ(f.present, (std::vector<uint8_t>{0, 0, 0}));
  EXPECT_EQ(s->Stats().pages, 8u);

  // Overwrites need no room; a mixed batch counts only its new pages.
  Pages mixed;
  for (uint64_t i = 0; i < 8; ++i) mixed.Add(i, 1);
  mixed.Add(100, 1);
  mixed.Add(101, 1);
  ASSERT_TRUE(s->Put("host-a", "vm-1", t, mixed.refs()).ok());
  EXPECT_EQ(s->Stats().pages, 10u);

  // Capacity is global: another VM is full too, until pages are deleted.
  auto t2 = *s->Claim("host-b", "vm-2");
  Pages one = Range(0, 1);
  EXPECT_EQ(s->Put("host-b", "vm-2", t2, one.refs()).status().code(), Code::kResourceExhausted);
  ASSERT_TRUE(s->Delete("host-a", "vm-1", t, std::vector<uint64_t>{0}).ok());
  EXPECT_TRUE(s->Put("host-b", "vm-2", t2, one.refs()).ok());
}

TEST(PageStore, ReleaseDropsEverything) {
  auto s = OpenStore();
  auto t = *s->Claim("host-a", "vm-1");
  Pages p = Range(0, 5);
  ASSERT_TRUE(s->Put("host-a", "vm-1", t, p.refs()).ok());
  auto freed = s->Release("host-a", "vm-1", t);
  ASSERT_TRUE(freed.ok());
  EXPECT_EQ(*freed, 5u);
  EXPECT_EQ(s->Stats().pages, 0u);
  EXPECT_TRUE(s->Stats().vms.empty());
  EXPECT_EQ(Fetch(*s, "host-a", "vm-1", t, {0}).status.code(), Code::kNotFound);
  auto t2 = s->Claim("host-b", "vm-1");  // the name is free again
  ASSERT_TRUE(t2.ok());
  EXPECT_EQ(Fetch(*s, "host-b", "vm-1", *t2, {0}).present[0], 0);
}

// GetPinned hands out the slots themselves (memory store). Without the pin,
// a PUT of the same pages frees their old slots at once and the next PUT
// writes into them: the pinned bytes would change under a reply being sent.
TEST(PageStore, PinnedPagesStayWholeWhileTheSamePagesArePutAgain) {
  auto s = OpenStore();
  auto t = *s->Claim("host-a", "vm-1");
  Pages v0 = Range(0, 16, 0);
  ASSERT_TRUE(s->Put("host-a", "vm-1", t, v0.refs()).ok());
  std::vector<uint64_t> idx = {3, 99, 0, 15};
  std::vector<uint8_t> present(idx.size());
  auto pin = s->GetPinned("host-a", "vm-1", t, idx, present.data());
  ASSERT_TRUE(pin.ok()) << pin.status().ToString();
  EXPECT_EQ(present, (std::vector<uint8_t>{1, 0, 1, 1}));
  ASSERT_EQ(pin->pages().size(), 3u);
  std::vector<const uint8_t*> slots(pin->pages().begin(), pin->pages().end());
  for (uint32_t v = 1; v <= 4; ++v) {
    Pages again = Range(0, 16, v);
    ASSERT_TRUE(s->Put("host-a", "vm-1", t, again.refs()).ok());
    std::vector<uint64_t> gone = {0};
    if (v == 4) {
      ASSERT_TRUE(s->Delete("host-a", "vm-1", t, gone).ok());
    }
  }
  const uint64_t want[] = {3, 0, 15};
  for (size_t k = 0; k < slots.size(); ++k)
    EXPECT_EQ(0, std::memcmp(slots[k], MakePage(want[k], 0).data(), kPageSize)) << "pinned page " << want[k];
  ExpectPages(*s, "host-a", "vm-1", t, 1, 15, 4);

  // Unpinned, the 65 slots held meanwhile (4 x 16 overwritten, 1 deleted)
  // are free again: the next 65 new pages reuse them, none grows the store.
  *pin = PinnedPages();
  Pages v5 = Range(100, 65, 5);
  ASSERT_TRUE(s->Put("host-a", "vm-1", t, v5.refs()).ok());
  std::vector<uint64_t> fresh;
  for (uint64_t i = 100; i < 165; ++i) fresh.push_back(i);
  std::vector<uint8_t> present2(fresh.size());
  auto pin2 = s->GetPinned("host-a", "vm-1", t, fresh, present2.data());
  ASSERT_TRUE(pin2.ok());
  size_t reused = 0;
  for (const uint8_t* p : pin2->pages())
    for (const uint8_t* old : slots) reused += p == old;
  EXPECT_EQ(reused, slots.size());
  ExpectPages(*s, "host-a", "vm-1", t, 100, 65, 5);
}

TEST(PageStore, PinnedPagesOutliveTheirNamespace) {
  auto s = OpenStore();
  auto t = *s->Claim("host-a", "vm-1");
  Pages p = Range(0, 4);
  ASSERT_TRUE(s->Put("host-a", "vm-1", t, p.refs()).ok());
  std::vector<uint64_t> idx = {2};
  uint8_t present = 0;
  auto pin = s->GetPinned("host-a", "vm-1", t, idx, &present);
  ASSERT_TRUE(pin.ok());
  ASSERT_TRUE(s->Release("host-a", "vm-1", t).ok());
  EXPECT_EQ(0, std::memcmp(pin->pages()[0], MakePage(2).data(), kPageSize));
  EXPECT_EQ(s->GetPinned("host-a", "vm-1", t, idx, &present).status().code(), Code::kNotFound);
}

// ---- Persistence --------------------------------------------------------------

TEST(PageStorePersistence, PagesAndTokenSurviveReopen) {
  ScratchDir dir("memd-test");
  OwnerToken t1, t2;
  {
    auto s = OpenStore(64 * kMiB, dir.path());
    t1 = *s->Claim("host-a", "vm-1");
    Pages p = Range(0, 1000);
    ASSERT_TRUE(s->Put("host-a", "vm-1", t1, p.refs()).ok());
    Pages v1 = Range(0, 100, 1);  // overwrite some
    ASSERT_TRUE(s->Put("host-a", "vm-1", t1, v1.refs()).ok());
    std::vector<uint64_t> gone;
    for (uint64_t i = 900; i < 1000; ++i) gone.push_back(i);
    ASSERT_TRUE(s->Delete("host-a", "vm-1", t1, gone).ok());
    t2 = *s->Transfer("host-a", "vm-1", t1, "host-b");
    auto other = *s->Claim("host-c", "vm-2");
    ASSERT_TRUE(s->Release("host-c", "vm-2", other).ok());
  }  // the store is destroyed here
  auto s = OpenStore(64 * kMiB, dir.path());
  ExpectPages(*s, "host-b", "vm-1", t2, 0, 100, 1);
  ExpectPages(*s, "host-b", "vm-1", t2, 100, 800, 0);
  EXPECT_EQ(Fetch(*s, "host-b", "vm-1", t2, {950}).present[0], 0);
  EXPECT_EQ(Fetch(*s, "host-a", "vm-1", t1, {0}).status.code(), Code::kPermissionDenied);
  StoreStats st = s->Stats();
  EXPECT_EQ(st.pages, 900u);
  ASSERT_EQ(st.vms.size(), 1u);  // vm-2 was released
  EXPECT_EQ(st.vms[0].owner, "host-b");
  EXPECT_EQ(st.vms[0].epoch, 2u);
  // Writes go on after the restart, reusing freed slots.
  Pages more = Range(5000, 50);
  ASSERT_TRUE(s->Put("host-b", "vm-1", t2, more.refs()).ok());
  ExpectPages(*s, "host-b", "vm-1", t2, 5000, 50);
}

// On disk, GetPinned reads the pages out (hash-checked) into its own buffer.
TEST(PageStorePersistence, PinnedPagesAreReadCopies) {
  ScratchDir dir("memd-test");
  auto s = OpenStore(64 * kMiB, dir.path());
  auto t = *s->Claim("host-a", "vm-1");
  Pages p = Range(0, 8);
  ASSERT_TRUE(s->Put("host-a", "vm-1", t, p.refs()).ok());
  std::vector<uint64_t> idx = {7, 8, 1};
  std::vector<uint8_t> present(3);
  auto pin = s->GetPinned("host-a", "vm-1", t, idx, present.data());
  ASSERT_TRUE(pin.ok()) << pin.status().ToString();
  EXPECT_EQ(present, (std::vector<uint8_t>{1, 0, 1}));
  ASSERT_EQ(pin->pages().size(), 2u);
  Pages v1 = Range(0, 8, 1);
  ASSERT_TRUE(s->Put("host-a", "vm-1", t, v1.refs()).ok());
  EXPECT_EQ(0, std::memcmp(pin->pages()[0], MakePage(7).data(), kPageSize));
  EXPECT_EQ(0, std::memcmp(pin->pages()[1], MakePage(1).data(), kPageSize));
}

TEST(PageStorePersistence, SyncEachWriteMode) {
  ScratchDir dir("memd-test");
  OwnerToken t;
  {
    auto s = OpenStore(64 * kMiB, dir.path(), /*sync=*/true);
    t = *s->Claim("host-a", "vm-1");
    for (uint32_t v = 0; v < 3; ++v) {
      Pages p = Range(0, 64, v);
      ASSERT_TRUE(s->Put("host-a", "vm-1", t, p.refs()).ok());
    }
  }
  auto s = OpenStore(64 * kMiB, dir.path(), true);
  ExpectPages(*s, "host-a", "vm-1", t, 0, 64, 2);
}

TEST(PageStorePersistence, SecondStoreOnSameDirIsRefused) {
  ScratchDir dir("memd-test");
  auto s = OpenStore(64 * kMiB, dir.path());
  PageStore::Options o;
  o.data_dir = dir.path();
  auto second = PageStore::Open(o);
  EXPECT_EQ(second.status().code(), Code::kUnavailable);
}

TEST(PageStorePersistence, TornJournalTailIsCut) {
  ScratchDir dir("memd-test");
  OwnerToken t;
  {
    auto s = OpenStore(64 * kMiB, dir.path());
    t = *s->Claim("host-a", "vm-1");
    Pages p = Range(0, 10);
    ASSERT_TRUE(s->Put("host-a", "vm-1", t, p.refs()).ok());
  }
  // Half a record, as if the process died inside write().
  std::string journal = dir.path() + "/vm-1.index";
  UniqueFd fd(::open(journal.c_str(), O_WRONLY | O_APPEND));
  uint8_t half[] = {25, 0, 0, 0, 0xde, 0xad, 2, 1};
  ASSERT_TRUE(WriteFull(fd.get(), half, sizeof(half)).ok());
  fd.Reset();
  {
    auto s = OpenStore(64 * kMiB, dir.path());
    ExpectPages(*s, "host-a", "vm-1", t, 0, 10);
    Pages p = Range(10, 5);  // appends after the cut are read back
    ASSERT_TRUE(s->Put("host-a", "vm-1", t, p.refs()).ok());
  }
  auto s = OpenStore(64 * kMiB, dir.path());
  ExpectPages(*s, "host-a", "vm-1", t, 0, 15);
}

TEST(PageStorePersistence, CorruptPageIsReportedNeverReturned) {
  ScratchDir dir("memd-test");
  OwnerToken t;
  {
    auto s = OpenStore(64 * kMiB, dir.path());
    t = *s->Claim("host-a", "vm-1");
    Pages p = Range(0, 4);
    ASSERT_TRUE(s->Put("host-a", "vm-1", t, p.refs()).ok());
  }
  std::string data = dir.path() + "/vm-1.pages";
  UniqueFd fd(::open(data.c_str(), O_RDWR));
  uint8_t b = 0;
  ASSERT_TRUE(PreadFull(fd.get(), &b, 1, 2 * kPageSize + 100).ok());
  b ^= 0xff;
  ASSERT_TRUE(PwriteFull(fd.get(), &b, 1, 2 * kPageSize + 100).ok());
  fd.Reset();
  auto s = OpenStore(64 * kMiB, dir.path());
  Fetched f = Fetch(*s, "host-a", "vm-1", t, {2});
  EXPECT_EQ(f.status.code(), Code::kCorruption);
  EXPECT_NE(f.status.message().find("checksum"), std::string::npos) << f.status.message();
  ExpectPages(*s, "host-a", "vm-1", t, 0, 2);  // the others are fine
}

TEST(PageStorePersistence, CorruptJournalHeaderFailsLoudly) {
  ScratchDir dir("memd-test");
  {
    auto s = OpenStore(64 * kMiB, dir.path());
    ASSERT_TRUE(s->Claim("host-a", "vm-1").ok());
  }
  std::string journal = dir.path() + "/vm-1.index";
  UniqueFd fd(::open(journal.c_str(), O_WRONLY));
  ASSERT_TRUE(PwriteFull(fd.get(), "XXXX", 4, 0).ok());
  fd.Reset();
  PageStore::Options o;
  o.data_dir = dir.path();
  auto s = PageStore::Open(o);
  EXPECT_EQ(s.status().code(), Code::kCorruption);
  EXPECT_NE(s.status().message().find("vm-1"), std::string::npos) << s.status().message();
}

TEST(PageStorePersistence, LeftoversOfACrashAreRemoved) {
  ScratchDir dir("memd-test");
  for (const char* name : {"/orphan.pages", "/vm-9.index.tmp"}) {
    UniqueFd fd(::open((dir.path() + name).c_str(), O_CREAT | O_WRONLY, 0600));
    ASSERT_TRUE(fd.valid());
  }
  auto s = OpenStore(64 * kMiB, dir.path());
  EXPECT_TRUE(s->Stats().vms.empty());
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/orphan.pages"));
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/vm-9.index.tmp"));
}

TEST(PageStorePersistence, LongJournalIsCompacted) {
  ScratchDir dir("memd-test");
  OwnerToken t;
  std::string journal = dir.path() + "/vm-1.index";
  {
    auto s = OpenStore(64 * kMiB, dir.path());
    t = *s->Claim("host-a", "vm-1");
    // ~77K records for 256 live pages: past the compaction threshold.
    for (uint32_t v = 0; v < 300; ++v) {
      Pages p = Range(0, kMaxBatchPages, v);
      ASSERT_TRUE(s->Put("host-a", "vm-1", t, p.refs()).ok());
      if (v % 16 == 0) {
        ASSERT_TRUE(s->Sync().ok());
      }
    }
    // Compacted at least once: far fewer than 300 * 256 records of 33 bytes.
    EXPECT_LT(std::filesystem::file_size(journal), 300u * 256 * 33 / 2);
    // Retired slots are reused, so the data file stays near the live size.
    EXPECT_LT(std::filesystem::file_size(dir.path() + "/vm-1.pages"), 64 * kMiB);
  }
  auto s = OpenStore(64 * kMiB, dir.path());
  ExpectPages(*s, "host-a", "vm-1", t, 0, kMaxBatchPages, 299);
}

// Compactions while group commits run (two writers, each waiting for its
// commit): a commit that took journal records before a compaction must not
// append them after it (they could name slots reused since). After a
// restart every page has its last version.
TEST(PageStorePersistence, CompactionDuringGroupCommitsKeepsTheLastVersions) {
  ScratchDir dir("memd-test");
  OwnerToken t;
  {
    auto s = OpenStore(64 * kMiB, dir.path());
    t = *s->Claim("host-a", "vm-1");
    std::atomic<int> failures{0};
    auto writer = [&](uint64_t first) {
      for (uint32_t v = 0; v < 200; ++v) {
        Pages p = Range(first, kMaxBatchPages, v);
        if (!s->Put("host-a", "vm-1", t, p.refs()).ok() || !s->WaitDurable(s->LastWrite()).ok()) failures++;
      }
    };
    std::thread a(writer, 0), b(writer, kMaxBatchPages);
    a.join();
    b.join();
    EXPECT_EQ(failures.load(), 0);
    EXPECT_GT(s->commits(), 0u);
    // Compacted at least once: 400 x 256 SET records are 4.6 MB.
    EXPECT_LT(std::filesystem::file_size(dir.path() + "/vm-1.index"), 400u * 256 * 45 / 2);
  }
  auto s = OpenStore(64 * kMiB, dir.path());
  ExpectPages(*s, "host-a", "vm-1", t, 0, kMaxBatchPages, 199);
  ExpectPages(*s, "host-a", "vm-1", t, kMaxBatchPages, kMaxBatchPages, 199);
}

}  // namespace
}  // namespace agile::memd
