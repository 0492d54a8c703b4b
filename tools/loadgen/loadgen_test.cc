#include "loadgen.h"

#include <gtest/gtest.h>

#include <sstream>
#include <thread>

namespace agile::loadgen {
namespace {

constexpr uint64_t kMs = 1000000;

// ---- histogram ----------------------------------------------------------------

TEST(LatencyHistogram, EmptyIsZero) {
  LatencyHistogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.Percentile(0.5), 0u);
  EXPECT_EQ(h.Percentile(0.99), 0u);
}

TEST(LatencyHistogram, SmallValuesAreExact) {
  LatencyHistogram h;
  for (uint64_t v = 0; v < 100; ++v) h.Add(v);
  EXPECT_EQ(h.Percentile(0.5), 49u);
  EXPECT_EQ(h.Percentile(0.99), 98u);
  EXPECT_EQ(h.Percentile(1.0), 99u);
  EXPECT_EQ(h.Percentile(0.0), 0u);
}

TEST(LatencyHistogram, BucketsCoverEveryValueOnce) {
  // Contiguous, non-overlapping buckets; every value lands in the bucket
  // whose bounds contain it.
  for (size_t i = 1; i < 128 + 57 * 64; ++i) ASSERT_EQ(LatencyHistogram::BucketLow(i), LatencyHistogram::BucketHigh(i - 1) + 1) << i;
  for (uint64_t v : {0ull, 1ull, 127ull, 128ull, 129ull, 255ull, 256ull, 1000ull, 123456ull, 1ull << 40, ~0ull}) {
    size_t i = LatencyHistogram::Index(v);
    EXPECT_LE(LatencyHistogram::BucketLow(i), v) << v;
    EXPECT_GE(LatencyHistogram::BucketHigh(i), v) << v;
  }
}

TEST(LatencyHistogram, PercentilesWithinTwoPercent) {
  LatencyHistogram h;
  for (uint64_t v = 1; v <= 100000; ++v) h.Add(v);
  EXPECT_NEAR(static_cast<double>(h.Percentile(0.50)), 50000.0, 50000 * 0.02);
  EXPECT_NEAR(static_cast<double>(h.Percentile(0.99)), 99000.0, 99000 * 0.02);
}

TEST(LatencyHistogram, WeightedAddAndMerge) {
  LatencyHistogram a, b;
  a.Add(10, 99);
  b.Add(5000, 1);
  a.Merge(b);
  EXPECT_EQ(a.count(), 100u);
  EXPECT_EQ(a.Percentile(0.5), 10u);
  EXPECT_EQ(a.Percentile(0.99), 10u);
  EXPECT_NEAR(static_cast<double>(a.Percentile(1.0)), 5000.0, 5000 * 0.02);
}

// ---- interval accounting ------------------------------------------------------

TEST(IntervalAccounting, AssignsByCompletionTimeAndKeepsEmptyIntervals) {
  IntervalAccounting acc(100 * kMs, 10 * kMs);
  acc.Record(5 * kMs, 10, 100, 0);    // interval 0
  acc.Record(99 * kMs, 5, 300, 1);    // interval 0
  acc.Record(250 * kMs, 7, 50, 0);    // interval 2; interval 1 has nothing
  auto rows = acc.Flush(310 * kMs);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].t_ms, 100u);
  EXPECT_EQ(rows[0].ops, 15u);
  EXPECT_EQ(rows[0].errors, 1u);
  EXPECT_DOUBLE_EQ(rows[0].ops_per_s, 150.0);
  EXPECT_EQ(rows[0].p50_us, 100u);
  EXPECT_NEAR(static_cast<double>(rows[0].p99_us), 300.0, 300 * 0.02);  // bucket midpoint
  // A stalled server: a zero row, not a missing one.
  EXPECT_EQ(rows[1].t_ms, 200u);
  EXPECT_EQ(rows[1].ops, 0u);
  EXPECT_EQ(rows[1].p50_us, 0u);
  EXPECT_DOUBLE_EQ(rows[1].ops_per_s, 0.0);
  EXPECT_EQ(rows[2].t_ms, 300u);
  EXPECT_EQ(rows[2].ops, 7u);
}

TEST(IntervalAccounting, WaitsForGraceBeforeClosing) {
  IntervalAccounting acc(100 * kMs, 20 * kMs);
  acc.Record(50 * kMs, 1, 10, 0);
  EXPECT_TRUE(acc.Flush(100 * kMs).empty());
  EXPECT_TRUE(acc.Flush(119 * kMs).empty());
  // A worker that stamped 99 ms but recorded late still lands in interval 0.
  acc.Record(99 * kMs, 1, 10, 0);
  auto rows = acc.Flush(120 * kMs);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].ops, 2u);
  EXPECT_EQ(acc.late_records(), 0u);
}

TEST(IntervalAccounting, VeryLateRecordIsCountedNotLost) {
  IntervalAccounting acc(100 * kMs, 0);
  ASSERT_EQ(acc.Flush(200 * kMs).size(), 2u);  // intervals 0 and 1 closed, empty
  acc.Record(50 * kMs, 4, 10, 0);              // belongs to the closed interval 0
  auto rows = acc.Flush(300 * kMs);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].t_ms, 300u);
  EXPECT_EQ(rows[0].ops, 4u);
  EXPECT_EQ(acc.late_records(), 1u);
}

TEST(IntervalAccounting, FinishEmitsPartialLastIntervalAtItsRealRate) {
  IntervalAccounting acc(100 * kMs, 50 * kMs);
  acc.Record(10 * kMs, 10, 1, 0);
  acc.Record(120 * kMs, 5, 1, 0);
  acc.Record(260 * kMs, 3, 1, 0);  // past the end (250 ms): counted in the last row
  auto rows = acc.Finish(250 * kMs);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].t_ms, 100u);
  EXPECT_EQ(rows[1].t_ms, 200u);
  EXPECT_EQ(rows[2].t_ms, 250u);
  EXPECT_EQ(rows[0].ops + rows[1].ops + rows[2].ops, 18u);
  EXPECT_EQ(rows[2].ops, 3u);
  EXPECT_DOUBLE_EQ(rows[2].ops_per_s, 60.0);  // 3 ops in 50 ms
  EXPECT_TRUE(acc.Finish(250 * kMs).empty());
}

TEST(IntervalAccounting, FinishAfterFlushDoesNotRepeatRows) {
  IntervalAccounting acc(100 * kMs, 0);
  acc.Record(10 * kMs, 1, 1, 0);
  ASSERT_EQ(acc.Flush(100 * kMs).size(), 1u);
  auto rows = acc.Finish(200 * kMs);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].t_ms, 200u);
  EXPECT_EQ(rows[0].ops, 0u);
}

TEST(IntervalAccounting, TotalMergesClosedIntervals) {
  IntervalAccounting acc(100 * kMs, 0);
  acc.Record(10 * kMs, 50, 100, 0);
  acc.Record(110 * kMs, 50, 200, 0);
  acc.Finish(200 * kMs);
  EXPECT_EQ(acc.Total().count(), 100u);
}

TEST(IntervalAccounting, ConcurrentRecordsAllCounted) {
  IntervalAccounting acc(10 * kMs, 0);
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&acc, t] {
      for (uint64_t i = 0; i < 10000; ++i) acc.Record((i * 37 + static_cast<uint64_t>(t)) % (1000 * kMs), 1, i % 500, 0);
    });
  for (auto& t : ts) t.join();
  uint64_t sum = 0;
  for (const auto& r : acc.Finish(1000 * kMs)) sum += r.ops;
  EXPECT_EQ(sum, 40000u);
}

// ---- CSV ------------------------------------------------------------------------

TEST(CsvWriter, HeaderAndRows) {
  std::ostringstream out;
  CsvWriter w(out);
  IntervalRow r;
  r.t_ms = 100;
  r.ops = 1234;
  r.ops_per_s = 12340.0;
  r.p50_us = 250;
  r.p99_us = 1800;
  r.errors = 0;
  w.Write(r);
  w.Write(IntervalRow{200, 0, 0.0, 0, 0, 3});
  EXPECT_EQ(out.str(),
            "t_ms,ops,ops_per_s,p50_us,p99_us,errors\n"
            "100,1234,12340.0,250,1800,0\n"
            "200,0,0.0,0,0,3\n");
}

// ---- parsing and workload -----------------------------------------------------------

TEST(ParseHostPort, Good) {
  std::string err;
  auto hp = ParseHostPort("10.77.0.100:6379", &err);
  ASSERT_TRUE(hp);
  EXPECT_EQ(hp->host, "10.77.0.100");
  EXPECT_EQ(hp->port, 6379);
}

TEST(ParseHostPort, Bad) {
  std::string err;
  for (const char* s : {"10.0.0.1", "10.0.0.1:", ":6379", "h:0", "h:65536", "h:12x", "h:1234567"}) {
    EXPECT_FALSE(ParseHostPort(s, &err)) << s;
    EXPECT_FALSE(err.empty()) << s;
  }
}

TEST(OpMix, GetShareAndKeyRange) {
  OpMix mix(1000, 90, 42);
  int gets = 0;
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    auto op = mix.Next();
    gets += op.get;
    ASSERT_EQ(op.key.rfind("key:", 0), 0u);
    uint64_t k = std::stoull(op.key.substr(4));
    ASSERT_LT(k, 1000u);
  }
  EXPECT_NEAR(gets / static_cast<double>(n), 0.90, 0.01);
}

TEST(OpMix, ExtremesAndDeterminism) {
  OpMix all_get(10, 100, 1), all_set(10, 0, 1), a(10, 50, 7), b(10, 50, 7);
  for (int i = 0; i < 1000; ++i) {
    EXPECT_TRUE(all_get.Next().get);
    EXPECT_FALSE(all_set.Next().get);
    auto x = a.Next(), y = b.Next();
    EXPECT_EQ(x.get, y.get);
    EXPECT_EQ(x.key, y.key);
  }
}

TEST(MakeValue, SizeAndPrintable) {
  auto v = MakeValue(1000, 3);
  ASSERT_EQ(v.size(), 1000u);
  for (char c : v) EXPECT_TRUE(isalnum(static_cast<unsigned char>(c)));
  EXPECT_EQ(v, MakeValue(1000, 3));
  EXPECT_NE(v, MakeValue(1000, 4));
}

}  // namespace
}  // namespace agile::loadgen
