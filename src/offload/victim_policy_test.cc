// TrackerPolicy against a real tracker over a track_guest child under the
// real shim and fault server: which pages it names, and when.
#include "offload/victim_policy.h"

#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <thread>

#include "track/testing/guest.h"

namespace agile::offload {
namespace {

using track::testing::Ok;
using track::testing::Range;

TEST(TrackerPolicyTest, NamesOnlyPagesIdleForTwoCoverageCycles) {
  constexpr uint64_t kPages = 4096;
  auto g = track::testing::StartTrackGuest(kPages);
  ASSERT_NE(g, nullptr);
  track::TrackerOptions o;
  o.min_period_ms = 1000;  // with read_cycle 1, full coverage every tick: 2 cycles = 2 s
  o.read_cycle = 1;
  o.cpu_budget_pct = 100;
  auto t = track::AccessTracker::Create(g->shim().mapping(), &g->table(), &g->shim(), &g->faults().stats(), o);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  auto tracker = std::move(t).value();
  g->faults().set_access_observer(tracker.get());
  TrackerPolicy policy(tracker.get(), nullptr);

  Ok(*g, "fill 1 " + Range(0, kPages));
  ASSERT_TRUE(tracker->Tick().ok());  // sees the fill's writes: keeps the pages mapped
  ASSERT_TRUE(tracker->Tick().ok());  // nothing written since: drops every PTE
  ASSERT_EQ(tracker->stats().slices, 1u);
  ASSERT_GT(tracker->stats().pages_dropped, kPages / 2);
  // Just dropped: nothing is known idle long enough yet.
  EXPECT_TRUE(policy.Coldest(kPages).empty());

  // Keep a quarter in use while the rest stays untouched past two cycles.
  Ok(*g, "hot " + Range(0, kPages / 4) + " 0");
  for (int i = 0; i < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1000));
    ASSERT_TRUE(tracker->Tick().ok());
  }
  std::vector<uint64_t> cold = policy.Coldest(kPages);
  Ok(*g, "stop");
  std::set<uint64_t> named(cold.begin(), cold.end());
  EXPECT_GE(named.size(), kPages / 2) << "untouched pages not named after two cycles";
  for (uint64_t p = 0; p < kPages / 4; ++p) ASSERT_FALSE(named.count(p)) << "page " << p << " is in use";
  tracker->Stop();
  g.reset();
}

}  // namespace
}  // namespace agile::offload
