// WriteScanner against a real child process under the real shim and fault
// server: exact write sets, a result buffer that fills up, and how dropped
// PTEs (read tracking) interact with write-protection on this kernel.
#include "track/write_scanner.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <set>
#include <vector>

#include "track/testing/guest.h"

namespace agile::track {
namespace {

using testing::Ok;
using testing::Range;
using testing::StartTrackGuest;

constexpr uint64_t kPages = 16384;  // 64 MiB

std::set<uint64_t> ScanSet(WriteScanner& s) {
  std::vector<uint64_t> w;
  auto n = s.Scan(&w);
  EXPECT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(n.ok() ? *n : 0, w.size());
  return {w.begin(), w.end()};
}

std::set<uint64_t> Pages(uint64_t first, uint64_t count) {
  std::set<uint64_t> s;
  for (uint64_t i = first; i < first + count; ++i) s.insert(i);
  return s;
}

class WriteScannerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    g_ = StartTrackGuest(kPages);
    ASSERT_NE(g_, nullptr);
    auto s = WriteScanner::Open(g_->memory().mapping());
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    scanner_ = std::make_unique<WriteScanner>(std::move(s).value());
  }
  std::unique_ptr<vm::testing::GuestProcess> g_;
  std::unique_ptr<WriteScanner> scanner_;
};

TEST_F(WriteScannerTest, FirstScanIsABaselineOfEveryUnprotectedPage) {
  // Never-protected pages count as written, populated or not.
  EXPECT_EQ(ScanSet(*scanner_).size(), kPages);
  EXPECT_TRUE(ScanSet(*scanner_).empty());
  Ok(*g_, "fill 1 " + Range(0, kPages));
  EXPECT_EQ(ScanSet(*scanner_).size(), kPages);
  EXPECT_TRUE(ScanSet(*scanner_).empty());
}

TEST_F(WriteScannerTest, ReportsExactlyTheWrittenPages) {
  Ok(*g_, "fill 1 " + Range(0, kPages));
  ScanSet(*scanner_);  // baseline
  std::set<uint64_t> want = Pages(0, 10);
  for (uint64_t p : Pages(1000, 500)) want.insert(p);
  want.insert(kPages - 1);
  for (uint64_t k = 0; k < 50; ++k) want.insert(3001 + 97 * k);
  Ok(*g_, "write " + Range(0, 10));
  Ok(*g_, "write " + Range(1000, 500));
  Ok(*g_, "write " + Range(kPages - 1, 1));
  for (uint64_t k = 0; k < 50; ++k) Ok(*g_, "write " + Range(3001 + 97 * k, 1));
  Ok(*g_, "read " + Range(20, 10));      // reads are not writes
  Ok(*g_, "read " + Range(6000, 4000));
  EXPECT_EQ(ScanSet(*scanner_), want);
  EXPECT_TRUE(ScanSet(*scanner_).empty()) << "the scan re-protects what it reports";
  Ok(*g_, "write " + Range(1200, 3));  // and catches the next write again
  EXPECT_EQ(ScanSet(*scanner_), Pages(1200, 3));
  Ok(*g_, "verify 1 " + Range(0, kPages));
}

// A migration's last scan (VM paused) reports without re-protecting: the
// same pages come again in the next scan, and nothing is lost either way.
TEST_F(WriteScannerTest, ScanWithoutRearmReportsTheSamePagesAgain) {
  Ok(*g_, "fill 1 " + Range(0, kPages));
  ScanSet(*scanner_);  // baseline
  Ok(*g_, "write " + Range(500, 40));
  Ok(*g_, "write " + Range(9000, 3));
  std::set<uint64_t> want = Pages(500, 40);
  for (uint64_t p : Pages(9000, 3)) want.insert(p);
  std::vector<uint64_t> w;
  ASSERT_TRUE(scanner_->Scan(&w, /*rearm=*/false).ok());
  EXPECT_EQ(std::set<uint64_t>(w.begin(), w.end()), want);
  Ok(*g_, "write " + Range(20, 1));  // a later write joins them
  want.insert(20);
  EXPECT_EQ(ScanSet(*scanner_), want) << "not re-protected: reported again, with the new write";
  EXPECT_TRUE(ScanSet(*scanner_).empty()) << "a re-arming scan protects them again";
  Ok(*g_, "verify 1 " + Range(0, kPages));
}

TEST_F(WriteScannerTest, ResultBufferFillingUpContinuesWhereTheWalkStopped) {
  Ok(*g_, "fill 1 " + Range(0, kPages));
  ScanSet(*scanner_);
  // Every other page: 4096 separate runs, four times the per-call buffer.
  std::set<uint64_t> want;
  for (uint64_t i = 0; i < 8192; i += 2) want.insert(i);
  for (uint64_t i : want) Ok(*g_, "write " + Range(i, 1));
  uint64_t runs = 0;
  std::set<uint64_t> got;
  auto n = scanner_->Scan([&](uint64_t first, uint64_t count) {
    ++runs;
    for (uint64_t i = first; i < first + count; ++i) got.insert(i);
  });
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, want.size());
  EXPECT_EQ(runs, want.size());
  EXPECT_EQ(got, want);
}

TEST_F(WriteScannerTest, ScanRangeLeavesTheRestForLater) {
  Ok(*g_, "fill 1 " + Range(0, kPages));
  ScanSet(*scanner_);
  Ok(*g_, "write " + Range(100, 10));
  Ok(*g_, "write " + Range(9000, 10));
  std::set<uint64_t> got;
  auto n = scanner_->ScanRange(8192 * 4096ULL, 8192 * 4096ULL, [&](uint64_t first, uint64_t count) {
    for (uint64_t i = first; i < first + count; ++i) got.insert(i);
  });
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(got, Pages(9000, 10));
  EXPECT_EQ(ScanSet(*scanner_), Pages(100, 10));
  EXPECT_FALSE(scanner_->ScanRange(4096 * 100 + 1, 4096, [](uint64_t, uint64_t) {}).ok());
  EXPECT_FALSE(scanner_->ScanRange(0, (kPages + 1) * 4096, [](uint64_t, uint64_t) {}).ok());
}

// The kernel facts read tracking relies on (Linux 6.18): MADV_DONTNEED keeps
// a write-protected PTE's protection as a uffd-wp marker; a written PTE that
// is dropped is still reported; UFFDIO_CONTINUE maps the page unprotected, so
// a page only read after a drop is reported too (a superset, never a miss).
TEST_F(WriteScannerTest, DroppedPtesNeverHideWritesAndReadsAfterADropLookWritten) {
  Ok(*g_, "fill 1 " + Range(0, kPages));
  ScanSet(*scanner_);
  ASSERT_TRUE(g_->memory().DropPtes(0, 1000).ok());
  EXPECT_TRUE(ScanSet(*scanner_).empty()) << "protected pages stay protected through a drop";

  Ok(*g_, "read " + Range(0, 10));
  Ok(*g_, "write " + Range(10, 10));
  EXPECT_EQ(ScanSet(*scanner_), Pages(0, 20)) << "read after a drop is reported as written";
  Ok(*g_, "read " + Range(0, 20));
  EXPECT_TRUE(ScanSet(*scanner_).empty()) << "re-protected by the scan, reads are not writes again";

  Ok(*g_, "write " + Range(2000, 10));
  ASSERT_TRUE(g_->memory().DropPtes(2000, 10).ok());
  EXPECT_EQ(ScanSet(*scanner_), Pages(2000, 10)) << "a write survives its PTE being dropped";
  EXPECT_TRUE(ScanSet(*scanner_).empty());
  Ok(*g_, "write " + Range(3000, 10));
  ASSERT_TRUE(g_->memory().DropPtes(3000, 10).ok());
  Ok(*g_, "read " + Range(3000, 10));
  EXPECT_EQ(ScanSet(*scanner_), Pages(3000, 10)) << "written, dropped, read back";
  EXPECT_EQ(g_->faults().stats().minor.load(), 30u);
  Ok(*g_, "verify 1 " + Range(0, kPages));
}

TEST(WriteScannerOpenTest, MappingWithoutAsyncWriteProtectIsUnsupported) {
  void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  vm::GuestMapping m{reinterpret_cast<uint64_t>(p), 4096, 0, static_cast<uint32_t>(::getpid()), 0};
  auto s = WriteScanner::Open(m);
  EXPECT_EQ(s.status().code(), Code::kUnsupported) << s.status().ToString();
  ::munmap(p, 4096);
  m.pid = 0x7ffffff0;  // no such process
  EXPECT_FALSE(WriteScanner::Open(m).ok());
}

}  // namespace
}  // namespace agile::track
