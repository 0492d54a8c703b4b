#include "loadgen.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace agile::loadgen {

namespace {
constexpr size_t kExact = 128;   // values below this have their own bucket
constexpr size_t kSub = 64;      // buckets per power of two above
constexpr size_t kBuckets = kExact + (64 - 7) * kSub;
}  // namespace

// ---- LatencyHistogram -------------------------------------------------------

LatencyHistogram::LatencyHistogram() : buckets_(kBuckets, 0) {}

size_t LatencyHistogram::Index(uint64_t us) {
  if (us < kExact) return static_cast<size_t>(us);
  int msb = 63 - __builtin_clzll(us);  // >= 7
  int shift = msb - 6;
  size_t sub = static_cast<size_t>((us >> shift) & (kSub - 1));
  return kExact + static_cast<size_t>(msb - 7) * kSub + sub;
}

uint64_t LatencyHistogram::BucketLow(size_t index) {
  if (index < kExact) return index;
  size_t msb = (index - kExact) / kSub + 7;
  uint64_t sub = (index - kExact) % kSub;
  return (kSub + sub) << (msb - 6);
}

uint64_t LatencyHistogram::BucketHigh(size_t index) {
  if (index < kExact) return index;
  size_t msb = (index - kExact) / kSub + 7;
  return BucketLow(index) + (uint64_t{1} << (msb - 6)) - 1;
}

void LatencyHistogram::Add(uint64_t us, uint64_t count) {
  if (count == 0) return;
  buckets_[Index(us)] += count;
  count_ += count;
}

void LatencyHistogram::Merge(const LatencyHistogram& o) {
  for (size_t i = 0; i < buckets_.size(); ++i) buckets_[i] += o.buckets_[i];
  count_ += o.count_;
}

uint64_t LatencyHistogram::Percentile(double q) const {
  if (count_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  uint64_t rank = std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_))));
  uint64_t seen = 0;
  for (size_t i = 0; i < buckets_.size(); ++i) {
    seen += buckets_[i];
    if (seen >= rank) return BucketLow(i) + (BucketHigh(i) - BucketLow(i)) / 2;
  }
  return BucketHigh(buckets_.size() - 1);
}

void LatencyHistogram::Clear() {
  std::fill(buckets_.begin(), buckets_.end(), 0);
  count_ = 0;
}

// ---- IntervalAccounting -----------------------------------------------------

IntervalAccounting::IntervalAccounting(uint64_t interval_ns, uint64_t grace_ns)
    : interval_ns_(interval_ns ? interval_ns : 1), grace_ns_(grace_ns) {}

void IntervalAccounting::Record(uint64_t t_ns, uint64_t ops, uint64_t latency_us, uint64_t errors) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t idx = t_ns / interval_ns_;
  if (idx < first_open_) {
    ++late_;
    idx = first_open_;
  }
  size_t slot = static_cast<size_t>(idx - first_open_);
  if (open_.size() <= slot) open_.resize(slot + 1);
  Open& o = open_[slot];
  o.ops += ops;
  o.errors += errors;
  o.hist.Add(latency_us, ops);
}

IntervalRow IntervalAccounting::Close(uint64_t index, uint64_t end_ns) {
  // Caller holds mu_; closes interval `index` == first_open_.
  IntervalRow r;
  r.t_ms = end_ns / 1000000;
  uint64_t start_ns = index * interval_ns_;
  uint64_t len = end_ns > start_ns ? end_ns - start_ns : 1;
  if (!open_.empty()) {
    const Open& o = open_.front();
    r.ops = o.ops;
    r.errors = o.errors;
    r.p50_us = o.hist.Percentile(0.50);
    r.p99_us = o.hist.Percentile(0.99);
    total_.Merge(o.hist);
    open_.pop_front();
  }
  r.ops_per_s = static_cast<double>(r.ops) * 1e9 / static_cast<double>(len);
  ++first_open_;
  return r;
}

std::vector<IntervalRow> IntervalAccounting::Flush(uint64_t now_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<IntervalRow> rows;
  while ((first_open_ + 1) * interval_ns_ + grace_ns_ <= now_ns)
    rows.push_back(Close(first_open_, (first_open_ + 1) * interval_ns_));
  return rows;
}

std::vector<IntervalRow> IntervalAccounting::Finish(uint64_t end_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<IntervalRow> rows;
  // Records past the end (a batch that completed just after the deadline)
  // count in the last row.
  uint64_t last = end_ns == 0 ? 0 : (end_ns - 1) / interval_ns_;
  if (last >= first_open_ && open_.size() > last - first_open_ + 1) {
    Open& tail = open_[static_cast<size_t>(last - first_open_)];
    for (size_t i = static_cast<size_t>(last - first_open_) + 1; i < open_.size(); ++i) {
      tail.ops += open_[i].ops;
      tail.errors += open_[i].errors;
      tail.hist.Merge(open_[i].hist);
    }
    open_.resize(static_cast<size_t>(last - first_open_) + 1);
  }
  while (first_open_ <= last && first_open_ * interval_ns_ < end_ns)
    rows.push_back(Close(first_open_, std::min((first_open_ + 1) * interval_ns_, end_ns)));
  return rows;
}

LatencyHistogram IntervalAccounting::Total() const {
  std::lock_guard<std::mutex> lock(mu_);
  return total_;
}

uint64_t IntervalAccounting::late_records() const {
  std::lock_guard<std::mutex> lock(mu_);
  return late_;
}

// ---- CsvWriter --------------------------------------------------------------

CsvWriter::CsvWriter(std::ostream& out) : out_(out) { out_ << Header() << '\n' << std::flush; }

std::string CsvWriter::Header() { return "t_ms,ops,ops_per_s,p50_us,p99_us,errors"; }

std::string CsvWriter::Format(const IntervalRow& r) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%llu,%llu,%.1f,%llu,%llu,%llu", static_cast<unsigned long long>(r.t_ms),
                static_cast<unsigned long long>(r.ops), r.ops_per_s, static_cast<unsigned long long>(r.p50_us),
                static_cast<unsigned long long>(r.p99_us), static_cast<unsigned long long>(r.errors));
  return buf;
}

void CsvWriter::Write(const IntervalRow& r) { out_ << Format(r) << '\n' << std::flush; }

// ---- parsing, workload ------------------------------------------------------

std::optional<HostPort> ParseHostPort(const std::string& s, std::string* err) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size()) {
    *err = "expected HOST:PORT, got '" + s + "'";
    return std::nullopt;
  }
  HostPort hp;
  hp.host = s.substr(0, colon);
  const std::string p = s.substr(colon + 1);
  if (p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos) {
    *err = "bad port '" + p + "'";
    return std::nullopt;
  }
  hp.port = std::stoi(p);
  if (hp.port < 1 || hp.port > 65535) {
    *err = "port out of range: " + p;
    return std::nullopt;
  }
  return hp;
}

OpMix::OpMix(uint64_t keys, int get_pct, uint64_t seed, std::string key_prefix)
    : keys_(keys ? keys : 1), get_pct_(std::clamp(get_pct, 0, 100)), prefix_(std::move(key_prefix)), rng_(seed) {}

OpMix::Op OpMix::Next() {
  Op op;
  op.get = static_cast<int>(rng_() % 100) < get_pct_;
  op.key = prefix_ + std::to_string(rng_() % keys_);
  return op;
}

std::string MakeValue(size_t bytes, uint64_t seed) {
  static const char kAlphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::mt19937_64 rng(seed);
  std::string v(bytes, 'x');
  for (auto& c : v) c = kAlphabet[rng() % (sizeof kAlphabet - 1)];
  return v;
}

}  // namespace agile::loadgen
