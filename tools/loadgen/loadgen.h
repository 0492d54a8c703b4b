// agile-loadgen core: the parts that need no network, so they are unit-tested
// (tools/loadgen/loadgen_test.cc): latency histogram, per-interval accounting,
// CSV output, the GET/SET mix and argument parsing. main.cc adds hiredis.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

namespace agile::loadgen {

// Log-linear histogram of latencies in microseconds: exact below 128, then
// 64 buckets per power of two (<= 1.6% relative error).
class LatencyHistogram {
 public:
  LatencyHistogram();
  void Add(uint64_t us, uint64_t count = 1);
  void Merge(const LatencyHistogram& o);
  uint64_t count() const { return count_; }
  // The value at quantile q in [0, 1] (midpoint of its bucket); 0 if empty.
  uint64_t Percentile(double q) const;
  void Clear();

  static size_t Index(uint64_t us);
  static uint64_t BucketLow(size_t index);
  static uint64_t BucketHigh(size_t index);  // inclusive

 private:
  std::vector<uint64_t> buckets_;
  uint64_t count_ = 0;
};

// One CSV row: what completed in (t_ms - interval, t_ms] since the start.
struct IntervalRow {
  uint64_t t_ms = 0;
  uint64_t ops = 0;
  double ops_per_s = 0;
  uint64_t p50_us = 0;  // 0 when no op completed
  uint64_t p99_us = 0;
  uint64_t errors = 0;
};

// Assigns completed operations to fixed intervals by their completion time
// (ns since the start of the run). Thread-safe. An interval is final once
// the clock has passed its end by `grace_ns` (a worker may take its timestamp
// a moment before recording it); a record arriving later than that for a
// final interval is counted in the oldest open one, never dropped.
class IntervalAccounting {
 public:
  IntervalAccounting(uint64_t interval_ns, uint64_t grace_ns);

  void Record(uint64_t t_ns, uint64_t ops, uint64_t latency_us, uint64_t errors);
  // Rows of every interval that is final at now_ns, in order, empty ones included.
  std::vector<IntervalRow> Flush(uint64_t now_ns);
  // Everything up to end_ns; the last row may cover a partial interval
  // (its ops_per_s uses its real length).
  std::vector<IntervalRow> Finish(uint64_t end_ns);

  uint64_t late_records() const;
  // Latencies of every closed interval together.
  LatencyHistogram Total() const;

 private:
  struct Open {
    uint64_t ops = 0, errors = 0;
    LatencyHistogram hist;
  };
  IntervalRow Close(uint64_t index, uint64_t end_ns);

  const uint64_t interval_ns_, grace_ns_;
  mutable std::mutex mu_;
  uint64_t first_open_ = 0;  // index of the oldest interval not yet flushed
  std::deque<Open> open_;    // open_[i] is interval first_open_ + i
  uint64_t late_ = 0;
  LatencyHistogram total_;
};

// t_ms,ops,ops_per_s,p50_us,p99_us,errors ; flushed after every row so a
// killed run still leaves its data.
class CsvWriter {
 public:
  explicit CsvWriter(std::ostream& out);
  void Write(const IntervalRow& r);
  static std::string Header();
  static std::string Format(const IntervalRow& r);

 private:
  std::ostream& out_;
};

struct HostPort {
  std::string host;
  int port = 0;
};
// "A.B.C.D:PORT" (or "name:PORT"); nullopt with *err set if malformed.
std::optional<HostPort> ParseHostPort(const std::string& s, std::string* err);

// The operation mix: uniform keys "<prefix><i>", i in [0, keys); GET with
// probability get_pct %, SET otherwise. Deterministic for a seed.
class OpMix {
 public:
  OpMix(uint64_t keys, int get_pct, uint64_t seed, std::string key_prefix = "key:");
  struct Op {
    bool get;
    std::string key;
  };
  Op Next();

 private:
  uint64_t keys_;
  int get_pct_;
  std::string prefix_;
  std::mt19937_64 rng_;
};

// The value written by SETs: `bytes` printable bytes, varied by seed.
std::string MakeValue(size_t bytes, uint64_t seed);

}  // namespace agile::loadgen
