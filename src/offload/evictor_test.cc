// The Evictor against a real shim'd test process and an in-process
// agile-memd: pipelined batches keep every page's order (claim, drop PTEs,
// read, PUT acknowledged, punch, publish), and a PUT that fails part-way
// leaves the failed batch and the ones after it resident and intact.
#include "offload/evictor.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <memory>

#include "offload/memd_swap_store.h"
#include "offload/victim_policy.h"
#include "store/memd_server.h"
#include "store/page_store.h"
#include "vm/testing/guest_process.h"

namespace agile::offload {
namespace {

using vm::PageState;
using vm::testing::GuestProcess;

constexpr uint64_t kBatch = 2048;  // the Evictor's batch (evictor.cc)

// Pages of the RAM file that still hold memory (not punched).
uint64_t ResidentInFile(int fd, uint64_t pages) {
  uint64_t n = 0;
  for (uint64_t i = 0; i < pages; ++i)
    if (::lseek(fd, static_cast<off_t>(i * 4096), SEEK_DATA) == static_cast<off_t>(i * 4096)) ++n;
  return n;
}

struct Rig {
  std::unique_ptr<memd::PageStore> pages;
  std::unique_ptr<memd::MemdServer> server;
  std::unique_ptr<MemdSwapStore> store;
  std::unique_ptr<GuestProcess> guest;
  std::unique_ptr<Evictor> evictor;

  // A guest of `n` pages, all written with generation 1; memd holds at most
  // capacity_pages.
  static std::unique_ptr<Rig> Start(uint64_t n, uint64_t capacity_pages) {
    auto r = std::make_unique<Rig>();
    memd::PageStore::Options o;
    o.capacity_bytes = capacity_pages * memd::kPageSize;
    auto ps = memd::PageStore::Open(o);
    EXPECT_TRUE(ps.ok()) << ps.status().ToString();
    if (!ps.ok()) return nullptr;
    r->pages = std::move(ps).value();
    auto srv = memd::MemdServer::Start(r->pages.get(), HostPort{"127.0.0.1", 0});
    EXPECT_TRUE(srv.ok()) << srv.status().ToString();
    if (!srv.ok()) return nullptr;
    r->server = std::move(srv).value();
    r->store = std::make_unique<MemdSwapStore>(r->server->address().ToString(), "test-host", "test-vm");
    EXPECT_TRUE(r->store->Claim().ok());
    auto g = GuestProcess::Start(AGILE_SHIM_PATH, AGILE_SHM_GUEST_PATH, n, r->store.get());
    EXPECT_TRUE(g.ok()) << g.status().ToString();
    if (!g.ok()) return nullptr;
    r->guest = std::move(g).value();
    EXPECT_EQ(*r->guest->Command("write 1"), "ok");
    r->evictor = std::make_unique<Evictor>(&r->guest->memory(), r->store.get());
    return r;
  }
  vm::GuestMemory& memory() { return guest->memory(); }
};

std::vector<uint64_t> Range(uint64_t first, uint64_t end) {
  std::vector<uint64_t> v;
  for (uint64_t i = first; i < end; ++i) v.push_back(i);
  return v;
}

TEST(EvictorTest, PipelinedBatchesOffloadEveryPageAndItComesBackIntact) {
  const uint64_t n = 4 * kBatch + kBatch / 2;  // four full batches and a half one
  auto r = Rig::Start(n, n + 16);
  ASSERT_NE(r, nullptr);
  EvictReport rep;
  ASSERT_TRUE(r->evictor->EvictPages(Range(0, n), &rep).ok());
  EXPECT_EQ(rep.batches, 5u);
  EXPECT_EQ(rep.pages_offloaded, n);
  EXPECT_EQ(rep.bytes_sent, n * 4096);
  EXPECT_EQ(r->memory().count(PageState::kOffloaded), n);
  EXPECT_EQ(r->memory().count(PageState::kInFlight), 0u);
  EXPECT_EQ(ResidentInFile(r->guest->ram_fd(), n), 0u);
  EXPECT_EQ(r->pages->Stats().pages, n);
  // Every page refaults from memd with its bytes.
  EXPECT_EQ(*r->guest->Command("verify 1"), "ok");
  EXPECT_EQ(r->memory().count(PageState::kResident), n);
}

TEST(EvictorTest, ZeroPagesAreMarkedNotSentEvenAWholeBatchOfThem) {
  const uint64_t n = 3 * kBatch;
  auto r = Rig::Start(n, n + 16);
  ASSERT_NE(r, nullptr);
  // Batch 1 entirely zero, plus two scattered zero pages in batch 0 and 2.
  std::vector<uint8_t> zero(4096, 0);
  std::vector<uint64_t> zeros = Range(kBatch, 2 * kBatch);
  zeros.push_back(5);
  zeros.push_back(2 * kBatch + 77);
  for (uint64_t i : zeros) ASSERT_EQ(::pwrite(r->guest->ram_fd(), zero.data(), 4096, static_cast<off_t>(i * 4096)), 4096);
  EvictReport rep;
  ASSERT_TRUE(r->evictor->EvictPages(Range(0, n), &rep).ok());
  EXPECT_EQ(rep.pages_zero, zeros.size());
  EXPECT_EQ(rep.pages_offloaded, n - zeros.size());
  EXPECT_EQ(r->memory().count(PageState::kZero), zeros.size());
  EXPECT_EQ(r->memory().count(PageState::kOffloaded), n - zeros.size());
  EXPECT_EQ(r->memory().count(PageState::kInFlight), 0u);
  EXPECT_EQ(r->pages->Stats().pages, n - zeros.size());
  EXPECT_EQ(ResidentInFile(r->guest->ram_fd(), n), 0u);
}

TEST(EvictorTest, StoreFullMidwayLeavesTheRestResidentAndIntact) {
  const uint64_t n = 4 * kBatch;
  // Room for one batch and a bit: the second batch's PUT is refused while the
  // third is already claimed, dropped and read.
  auto r = Rig::Start(n, kBatch + 300);
  ASSERT_NE(r, nullptr);
  EvictReport rep;
  Status st = r->evictor->EvictPages(Range(0, n), &rep);
  EXPECT_EQ(st.code(), Code::kResourceExhausted) << st.ToString();
  EXPECT_EQ(rep.pages_offloaded, kBatch);
  EXPECT_EQ(r->memory().count(PageState::kOffloaded), kBatch);
  EXPECT_EQ(r->memory().count(PageState::kResident), n - kBatch);
  EXPECT_EQ(r->memory().count(PageState::kInFlight), 0u);
  EXPECT_EQ(ResidentInFile(r->guest->ram_fd(), n), n - kBatch);
  EXPECT_EQ(*r->guest->Command("verify 1"), "ok");
}

TEST(EvictorTest, EvictToReachesItsTargetInCallsOfSeveralBatches) {
  const uint64_t n = 10 * kBatch;  // more than one call's worth (8 batches)
  auto r = Rig::Start(n, n + 16);
  ASSERT_NE(r, nullptr);
  LastFaultPolicy policy(&r->memory());
  auto rep = r->evictor->EvictTo(kBatch / 4, &policy);
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_EQ(rep->resident_after, kBatch / 4);
  EXPECT_EQ(rep->pages_offloaded, n - kBatch / 4);
  EXPECT_EQ(r->memory().count(PageState::kInFlight), 0u);
  EXPECT_EQ(*r->guest->Command("verify 1"), "ok");
}

}  // namespace
}  // namespace agile::offload
