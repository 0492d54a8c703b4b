// agiled restarts under a running VM process, end to end at the library
// level: a real process (shm_guest) with the real shim preloaded loses its
// agiled (connection and uffd copy closed, as kill -9 closes them), keeps
// running with its faulting thread waiting, reconnects to a new listener on
// the same socket with backoff, and the "new agiled" rebuilds the page states
// from the RAM file and the location map and serves the waiting faults with
// the right data: pages offloaded before the crash come back from the store.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "vm/guest_memory.h"
#include "vm/location_map.h"
#include "base/io.h"
#include "base/socket.h"
#include "base/testing/scratch_dir.h"
#include "vm/testing/guest_process.h"
#include "vm/testing/map_source.h"

namespace agile::vm {
namespace {

using testing::GuestProcess;
constexpr uint64_t kPages = 1024;

using testing::MapSource;

// Offloads [first, first+count) the way the evictor does.
size_t Evict(GuestMemory& mem, MapSource* store, uint64_t first, uint64_t count) {
  std::vector<uint64_t> want;
  for (uint64_t i = first; i < first + count; ++i) want.push_back(i);
  std::vector<uint64_t> claimed = mem.ClaimResident(want);
  for (uint64_t i : claimed) EXPECT_TRUE(mem.DropPtes(i, 1).ok());
  for (uint64_t i : claimed) {
    auto p = mem.ClaimedRun(i, 1);
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    if (p.ok()) store->Put(i, *p);
  }
  EXPECT_TRUE(mem.PublishOffloaded(claimed, {}).ok());
  return claimed.size();
}

class ShimReconnectTest : public ::testing::Test {
 protected:
  ScratchDir scratch_{"agile-reconnect"};
  const std::string dir_ = scratch_.path();
  const std::string map_path_ = dir_ + "/locations";
};

TEST_F(ShimReconnectTest, VmSurvivesAgiledRestartAndOffloadedPagesComeBack) {
  MapSource store;
  auto g = GuestProcess::Start(AGILE_SHIM_PATH, AGILE_SHM_GUEST_PATH, kPages, &store);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  auto& gp = **g;
  {
    auto map = LocationMap::Create(map_path_, kPages);
    ASSERT_TRUE(map.ok()) << map.status().ToString();
    gp.memory().AttachLocationMap(std::move(map).value());
  }
  ASSERT_EQ(*gp.Command("write 7"), "ok");
  // Two thirds offloaded: the first 682 pages live only in the store now.
  ASSERT_EQ(Evict(gp.memory(), &store, 0, 682), 682u);
  ASSERT_EQ(gp.memory().count(PageState::kOffloaded), 682u);

  gp.DropAgiled();
  // The VM process keeps running; its verify pass faults on an offloaded page
  // and waits (nobody serves the uffd), instead of dying or reading zeros.
  ASSERT_TRUE(gp.Send("verify 7").ok());
  EXPECT_FALSE(gp.AnswerWithin(500));
  EXPECT_TRUE(gp.process().running() && !gp.process().Poll()) << gp.process().ExitDescription();

  // A new agiled: the shim reconnects within its backoff (at most 1 s).
  Status s = gp.Readopt(&store, map_path_);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(gp.memory().count(PageState::kResident) + gp.memory().count(PageState::kOffloaded), kPages);
  ASSERT_TRUE(gp.AnswerWithin(10000));
  EXPECT_EQ(*gp.Command(""), "ok");  // every page verified: offloaded ones refaulted with their data
  EXPECT_EQ(gp.memory().count(PageState::kOffloaded), 0u);
  EXPECT_EQ(gp.faults().stats().refault.load() + gp.faults().stats().prefetched.load(), 682u);

  // The control channel works over the new link (DROP_PTES inside the process).
  EXPECT_TRUE(gp.memory().DropPtes(0, 16).ok());
  ASSERT_EQ(*gp.Command("verify 7"), "ok");
}

TEST_F(ShimReconnectTest, DataInTheRamFileWinsOverAStaleOffloadedBit) {
  MapSource store;
  auto g = GuestProcess::Start(AGILE_SHIM_PATH, AGILE_SHM_GUEST_PATH, kPages, &store);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  auto& gp = **g;
  auto map = LocationMap::Create(map_path_, kPages);
  ASSERT_TRUE(map.ok());
  gp.memory().AttachLocationMap(std::move(map).value());
  ASSERT_EQ(*gp.Command("write 3"), "ok");
  ASSERT_EQ(Evict(gp.memory(), &store, 0, 100), 100u);
  // The guest rewrites everything (the 100 pages are refaulted, then hold gen 4
  // while the store still has gen 3) ...
  ASSERT_EQ(*gp.Command("write 4"), "ok");
  // ... and a crash between a record and its punch leaves a bit set over data:
  // simulate one on a page that stayed resident.
  {
    auto again = LocationMap::Open(map_path_, kPages);
    ASSERT_TRUE(again.ok());
    again->Set(500, true);
  }
  gp.DropAgiled();
  ASSERT_TRUE(gp.Readopt(&store, map_path_).ok());
  EXPECT_EQ(gp.memory().count(PageState::kOffloaded), 0u);
  EXPECT_EQ(gp.memory().count(PageState::kResident), kPages);
  ASSERT_EQ(*gp.Command("verify 4"), "ok");
}

TEST_F(ShimReconnectTest, NeverTouchedPagesStayZeroAfterReadoption) {
  MapSource store;
  auto g = GuestProcess::Start(AGILE_SHIM_PATH, AGILE_SHM_GUEST_PATH, kPages, &store);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  auto& gp = **g;
  gp.DropAgiled();
  ASSERT_TRUE(gp.Readopt(&store, "").ok());
  EXPECT_EQ(gp.memory().count(PageState::kZero), kPages);
  ASSERT_EQ(*gp.Command("write 1"), "ok");
  EXPECT_EQ(gp.faults().stats().first_touch.load(), kPages);
}

// An arriving post-copy VM re-adopted after a restart: its holes are
// pages never touched, pages the source listed as zero (punched), and pages
// still at the source. Only the list recorded at switchover tells the last
// ones apart; they must come back kRemote - the guest waits for them and
// then reads their data - never as zero pages (invariant 2).
TEST_F(ShimReconnectTest, PagesListedAsStillAtTheSourceStayRemoteAfterReadoption) {
  MapSource store;
  auto g = GuestProcess::Start(AGILE_SHIM_PATH, AGILE_SHM_GUEST_PATH, kPages, &store);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  auto& gp = **g;
  ASSERT_EQ(*gp.Command("write 5"), "ok");
  // Pages 300..399 become holes holding nothing here (as pages not received
  // yet are), their content kept aside as "at the source".
  std::vector<uint64_t> want;
  for (uint64_t i = 300; i < 400; ++i) want.push_back(i);
  std::vector<uint64_t> claimed = gp.memory().ClaimResident(want);
  ASSERT_EQ(claimed.size(), want.size());
  std::map<uint64_t, std::vector<uint8_t>> at_source;
  for (uint64_t i : claimed) {
    ASSERT_TRUE(gp.memory().DropPtes(i, 1).ok());
    auto p = gp.memory().ClaimedRun(i, 1);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    at_source[i].assign(*p, *p + 4096);
  }
  ASSERT_TRUE(gp.memory().PublishOffloaded({}, claimed).ok());  // punched: a hole, no offloaded bit
  std::vector<uint8_t> remote(kPages, 0);
  for (uint64_t i : claimed) remote[i] = 1;

  gp.DropAgiled();
  ASSERT_TRUE(gp.Readopt(&store, "", 10000, &remote).ok());
  EXPECT_EQ(gp.memory().count(PageState::kRemote), 100u);
  EXPECT_EQ(gp.memory().count(PageState::kResident), kPages - 100);
  // The guest's verify pass reaches page 300 and waits: no zero page for it.
  ASSERT_TRUE(gp.Send("verify 5").ok());
  EXPECT_FALSE(gp.AnswerWithin(1000)) << "a page still at the source was served without its data";
  EXPECT_EQ(gp.faults().stats().first_touch.load(), 0u);
  // The source's pages arrive: the waiting vCPU reads their data.
  for (const auto& [i, data] : at_source) {
    auto placed = gp.memory().InstallIncoming(i, data.data(), /*overwrite_resident=*/false);
    ASSERT_TRUE(placed.ok() && *placed) << i;
  }
  ASSERT_TRUE(gp.AnswerWithin(10000));
  EXPECT_EQ(*gp.Command(""), "ok");
  EXPECT_EQ(gp.memory().count(PageState::kRemote), 0u);

  // Without the list the same holes would be zero pages: what the record is for.
  gp.DropAgiled();
  ASSERT_TRUE(gp.Readopt(&store, "").ok());
  EXPECT_EQ(gp.memory().count(PageState::kZero), 0u);  // the pages arrived: data in the file
}

// What "a hole is a page not received" rests on: a page the source sent is
// written into the RAM file (InstallIncoming's pwrite), and on tmpfs even an
// all-zero write allocates the page - it is data at recovery, not a hole.
TEST_F(ShimReconnectTest, AnAllZeroPageWrittenIntoATmpfsFileIsDataNotAHole) {
  const std::string path = "/dev/shm/agile-zero-" + std::to_string(::getpid());
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  ASSERT_TRUE(fd) << strerror(errno);
  ::unlink(path.c_str());
  ASSERT_EQ(::ftruncate(fd.get(), 16 * 4096), 0);
  std::vector<uint8_t> zeros(4096, 0);
  ASSERT_TRUE(PwriteFull(fd.get(), zeros.data(), zeros.size(), 5 * 4096).ok());
  EXPECT_EQ(::lseek(fd.get(), 0, SEEK_DATA), 5 * 4096);
  EXPECT_EQ(::lseek(fd.get(), 5 * 4096, SEEK_HOLE), 6 * 4096);
}

TEST_F(ShimReconnectTest, ARefusalOnReconnectionEndsTheProcess) {
  MapSource store;
  auto g = GuestProcess::Start(AGILE_SHIM_PATH, AGILE_SHM_GUEST_PATH, kPages, &store);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  auto& gp = **g;
  gp.DropAgiled();
  // An agiled that does not know this VM refuses it: the shim must not let
  // it run unmanaged.
  auto listen = UnixListen(gp.shim_sock());
  ASSERT_TRUE(listen.ok());
  UniqueFd uffd;
  auto link = ShimLink::Accept(listen->get(), "/not/this/vm", kPages * 4096, 10000, gp.process().pidfd(), &uffd);
  EXPECT_FALSE(link.ok());
  ASSERT_TRUE(gp.process().Wait(10000));
  EXPECT_EQ(gp.process().ExitDescription(), "exited with code 78");
}

// A shim of some other process (an orphaned QEMU whose agiled and state dir
// are gone reconnects to the same path) must not be taken for this VM's: the
// kernel's peer credentials tell it apart, it is refused, and the handover of
// the process we expect still goes through.
TEST_F(ShimReconnectTest, AnotherProcessIsRefusedAndTheExpectedOneStillHandsOver) {
  MapSource store;
  auto g = GuestProcess::Start(AGILE_SHIM_PATH, AGILE_SHM_GUEST_PATH, kPages, &store);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  auto& gp = **g;
  gp.DropAgiled();
  auto listen = UnixListen(gp.shim_sock());
  ASSERT_TRUE(listen.ok());
  // The stranger (this test process) is first in the accept queue.
  auto stranger = ConnectAddress("unix:" + gp.shim_sock());
  ASSERT_TRUE(stranger.ok()) << stranger.status().ToString();
  UniqueFd uffd;
  auto link = ShimLink::Accept(listen->get(), gp.ram_path(), kPages * 4096, 10000, gp.process().pidfd(), &uffd);
  ASSERT_TRUE(link.ok()) << link.status().ToString();
  EXPECT_EQ(link->mapping().pid, static_cast<uint32_t>(gp.process().pid()));
  // The stranger got a refusal frame, not silence.
  pollfd p{stranger->get(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 1000), 1);
}

// The state dir of a killed agiled deleted (a test's teardown, an operator's
// cleanup): no agiled will ever come back for the VM, so the shim ends it
// once the socket's folder has been gone for its bound (AGILE_SHIM_ORPHAN_MS,
// 1 s here; 30 s by default), but not while the folder is there, however long
// agiled takes to return.
TEST_F(ShimReconnectTest, TheProcessEndsOnceItsSocketFolderStaysGone) {
  MapSource store;
  ::setenv("AGILE_SHIM_ORPHAN_MS", "1000", 1);
  auto g = GuestProcess::Start(AGILE_SHIM_PATH, AGILE_SHM_GUEST_PATH, kPages, &store);
  ::unsetenv("AGILE_SHIM_ORPHAN_MS");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  auto& gp = **g;
  gp.DropAgiled();
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  ASSERT_FALSE(gp.process().Poll()) << "ended while its folder was there: " << gp.process().ExitDescription();
  std::string folder = std::filesystem::path(gp.shim_sock()).parent_path().string();
  auto t0 = std::chrono::steady_clock::now();
  std::filesystem::remove_all(folder);
  ASSERT_TRUE(gp.process().Wait(10000)) << "the orphan kept retrying";
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(gp.process().ExitDescription(), "exited with code 78");
  EXPECT_GE(ms, 900);
  EXPECT_LT(ms, 4000);
}

}  // namespace
}  // namespace agile::vm
