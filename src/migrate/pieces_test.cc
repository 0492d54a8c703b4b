// The migration pieces without QEMU: a shm_guest process (a plain process
// mapping a shmem RAM file under the real shim) stands in for the VM, and a
// socketpair for the connection to the destination, whose frames a Sink
// decodes and counts.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include "migrate/page_stream.h"
#include "migrate/postcopy_server.h"
#include "migrate/precopy.h"
#include "vm/testing/guest_process.h"
#include "vm/testing/stand_in.h"

namespace agile::migrate {
namespace {

using vm::testing::GuestProcess;

std::unique_ptr<GuestProcess> StartGuest(uint64_t pages) {
  auto g = GuestProcess::Start(AGILE_SHIM_PATH, AGILE_SHM_GUEST_PATH, pages);
  EXPECT_TRUE(g.ok()) << g.status().ToString();
  return g.ok() ? std::move(g).value() : nullptr;
}

bool HoldsGeneration(const uint8_t* data, uint64_t idx, uint64_t gen) {
  auto* w = reinterpret_cast<const uint64_t*>(data);
  for (size_t k = 0; k < wire::kMigPageSize / 8; ++k)
    if (w[k] != vm::testing::Pattern(idx, gen, k)) return false;
  return true;
}

// The destination end: counts each page received and checks it against the
// generation the guest wrote (when `gen` is set).
class Sink {
 public:
  explicit Sink(uint64_t gen = 0) : gen_(gen) {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    out_ = std::make_unique<Channel>(UniqueFd(fds[0]));
    in_ = std::make_unique<Channel>(UniqueFd(fds[1]));
    thread_ = std::thread([this] { Loop(); });
  }
  ~Sink() { Close(); }
  Channel* channel() { return out_.get(); }
  // Ends the stream; everything sent before is counted once this returns.
  void Close() {
    if (!thread_.joinable()) return;
    out_->Shutdown();
    thread_.join();
  }
  std::map<uint64_t, int> pages;  // page -> times received
  uint64_t bad = 0;               // pages with the wrong content (not all zeros, with no gen)
  uint64_t rounds = 0;            // ROUND frames

 private:
  void Loop() {
    std::vector<uint8_t> payload;
    std::vector<wire::MigPage> got;
    for (;;) {
      auto h = in_->Receive(&payload, -1);
      if (!h.ok()) return;
      if (h->type == static_cast<uint16_t>(wire::MigMsg::kRound)) ++rounds;
      if (h->type != static_cast<uint16_t>(wire::MigMsg::kPages)) continue;
      uint32_t round;
      got.clear();
      EXPECT_TRUE(wire::DecodePages(payload, &round, &got).ok());
      EXPECT_LE(got.size(), wire::kMigMaxPagesPerFrame);
      for (const wire::MigPage& p : got) {
        ++pages[p.index];
        if (gen_ != 0 && !HoldsGeneration(p.data, p.index, gen_)) ++bad;
        if (gen_ == 0 && std::any_of(p.data, p.data + wire::kMigPageSize, [](uint8_t b) { return b != 0; })) ++bad;
      }
    }
  }
  uint64_t gen_;
  std::unique_ptr<Channel> out_, in_;
  std::thread thread_;
};

std::vector<uint64_t> All(uint64_t n) {
  std::vector<uint64_t> v(n);
  for (uint64_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

// A guest of `pages` pages (written with generation gen, unless 0) with its
// page stream to a Sink.
struct Source {
  static std::unique_ptr<Source> Start(uint64_t pages, uint64_t gen) {
    auto g = StartGuest(pages);
    if (g == nullptr) return nullptr;
    if (gen != 0) {
      EXPECT_EQ(*g->Command("write " + std::to_string(gen)), "ok");
    }
    return std::unique_ptr<Source>(new Source(std::move(g), gen));
  }
  vm::GuestMemory* memory() { return &guest->memory(); }

  std::unique_ptr<GuestProcess> guest;
  Sink sink;
  PageStream stream;

 private:
  Source(std::unique_ptr<GuestProcess> g, uint64_t gen)
      : guest(std::move(g)), sink(gen), stream(&guest->memory(), nullptr, sink.channel()) {}
};

TEST(PageStreamTest, SendsEveryResidentPageOnceWithItsContent) {
  constexpr uint64_t kPages = 1000;  // not a multiple of a frame's 64
  auto src = Source::Start(kPages, 3);
  ASSERT_NE(src, nullptr);
  uint64_t sent = 0;
  std::vector<uint64_t> idx = All(kPages);
  std::reverse(idx.begin(), idx.end());  // any order in
  ASSERT_TRUE(src->stream.Send(idx, 0, &sent).ok());
  src->sink.Close();
  EXPECT_EQ(sent, kPages);
  EXPECT_EQ(src->stream.pages_sent(), kPages);
  EXPECT_EQ(src->stream.page_bytes_sent(), kPages * 4096);
  EXPECT_EQ(src->sink.pages.size(), kPages);
  EXPECT_EQ(src->sink.bad, 0u);
  for (auto& [page, times] : src->sink.pages) EXPECT_EQ(times, 1) << "page " << page;
}

TEST(PageStreamTest, SkipsZeroPages) {
  auto src = Source::Start(256, 0);
  ASSERT_NE(src, nullptr);
  uint64_t sent = 0;
  ASSERT_TRUE(src->stream.Send(All(256), 0, &sent).ok());
  src->sink.Close();
  EXPECT_EQ(sent, 0u);
  EXPECT_TRUE(src->sink.pages.empty());
}

PrecopyLoop::Hooks NoHooks() {
  PrecopyLoop::Hooks h;
  h.cancelled = [] { return Status::Ok(); };
  h.peer = [] { return Status::Ok(); };
  return h;
}

TEST(PrecopyLoopTest, IdleGuestConvergesInOneRound) {
  constexpr uint64_t kPages = 4096;
  auto src = Source::Start(kPages, 1);
  ASSERT_NE(src, nullptr);
  PrecopyResult r;
  ASSERT_TRUE(PrecopyLoop(src->memory(), &src->stream, {}, NoHooks()).Run(&r).ok());
  src->sink.Close();
  EXPECT_EQ(r.rounds, 1u);
  EXPECT_TRUE(r.converged);
  EXPECT_FALSE(r.tail);
  EXPECT_TRUE(r.dirty.empty());
  EXPECT_EQ(r.pages_sent, kPages);
  EXPECT_NE(r.scanner, nullptr);  // left armed for the stop-and-copy's last scan
  EXPECT_EQ(src->sink.pages.size(), kPages);
  EXPECT_EQ(src->sink.bad, 0u);
  EXPECT_EQ(src->sink.rounds, 1u);
}

// A guest that rewrites all of its RAM over and over while the rounds run.
class BusyGuest {
 public:
  explicit BusyGuest(GuestProcess* g) : thread_([this, g] {
      for (uint64_t gen = 2; !stop_; ++gen)
        if (!g->Command("write " + std::to_string(gen)).ok()) return;
    }) {}
  ~BusyGuest() {
    stop_ = true;
    thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Pre-copy of a guest rewriting all of its RAM, with a downtime target
// nothing left over meets: it cannot converge, whatever ends the rounds. The
// link is slow enough (16 MiB/s) that the guest rewrites all of it while a
// round sends.
PrecopyResult RunBusy(wire::MigMode mode) {
  PrecopyOptions o;
  o.mode = mode;
  o.max_downtime_ms = 0;
  PrecopyResult r;
  auto src = Source::Start(4096, 1);
  if (src == nullptr) return r;
  src->sink.channel()->set_rate_limit(16 << 20);
  {
    BusyGuest busy(src->guest.get());
    EXPECT_TRUE(PrecopyLoop(src->memory(), &src->stream, o, NoHooks()).Run(&r).ok());
  }
  src->sink.Close();
  EXPECT_FALSE(r.converged);
  EXPECT_GT(r.dirty.size(), 64u);
  EXPECT_LE(r.rounds, o.max_rounds);
  EXPECT_EQ(src->sink.rounds, r.rounds);
  return r;
}

TEST(PrecopyLoopTest, BusyGuestEndsWithAPostcopyTail) {
  PrecopyResult r = RunBusy(wire::MigMode::kAgile);
  EXPECT_TRUE(r.tail);
  EXPECT_LT(r.rounds, PrecopyOptions().max_rounds);  // the tail, not the cap, ended it
}

TEST(PrecopyLoopTest, BusyGuestWithoutTailStopsForLackOfProgress) {
  PrecopyResult r = RunBusy(wire::MigMode::kPrecopy);  // no tail in plain pre-copy
  EXPECT_FALSE(r.tail);
  EXPECT_GE(r.rounds, 3u);  // two rounds after the first without progress
}

TEST(PrecopyLoopTest, CancelStopsTheRounds) {
  auto src = Source::Start(256, 0);
  ASSERT_NE(src, nullptr);
  PrecopyLoop::Hooks h = NoHooks();
  h.cancelled = [] { return Unavailable("cancelled"); };
  PrecopyResult r;
  EXPECT_EQ(PrecopyLoop(src->memory(), &src->stream, {}, h).Run(&r).code(), Code::kUnavailable);
  EXPECT_EQ(r.rounds, 0u);
}

TEST(PostcopyServerTest, ServesDemandWithPrepagingAndNeverSendsAPageTwice) {
  constexpr uint64_t kPages = 256;
  auto src = Source::Start(kPages, 5);
  ASSERT_NE(src, nullptr);
  PostcopyServer server(src->memory(), &src->stream, /*prepage=*/4);
  ASSERT_TRUE(server.Serve({10}, 0, true).ok());    // 10 and 11..14
  ASSERT_TRUE(server.Serve({12}, 0, true).ok());    // sent already with 10; its prepaging brings 15, 16
  ASSERT_TRUE(server.Serve({254}, 0, true).ok());   // 254, 255: prepaging stops at the end
  EXPECT_EQ(server.demand(), 2u);                   // 10 and 254: 12 was not sent for its request
  EXPECT_EQ(server.postcopied(), 9u);
  ASSERT_TRUE(server.Push(nullptr, 0, nullptr).ok());
  ASSERT_TRUE(server.Serve({100}, 0, true).ok());   // after the push: nothing left
  src->sink.Close();
  EXPECT_EQ(server.postcopied(), kPages);
  EXPECT_EQ(src->sink.pages.size(), kPages);
  EXPECT_EQ(src->sink.bad, 0u);
  for (auto& [page, times] : src->sink.pages) EXPECT_EQ(times, 1) << "page " << page;
}

TEST(PostcopyServerTest, TailScopeResendsOnlyTheTail) {
  constexpr uint64_t kPages = 128;
  auto src = Source::Start(kPages, 2);
  ASSERT_NE(src, nullptr);
  PostcopyServer server(src->memory(), &src->stream, /*prepage=*/2);
  ASSERT_TRUE(server.Serve({3}, 0, false).ok());  // before the switchover: not post-copied
  EXPECT_EQ(server.postcopied(), 0u);
  std::vector<uint8_t> tail(kPages, 0);
  tail[4] = tail[50] = tail[51] = 1;
  bool locations = false;
  ASSERT_TRUE(server.ScopeToTail(tail, [&] {
    locations = true;
    return Status::Ok();
  }).ok());
  EXPECT_TRUE(locations);
  ASSERT_TRUE(server.Serve({50}, 0, true).ok());  // 50, 51; 52 is not in the tail
  ASSERT_TRUE(server.Push(&tail, 0, nullptr).ok());
  src->sink.Close();
  std::map<uint64_t, int> want = {{3, 1}, {4, 2}, {5, 1}, {50, 1}, {51, 1}};
  EXPECT_EQ(src->sink.pages, want);
  EXPECT_EQ(server.postcopied(), 3u);
}

TEST(PostcopyServerTest, AfterARescopeAListedPageThatIsAHoleHereGoesAsZeros) {
  // A destination's RESUME lists what it lacks; a page skipped as "zero"
  // (LOCATIONS would have said so) would leave it waiting at DONE for good.
  constexpr uint64_t kPages = 64;
  auto src = Source::Start(kPages, 0);  // never written: every page a hole
  ASSERT_NE(src, nullptr);
  PostcopyServer server(src->memory(), &src->stream, /*prepage=*/2);
  ASSERT_TRUE(server.Push(nullptr, 0, nullptr).ok());  // before: zero pages are not sent
  std::vector<uint8_t> missing(kPages, 0);
  missing[5] = missing[6] = missing[40] = 1;
  server.Rescope(missing);
  ASSERT_TRUE(server.Serve({5}, 0, true).ok());  // 5, 6 (7, 8 are not listed)
  ASSERT_TRUE(server.Push(nullptr, 0, nullptr).ok());
  src->sink.Close();
  std::map<uint64_t, int> want = {{5, 1}, {6, 1}, {40, 1}};
  EXPECT_EQ(src->sink.pages, want);
  EXPECT_EQ(src->sink.bad, 0u);
}

}  // namespace
}  // namespace agile::migrate
