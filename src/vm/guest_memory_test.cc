// GuestMemory's transitions (docs/invariants.md), one test each, against a
// plain process mapping a shmem RAM file under the real shim (shm_guest), and
// the races between eviction, refault, migration reads and guest writes.
// The race tests also run under ThreadSanitizer (target guest_memory_tsan).
#include "vm/guest_memory.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "base/io.h"
#include "vm/testing/guest_process.h"
#include "vm/testing/map_source.h"
#include "vm/testing/stand_in.h"

namespace agile::vm {
namespace {

using testing::GuestProcess;
using testing::Pattern;

constexpr uint64_t kPages = 1024;  // 4 MiB

using testing::MapSource;

std::unique_ptr<GuestProcess> StartGuest(PageSource* source, PageState initial = PageState::kZero) {
  auto g = GuestProcess::Start(AGILE_SHIM_PATH, AGILE_SHM_GUEST_PATH, kPages, source, 4, initial);
  EXPECT_TRUE(g.ok()) << g.status().ToString();
  return g.ok() ? std::move(g).value() : nullptr;
}

std::vector<uint64_t> Range(uint64_t first, uint64_t count) {
  std::vector<uint64_t> v;
  for (uint64_t i = first; i < first + count; ++i) v.push_back(i);
  return v;
}

// The page content shm_guest writes for generation `gen`.
std::vector<uint8_t> PageOf(uint64_t idx, uint64_t gen) {
  std::vector<uint8_t> p(kPageSize);
  for (size_t w = 0; w < kPageSize / 8; ++w) {
    uint64_t x = Pattern(idx, gen, w);
    std::memcpy(p.data() + w * 8, &x, 8);
  }
  return p;
}

// The generation a page's content belongs to (0 = all zero), or -1 when it
// is no generation up to max_gen: torn or from the wrong page.
int GenerationOf(uint64_t idx, const uint8_t* data, int max_gen) {
  bool zero = true;
  for (size_t i = 0; i < kPageSize && zero; ++i) zero = data[i] == 0;
  if (zero) return 0;
  for (int gen = 1; gen <= max_gen; ++gen)
    if (std::memcmp(PageOf(idx, gen).data(), data, kPageSize) == 0) return gen;
  return -1;
}

// Offloads pages the way the evictor does: claim, drop PTEs, read out into
// the store, publish. Returns how many it moved.
size_t Evict(GuestMemory& mem, MapSource* store, uint64_t first, uint64_t count) {
  std::vector<uint64_t> claimed = mem.ClaimResident(Range(first, count));
  if (claimed.empty()) return 0;
  for (uint64_t i : claimed) EXPECT_TRUE(mem.DropPtes(i, 1).ok());
  for (uint64_t i : claimed) {
    auto p = mem.ClaimedRun(i, 1);
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    if (p.ok()) store->Put(i, *p);
  }
  EXPECT_TRUE(mem.PublishOffloaded(claimed, {}).ok());
  return claimed.size();
}

bool HoleAt(int fd, uint64_t idx) {
  return ::lseek(fd, static_cast<off_t>(PageOffset(idx)), SEEK_DATA) != static_cast<off_t>(PageOffset(idx));
}

TEST(GuestMemoryTest, FirstTouchMovesZeroToResident) {
  MapSource store;
  auto g = StartGuest(&store);
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->memory().count(PageState::kZero), kPages);
  ASSERT_EQ(*g->Command("write 1"), "ok");
  EXPECT_EQ(g->memory().count(PageState::kResident), kPages);
  EXPECT_EQ(g->faults().stats().first_touch.load(), kPages);
}

TEST(GuestMemoryTest, ClaimOnlyTakesResidentPagesAndUnclaimGivesThemBack) {
  MapSource store;
  auto g = StartGuest(&store);
  ASSERT_NE(g, nullptr);
  ASSERT_EQ(*g->Command("write 1"), "ok");
  GuestMemory& mem = g->memory();
  auto claimed = mem.ClaimResident(Range(0, 8));
  EXPECT_EQ(claimed.size(), 8u);
  EXPECT_EQ(mem.ClaimResident(Range(4, 8)).size(), 4u);  // 4..7 already claimed
  EXPECT_EQ(mem.count(PageState::kInFlight), 12u);
  mem.Unclaim(Range(0, 12));
  EXPECT_EQ(mem.count(PageState::kResident), kPages);
  EXPECT_FALSE(mem.ClaimedRun(0, 1).ok()) << "a page no longer claimed cannot be read as claimed";
}

TEST(GuestMemoryTest, PublishOffloadedPunchesAndRefaultBringsTheDataBack) {
  MapSource store;
  auto g = StartGuest(&store);
  ASSERT_NE(g, nullptr);
  ASSERT_EQ(*g->Command("write 3"), "ok");
  EXPECT_EQ(Evict(g->memory(), &store, 100, 50), 50u);
  EXPECT_EQ(g->memory().count(PageState::kOffloaded), 50u);
  EXPECT_TRUE(HoleAt(g->ram_fd(), 120));
  ASSERT_EQ(*g->Command("verify 3"), "ok");  // refaults from the store
  EXPECT_EQ(g->memory().count(PageState::kResident), kPages);
  EXPECT_GT(g->faults().stats().refault.load(), 0u);
}

TEST(GuestMemoryTest, ZeroPagesArePublishedAsZeroAndFaultBackAsZero) {
  MapSource store;
  auto g = StartGuest(&store);
  ASSERT_NE(g, nullptr);
  ASSERT_EQ(g->Command("touch")->rfind("ok pages=1024", 0), 0u);  // reads: every page resident and all-zero
  GuestMemory& mem = g->memory();
  auto claimed = mem.ClaimResident(Range(0, 16));
  ASSERT_TRUE(mem.DropPtes(0, 16).ok());
  ASSERT_TRUE(mem.PublishOffloaded({}, claimed).ok());
  EXPECT_EQ(mem.count(PageState::kZero), 16u);
  EXPECT_TRUE(HoleAt(g->ram_fd(), 3));
  uint64_t before = g->faults().stats().first_touch.load();
  ASSERT_EQ(g->Command("touch")->rfind("ok pages=1024", 0), 0u);
  EXPECT_EQ(g->faults().stats().first_touch.load(), before + 16);
}

TEST(GuestMemoryTest, ReadPageReadsFromTheFileOrTheStoreAndSkipsZero) {
  MapSource store;
  auto g = StartGuest(&store);
  ASSERT_NE(g, nullptr);
  ASSERT_EQ(*g->Command("write 4"), "ok");
  GuestMemory& mem = g->memory();
  ASSERT_EQ(Evict(mem, &store, 10, 1), 1u);
  std::vector<uint8_t> buf(kPageSize);
  auto st = mem.ReadPage(9, buf.data(), &store);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(*st, PageState::kResident);
  EXPECT_EQ(buf, PageOf(9, 4));
  st = mem.ReadPage(10, buf.data(), &store);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(*st, PageState::kOffloaded);
  EXPECT_EQ(buf, PageOf(10, 4));
  EXPECT_EQ(mem.state(10), PageState::kOffloaded) << "a read leaves the page where it was";
  auto claimed = mem.ClaimResident(Range(20, 1));
  ASSERT_TRUE(mem.DropPtes(20, 1).ok());
  ASSERT_TRUE(mem.PublishOffloaded({}, claimed).ok());
  st = mem.ReadPage(20, buf.data(), &store);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(*st, PageState::kZero);
}

// Before GuestMemory, the sender gave up waiting on a page in flight after
// 100 ms and read the RAM file anyway: for a page being refaulted that is a
// hole, so it sent zeros. ReadPage waits for the owner to settle the page.
TEST(GuestMemoryTest, ReadPageWaitsForAPageInFlightAndNeverReadsTheHole) {
  MapSource store;
  auto g = StartGuest(&store);
  ASSERT_NE(g, nullptr);
  ASSERT_EQ(*g->Command("write 5"), "ok");
  GuestMemory& mem = g->memory();
  ASSERT_EQ(Evict(mem, &store, 30, 1), 1u);
  // Hold the page the way a slow refault does: in flight, its copy in the store only.
  ASSERT_EQ(mem.state(30), PageState::kOffloaded);
  // Claim it through a refault whose source blocks until released.
  class SlowSource : public PageSource {
   public:
    explicit SlowSource(MapSource* inner) : inner_(inner) {}
    Status Fetch(std::span<const uint64_t> idx, uint8_t* out, uint8_t* present) override {
      while (!go.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      return inner_->Fetch(idx, out, present);
    }
    std::atomic<bool> go{false};

   private:
    MapSource* inner_;
  } slow(&store);
  FaultStats stats;
  std::vector<uint8_t> fetch_buf(4 * kPageSize);
  std::thread refault([&] {
    // Refault installs with UFFDIO_COPY into the mapping: no vCPU waits on it
    // here, which is fine (the wake finds nobody).
    auto r = mem.Refault(30, 1, &slow, fetch_buf.data(), MonotonicNs(), &stats);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
  });
  while (mem.state(30) != PageState::kInFlight) std::this_thread::sleep_for(std::chrono::microseconds(50));
  std::atomic<bool> read_done{false};
  std::vector<uint8_t> buf(kPageSize);
  std::thread reader([&] {
    auto st = mem.ReadPage(30, buf.data(), &store);
    EXPECT_TRUE(st.ok()) << st.status().ToString();
    read_done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // longer than the old 100 ms give-up
  EXPECT_FALSE(read_done.load()) << "ReadPage must wait while the page is in flight";
  slow.go = true;
  refault.join();
  reader.join();
  EXPECT_EQ(mem.state(30), PageState::kResident);
  EXPECT_EQ(buf, PageOf(30, 5)) << "the page's data, never the hole's zeros";
}

TEST(GuestMemoryTest, LocationRunsDescribeEveryPage) {
  MapSource store;
  auto g = StartGuest(&store);
  ASSERT_NE(g, nullptr);
  ASSERT_EQ(*g->Command("write 1"), "ok");
  ASSERT_EQ(Evict(g->memory(), &store, 100, 28), 28u);
  auto runs = g->memory().LocationRuns();
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 3u);
  EXPECT_EQ((*runs)[0].state, PageState::kResident);
  EXPECT_EQ((*runs)[0].count, 100u);
  EXPECT_EQ((*runs)[1].state, PageState::kOffloaded);
  EXPECT_EQ((*runs)[1].first, 100u);
  EXPECT_EQ((*runs)[1].count, 28u);
  EXPECT_EQ((*runs)[2].first + (*runs)[2].count, kPages);
}

TEST(GuestMemoryTest, IncomingPagesInstallOnceAndRewriteOnlyWhenAllowed) {
  MapSource store;
  auto g = StartGuest(&store, PageState::kRemote);
  ASSERT_NE(g, nullptr);
  GuestMemory& mem = g->memory();
  EXPECT_EQ(mem.count(PageState::kRemote), kPages);
  for (uint64_t i = 0; i < kPages; ++i) {
    auto placed = mem.InstallIncoming(i, PageOf(i, 2).data(), /*overwrite_resident=*/true);
    ASSERT_TRUE(placed.ok());
    EXPECT_TRUE(*placed);
  }
  EXPECT_EQ(mem.count(PageState::kResident), kPages);
  // A later pre-copy round rewrites page 7 (before switchover)...
  auto placed = mem.InstallIncoming(7, PageOf(7, 3).data(), true);
  ASSERT_TRUE(placed.ok());
  EXPECT_FALSE(*placed);
  // ...but after switchover the guest's copy wins.
  placed = mem.InstallIncoming(8, PageOf(8, 3).data(), false);
  ASSERT_TRUE(placed.ok());
  EXPECT_FALSE(*placed);
  std::vector<uint8_t> buf(kPageSize);
  ASSERT_TRUE(PreadFull(g->ram_fd(), buf.data(), kPageSize, static_cast<off_t>(PageOffset(7))).ok());
  EXPECT_EQ(buf, PageOf(7, 3));
  ASSERT_TRUE(PreadFull(g->ram_fd(), buf.data(), kPageSize, static_cast<off_t>(PageOffset(8))).ok());
  EXPECT_EQ(buf, PageOf(8, 2));
  EXPECT_FALSE(mem.InstallIncoming(kPages, buf.data(), true).ok()) << "an index past the end is refused";
}

TEST(GuestMemoryTest, MarkStaleSendsAPageBackToTheSourceAndRelocateMovesItToTheStoreOrZero) {
  MapSource store;
  auto g = StartGuest(&store, PageState::kRemote);
  ASSERT_NE(g, nullptr);
  GuestMemory& mem = g->memory();
  for (uint64_t i = 0; i < 4; ++i) ASSERT_TRUE(mem.InstallIncoming(i, PageOf(i, 1).data(), true).ok());
  ASSERT_TRUE(mem.MarkStale(0).ok());
  EXPECT_EQ(mem.state(0), PageState::kRemote);
  EXPECT_TRUE(HoleAt(g->ram_fd(), 0));
  EXPECT_TRUE(mem.MarkStale(0).ok()) << "already at the source: nothing to do";
  ASSERT_TRUE(mem.Relocate(1, PageState::kOffloaded).ok());
  EXPECT_EQ(mem.state(1), PageState::kOffloaded);
  EXPECT_TRUE(HoleAt(g->ram_fd(), 1));
  ASSERT_TRUE(mem.Relocate(2, PageState::kZero).ok());
  EXPECT_EQ(mem.state(2), PageState::kZero);
  ASSERT_TRUE(mem.Relocate(100, PageState::kOffloaded).ok());  // from kRemote
  EXPECT_EQ(mem.state(100), PageState::kOffloaded);
  EXPECT_FALSE(mem.Relocate(3, PageState::kResident).ok()) << "only the store or zero";
  EXPECT_FALSE(mem.MarkStale(2).ok()) << "a zero page has no stale copy to drop";
}

// LOCATIONS arrive as runs and the switchover waits for them: the run
// verbs must do exactly what the page-at-a-time ones did, page by page.
TEST(GuestMemoryTest, MarkStaleAndRelocateTakeWholeRuns) {
  MapSource store;
  auto g = StartGuest(&store, PageState::kRemote);
  ASSERT_NE(g, nullptr);
  GuestMemory& mem = g->memory();
  for (uint64_t i = 0; i < 16; ++i) ASSERT_TRUE(mem.InstallIncoming(i, PageOf(i, 1).data(), true).ok());
  std::vector<uint8_t> buf(kPageSize);

  ASSERT_TRUE(mem.MarkStale(2, 6).ok());
  for (uint64_t i = 2; i < 8; ++i) {
    EXPECT_EQ(mem.state(i), PageState::kRemote) << i;
    EXPECT_TRUE(HoleAt(g->ram_fd(), i)) << i;
  }
  for (uint64_t i : {1, 8}) {  // the neighbours keep their data
    EXPECT_EQ(mem.state(i), PageState::kResident) << i;
    ASSERT_TRUE(PreadFull(g->ram_fd(), buf.data(), kPageSize, static_cast<off_t>(PageOffset(i))).ok());
    EXPECT_EQ(buf, PageOf(i, 1)) << i;
  }
  // Resident, already at the source, resident again: two stretches punched.
  ASSERT_TRUE(mem.MarkStale(0, 10).ok());
  for (uint64_t i = 0; i < 10; ++i) {
    EXPECT_EQ(mem.state(i), PageState::kRemote) << i;
    EXPECT_TRUE(HoleAt(g->ram_fd(), i)) << i;
  }
  ASSERT_TRUE(PreadFull(g->ram_fd(), buf.data(), kPageSize, static_cast<off_t>(PageOffset(10))).ok());
  EXPECT_EQ(buf, PageOf(10, 1)) << "the page after the run is untouched";

  // Resident 10..15 and still-remote 16..21 go to the store in one call.
  ASSERT_TRUE(mem.Relocate(10, 12, PageState::kOffloaded).ok());
  for (uint64_t i = 10; i < 22; ++i) {
    EXPECT_EQ(mem.state(i), PageState::kOffloaded) << i;
    EXPECT_TRUE(HoleAt(g->ram_fd(), i)) << i;
  }
  ASSERT_TRUE(mem.Relocate(22, 4, PageState::kZero).ok());
  for (uint64_t i = 22; i < 26; ++i) EXPECT_EQ(mem.state(i), PageState::kZero) << i;
  ASSERT_TRUE(mem.Relocate(22, 4, PageState::kZero).ok()) << "already there: nothing to do";

  // A page that cannot move fails the run and leaves the rest as it was.
  ASSERT_TRUE(mem.Relocate(30, 1, PageState::kZero).ok());
  EXPECT_FALSE(mem.Relocate(28, 4, PageState::kOffloaded).ok()) << "page 30 is known zero";
  for (uint64_t i : {28, 29, 31}) EXPECT_EQ(mem.state(i), PageState::kRemote) << i;
  EXPECT_EQ(mem.count(PageState::kInFlight), 0u);
  EXPECT_FALSE(mem.MarkStale(20, 3).ok()) << "an offloaded page has no stale copy here";

  EXPECT_FALSE(mem.MarkStale(kPages - 1, 2).ok()) << "a run past the end is refused";
  EXPECT_FALSE(mem.Relocate(kPages, 1, PageState::kZero).ok()) << "a run past the end is refused";
  EXPECT_FALSE(mem.Relocate(UINT64_MAX, 2, PageState::kZero).ok()) << "a run that wraps is refused";
}

// Before GuestMemory, workers kept the RAM file's descriptor *number*: after
// `vm stop` closed it, the number could be reused by another VM's file and
// receive this VM's page writes. Now a worker holds the memory itself.
TEST(GuestMemoryTest, RetiredMemoryKeepsItsOwnFileAfterTheNumberIsReused) {
  MapSource store;
  auto g = StartGuest(&store, PageState::kRemote);
  ASSERT_NE(g, nullptr);
  std::shared_ptr<GuestMemory> worker = g->shared_memory();  // what a migration holds
  g.reset();  // the VM is stopped: its process, its folder, the owner's reference are gone
  worker->Retire();
  char tmpl[] = "/dev/shm/agile-other-XXXXXX";
  int other = ::mkstemp(tmpl);
  ASSERT_GE(other, 0);
  ASSERT_EQ(::ftruncate(other, static_cast<off_t>(kPages * kPageSize)), 0);
  auto placed = worker->InstallIncoming(0, PageOf(0, 9).data(), true);
  EXPECT_FALSE(placed.ok());
  EXPECT_EQ(placed.status().code(), Code::kUnavailable);
  EXPECT_TRUE(HoleAt(other, 0)) << "another file is never written";
  ::close(other);
  ::unlink(tmpl);
}

// The races: an evictor, a migration reader and the guest writing and
// verifying, all at once. Every page the reader sees is one whole
// generation; the guest never sees a wrong page; nothing stays in flight.
TEST(GuestMemoryRaceTest, EvictRefaultMigrationReadAndGuestWriteAgree) {
  MapSource store;
  auto g = StartGuest(&store);
  ASSERT_NE(g, nullptr);
  GuestMemory& mem = g->memory();
  ASSERT_EQ(*g->Command("write 1"), "ok");
  constexpr int kGenerations = 30;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> epoch{0};  // odd while the guest is writing a generation
  std::atomic<uint64_t> evicted{0}, reads{0}, bad_reads{0};
  std::thread evictor([&] {
    std::mt19937_64 rng(1);
    while (!stop.load()) evicted += Evict(mem, &store, rng() % (kPages - 32), 32);
  });
  std::thread reader([&] {
    std::mt19937_64 rng(2);
    std::vector<uint8_t> buf(kPageSize);
    while (!stop.load()) {
      uint64_t idx = rng() % kPages;
      uint64_t e0 = epoch.load();
      auto st = mem.ReadPage(idx, buf.data(), &store);
      uint64_t e1 = epoch.load();
      EXPECT_TRUE(st.ok()) << st.status().ToString();
      if (!st.ok()) break;
      ++reads;
      // A guest write may tear a resident page mid-read (pre-copy re-sends
      // pages written meanwhile); a page read while the guest was not
      // writing must be one whole generation.
      if (e0 == e1 && e0 % 2 == 0 && GenerationOf(idx, buf.data(), kGenerations) < 0) ++bad_reads;
    }
  });
  for (int gen = 2; gen <= kGenerations; ++gen) {
    ++epoch;
    ASSERT_EQ(*g->Command("write " + std::to_string(gen)), "ok");
    ++epoch;
    ASSERT_EQ(*g->Command("verify " + std::to_string(gen)), "ok") << "generation " << gen;
  }
  stop = true;
  evictor.join();
  reader.join();
  EXPECT_EQ(bad_reads.load(), 0u);
  EXPECT_EQ(mem.count(PageState::kInFlight), 0u);
  EXPECT_GT(evicted.load(), 0u);
  EXPECT_GT(reads.load(), 0u);
  EXPECT_GT(g->faults().stats().refault.load(), 0u);
  ASSERT_EQ(*g->Command("verify " + std::to_string(kGenerations)), "ok");
}

}  // namespace
}  // namespace agile::vm
