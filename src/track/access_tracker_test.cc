// AccessTracker against a real child process hammering known hot sets under
// the real shim and fault server: WSS convergence, following a moving hot
// set, coldest-first order, the 16-bit epoch rebase, budget adaptation, and
// page contents across many drop/refault cycles.
#include "track/access_tracker.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <set>
#include <thread>

#include "track/testing/guest.h"

namespace agile::track {
namespace {

using testing::Ok;
using testing::Range;
using testing::StartTrackGuest;

void SleepMs(uint64_t ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

class AccessTrackerTest : public ::testing::Test {
 protected:
  void Start(uint64_t pages, const TrackerOptions& opts) {
    g_ = StartTrackGuest(pages);
    ASSERT_NE(g_, nullptr);
    auto t = AccessTracker::Create(&g_->memory(), &g_->faults().stats(), opts);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    tracker_ = std::move(t).value();
    // GuestProcess starts its fault server before we can hand it the
    // observer. No fault has happened yet (the guest only mapped its RAM),
    // and the next one follows our first command through the kernel.
    g_->faults().set_access_observer(tracker_.get());
  }
  void TearDown() override {
    // Fault server first (it calls the tracker), tracker thread before that.
    if (tracker_) tracker_->Stop();
    g_.reset();
    tracker_.reset();
  }
  void TickAndSleep(int n, uint64_t ms) {
    for (int i = 0; i < n; ++i) {
      Status s = tracker_->Tick();
      ASSERT_TRUE(s.ok()) << s.ToString();
      SleepMs(ms);
    }
  }
  // Long enough for the estimate to settle: the window plus two read
  // coverage cycles at the tracker's current pace.
  uint64_t SettleMs(double window_s) const {
    TrackerStats st = tracker_->stats();
    return static_cast<uint64_t>(window_s * 1000 + 2 * st.slices * st.period_ms + 500);
  }
  void ExpectNoneOf(const std::vector<uint64_t>& pages, uint64_t first, uint64_t count) {
    for (uint64_t p : pages) ASSERT_FALSE(p >= first && p < first + count) << "hot page " << p << " reported cold";
  }
  static void Print(const char* phase, const TrackerStats& s, uint64_t wss) {
    std::printf("%-12s wss=%llu ticks=%llu period=%.0fms slices=%u scan=%.2fms drop=%.2fms dropped=%llu "
                "minor=%llu fault=%.2fus est_cpu=%.2f%%\n",
                phase, (unsigned long long)wss, (unsigned long long)s.ticks, s.period_ms, s.slices, s.last_scan_ms,
                s.last_drop_ms, (unsigned long long)s.last_dropped, (unsigned long long)s.minor_faults,
                s.fault_cost_us, s.est_cpu_pct);
  }

  std::unique_ptr<vm::testing::GuestProcess> g_;
  std::unique_ptr<AccessTracker> tracker_;
};

// The sampled estimate, at the DEFAULT tracking budget (where the coverage
// takes many periods per cycle): within 10% of the hot set three sampler
// intervals after the guest starts it (two pooled intervals of the new
// phase), and again after the hot set changes size (issue: the coverage's
// figure lagged a phase change by minutes).
TEST_F(AccessTrackerTest, SampledWssIsRightWithinThreeIntervalsAtTheDefaultBudget) {
  constexpr uint64_t kPages = 32768, kHot = 8192;  // 32 MiB hot of 128 MiB
  TrackerOptions o;  // default cpu_budget_pct
  o.sampler.interval_ms = 2000;  // the guest touches its whole hot set well within it, even under load
  Start(kPages, o);
  Ok(*g_, "fill 1 " + Range(0, kPages));
  tracker_->Start();
  auto settle_and_check = [&](const char* phase, uint64_t hot) {
    SleepMs(3 * o.sampler.interval_ms + 300);
    int64_t est = tracker_->SampledWssPages();
    std::printf("%-10s sampled=%lld coverage=%llu (hot %llu)\n", phase, (long long)est,
                (unsigned long long)tracker_->WssPages(1.0), (unsigned long long)hot);
    EXPECT_NEAR(static_cast<double>(est), static_cast<double>(hot), 0.1 * static_cast<double>(hot)) << phase;
  };
  Ok(*g_, "hot " + Range(0, kHot) + " 30");
  settle_and_check("start", kHot);
  Ok(*g_, "stop");
  Ok(*g_, "hot " + Range(10000, 2 * kHot) + " 0");  // twice as large, elsewhere, reads only
  settle_and_check("grown", 2 * kHot);
}

TEST_F(AccessTrackerTest, WssConvergesToAHotSetAndFollowsItWhenItMoves) {
  constexpr uint64_t kPages = 32768, kHot = 4096;  // 16 MiB hot of 128 MiB
  constexpr double kWindow = 2.0;
  TrackerOptions o;
  o.min_period_ms = 250;
  // Faults cost ~30-70 us each on the project machine (a nested VM), so the
  // default 2% would take tens of seconds per coverage cycle; track_bench
  // measures the default.
  o.cpu_budget_pct = 20;
  Start(kPages, o);
  Ok(*g_, "fill 1 " + Range(0, kPages));
  tracker_->Start();

  // The settle time follows the tracker's pace, which adapts (more slices
  // per cycle) when a move makes its faults cost more: wait the settle time
  // as it stands, then, if the estimate is not there yet, as long again at
  // the adapted pace - a bound, not a fixed sleep taken from stale stats.
  auto settle = [&] {
    SleepMs(SettleMs(kWindow));
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(SettleMs(kWindow));
    while (std::fabs(static_cast<double>(tracker_->WssPages(kWindow)) - kHot) > 0.1 * kHot &&
           std::chrono::steady_clock::now() < until)
      SleepMs(100);
  };
  auto check = [&](const char* phase, uint64_t first) {
    uint64_t wss = tracker_->WssPages(kWindow);
    Print(phase, tracker_->stats(), wss);
    EXPECT_NEAR(static_cast<double>(wss), kHot, 0.1 * kHot) << phase;
    ExpectNoneOf(tracker_->ColdestResident(kPages, 1.0), first, kHot);
  };
  Ok(*g_, "hot " + Range(4096, kHot) + " 30");  // mixed reads and writes
  settle();
  check("mixed", 4096);
  Ok(*g_, "stop");
  Ok(*g_, "hot " + Range(4096, kHot) + " 0");  // reads only: seen through dropped PTEs alone
  settle();
  check("reads", 4096);
  Ok(*g_, "stop");
  Ok(*g_, "hot " + Range(20000, kHot) + " 0");
  settle();
  check("moved", 20000);
  // The old hot set has gone cold, and reads as such.
  auto cold = tracker_->ColdestResident(kPages, 1.0);
  std::set<uint64_t> cold_set(cold.begin(), cold.end());
  uint64_t old_cold = 0;
  for (uint64_t p = 4096; p < 4096 + kHot; ++p) old_cold += cold_set.count(p);
  EXPECT_GE(old_cold, kHot * 9 / 10);

  // The coverage cycle that saw the move costs more than the budget (the new
  // hot set faults before adaptation has counted it: up to 56% measured at a
  // 20% budget under load); with the hot set steady, adaptation must bring
  // the cost within twice the budget in a few cycles.
  TrackerStats st = tracker_->stats();
  for (uint64_t waited = 0; st.est_cpu_pct > 2 * o.cpu_budget_pct && waited < 4 * SettleMs(0); waited += 250) {
    SleepMs(250);
    st = tracker_->stats();
  }
  Ok(*g_, "stop");
  Print("steady", st, tracker_->WssPages(kWindow));
  EXPECT_GT(st.fault_cost_us, 0);
  EXPECT_LE(st.est_cpu_pct, 2 * o.cpu_budget_pct);
  EXPECT_EQ(st.errors, 0u);
  tracker_->Stop();
  Ok(*g_, "verify 1 " + Range(0, kPages));
}

TEST_F(AccessTrackerTest, ColdestFirstWithIdleAgesFromTheDrops) {
  constexpr uint64_t kPages = 4096;
  TrackerOptions o;
  o.read_cycle = 1;
  Start(kPages, o);
  EXPECT_EQ(tracker_->IdleSeconds(7), std::nullopt) << "not observed yet";
  Ok(*g_, "fill 1 " + Range(0, kPages));
  SleepMs(20);  // the fault server tells the tracker after waking the guest: let it catch up
  EXPECT_EQ(tracker_->WssPages(10), kPages) << "first touches count";
  EXPECT_EQ(tracker_->IdleSeconds(7), 0.0);
  // Two ticks settle an access: the first scan still reports the page
  // written (the fill, or the UFFDIO_CONTINUE of a read), so it keeps its
  // PTE; the second drops it.
  TickAndSleep(1, 0);
  EXPECT_EQ(tracker_->stats().last_kept, kPages);
  TickAndSleep(1, 500);  // everything idle from here
  EXPECT_EQ(tracker_->stats().last_dropped, kPages);
  Ok(*g_, "read " + Range(0, 100));
  TickAndSleep(2, 500);
  Ok(*g_, "read " + Range(100, 100));
  TickAndSleep(2, 0);
  EXPECT_EQ(tracker_->stats().minor_faults, 200u);

  // Idle since about 1.0 s (the rest), 0.5 s (0-99) and 0 s (100-199).
  auto all = tracker_->ColdestResident(kPages, 0);
  ASSERT_EQ(all.size(), kPages);
  for (uint64_t i = 0; i < kPages - 200; ++i) ASSERT_EQ(all[i], 200 + i);
  for (uint64_t i = 0; i < 200; ++i) ASSERT_EQ(all[kPages - 200 + i], i);
  auto ten = tracker_->ColdestResident(10, 0);
  EXPECT_EQ(ten, std::vector<uint64_t>(all.begin(), all.begin() + 10));
  EXPECT_EQ(tracker_->ColdestResident(kPages, 0.75).size(), kPages - 200);
  EXPECT_EQ(tracker_->WssPages(0.75), 200u);
  EXPECT_EQ(tracker_->WssPages(100), kPages);

  double old_idle = *tracker_->IdleSeconds(500), mid_idle = *tracker_->IdleSeconds(50);
  double new_idle = *tracker_->IdleSeconds(150);
  EXPECT_GT(old_idle, 0.9);
  EXPECT_GT(mid_idle, 0.45);
  EXPECT_LT(mid_idle, old_idle);
  EXPECT_LT(new_idle, 0.25);

  // A page written every period keeps its PTE: one fault, then none.
  for (int i = 0; i < 4; ++i) {
    Ok(*g_, "write " + Range(3000, 1));
    TickAndSleep(1, 0);
    EXPECT_EQ(tracker_->IdleSeconds(3000), 0.0);
  }
  EXPECT_EQ(tracker_->stats().minor_faults, 201u);
  EXPECT_EQ(tracker_->stats().last_kept, 1u);
}

TEST_F(AccessTrackerTest, EpochRebaseNeverOverstatesIdleness) {
  constexpr uint64_t kPages = 1024;
  TrackerOptions o;
  o.read_cycle = 1;
  o.history_epochs = 4;
  o.max_epoch = 9;  // rebase every few ticks
  Start(kPages, o);
  auto filled = std::chrono::steady_clock::now();
  Ok(*g_, "fill 1 " + Range(0, kPages));
  for (int t = 0; t < 40; ++t) {
    if (t % 7 == 3) Ok(*g_, "read " + Range(static_cast<uint64_t>(t) * 10, 10));
    TickAndSleep(1, 10);
  }
  Ok(*g_, "read " + Range(900, 10));
  TickAndSleep(2, 50);
  EXPECT_LE(tracker_->stats().epoch, 9u);
  double since_fill = std::chrono::duration<double>(std::chrono::steady_clock::now() - filled).count();
  for (uint64_t p = 0; p < kPages; ++p) {
    auto idle = tracker_->IdleSeconds(p);
    ASSERT_TRUE(idle.has_value()) << p;
    ASSERT_LE(*idle, since_fill) << "page " << p;
  }
  auto all = tracker_->ColdestResident(kPages, 0);
  ASSERT_EQ(all.size(), kPages);
  std::set<uint64_t> last10(all.end() - 10, all.end());
  EXPECT_EQ(last10, (std::set<uint64_t>{900, 901, 902, 903, 904, 905, 906, 907, 908, 909}));
  EXPECT_LT(*tracker_->IdleSeconds(900), *tracker_->IdleSeconds(500));
}

TEST_F(AccessTrackerTest, TightBudgetSlicesCoverageThenStretchesThePeriod) {
  constexpr uint64_t kPages = 16384;
  TrackerOptions o;
  o.min_period_ms = 200;
  o.read_cycle = 4;
  Start(kPages, o);
  Ok(*g_, "fill 1 " + Range(0, kPages));
  Ok(*g_, "hot " + Range(0, kPages) + " 0");  // every page hot: ~16K faults per full coverage
  TickAndSleep(12, 200);  // adapts once two coverage cycles have counted faults per chunk
  Ok(*g_, "stop");
  TrackerStats st = tracker_->stats();
  Print("tight", st, tracker_->WssPages(5));
  EXPECT_EQ(st.slices, 4u);
  EXPECT_GT(st.period_ms, 200.0);
  EXPECT_GT(st.fault_cost_us, 0.0);
  EXPECT_GT(st.minor_faults, 0u);
}

TEST_F(AccessTrackerTest, RoomyBudgetCoversAllRamEveryMinimumPeriod) {
  constexpr uint64_t kPages = 16384;
  TrackerOptions o;
  o.min_period_ms = 200;
  o.cpu_budget_pct = 80;
  o.read_cycle = 2;
  Start(kPages, o);
  Ok(*g_, "fill 1 " + Range(0, kPages));
  Ok(*g_, "hot " + Range(0, 1024) + " 50");
  TickAndSleep(8, 200);
  Ok(*g_, "stop");
  TrackerStats st = tracker_->stats();
  Print("roomy", st, tracker_->WssPages(5));
  EXPECT_EQ(st.slices, 1u);
  EXPECT_EQ(st.period_ms, 200.0);
  EXPECT_EQ(st.last_dropped + st.last_kept, kPages);
  EXPECT_GT(st.last_kept, 0u);
}

TEST_F(AccessTrackerTest, DataSurvivesManyDropAndRefaultCycles) {
  constexpr uint64_t kPages = 16384, kHalf = kPages / 2;
  TrackerOptions o;
  o.read_cycle = 3;
  o.min_period_ms = 20;
  o.cpu_budget_pct = 100;  // drop as often as possible
  Start(kPages, o);
  Ok(*g_, "fill 5 " + Range(0, kPages));
  tracker_->Start();
  // Reads fault pages back after each drop; rewrites land on dropped and
  // mapped pages alike. Every generation must read back exactly.
  // Each generation waits for the tracker to drop PTEs a few times rather
  // than for a fixed time: how often it gets to tick depends on how loaded
  // the machine is, and the point is the number of drop/refault cycles.
  constexpr uint64_t kTicksPerGen = 3;
  for (uint64_t gen = 6; gen < 16; ++gen) {
    const uint64_t ticks_before = tracker_->stats().ticks;
    Ok(*g_, "hot " + Range(kHalf - 2000, 4000) + " 0");
    SleepMs(100);
    for (int waited = 0; tracker_->stats().ticks < ticks_before + kTicksPerGen; waited += 10) {
      ASSERT_LT(waited, 20000) << "tracker stopped ticking in generation " << gen;
      SleepMs(10);
    }
    Ok(*g_, "stop");
    Ok(*g_, "fill " + std::to_string(gen) + " " + Range(0, kHalf));
    SleepMs(50);
    Ok(*g_, "verify " + std::to_string(gen) + " " + Range(0, kHalf));
    Ok(*g_, "verify 5 " + Range(kHalf, kHalf));
  }
  tracker_->Stop();
  TrackerStats st = tracker_->stats();
  Print("cycles", st, tracker_->WssPages(1));
  EXPECT_GE(st.ticks, 10 * kTicksPerGen);
  EXPECT_GT(st.pages_dropped, 8000u);
  EXPECT_GT(st.minor_faults, 8000u);
  EXPECT_EQ(st.errors, 0u);
}

TEST_F(AccessTrackerTest, TickFailsOnceTheVmProcessIsGone) {
  Start(1024, TrackerOptions{});
  Ok(*g_, "fill 1 " + Range(0, 1024));
  ASSERT_TRUE(tracker_->Tick().ok());
  ASSERT_TRUE(g_->process().Signal(SIGKILL).ok());
  g_->process().Wait(5000);
  Status s = tracker_->Tick();
  EXPECT_EQ(s.code(), Code::kUnavailable) << s.ToString();
  EXPECT_EQ(tracker_->stats().errors, 1u);
}

}  // namespace
}  // namespace agile::track
