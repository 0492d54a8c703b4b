#include "track/access_tracker.h"

#include <pthread.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

namespace agile::track {
namespace {

// Page stamps. 1..max_epoch: idle since the drop of that epoch.
constexpr uint16_t kUnknown = 0;     // not observed since tracking began or since it left residence
constexpr uint16_t kActive = 0xFFFF; // accessed since its PTE was last dropped

// Drop time of an epoch whose drop is still running: its pages count as busy.
constexpr uint64_t kDropping = UINT64_MAX;

// Resident runs separated by at most this many non-resident pages are dropped
// in one request: a DropPtes round trip costs ~9 us, while zapping PTEs that
// map nothing is nearly free (1 GiB of them in ~7 us on 6.18, track_bench).
constexpr uint64_t kBridgePages = 64;

// What a MINOR fault costs the guest, as a multiple of the handler CPU we
// measure live (the fault thread's CPU clock): the vCPU also traps, sleeps,
// is woken and retries. Measured on the project machine (2-vCPU nested VM):
// 1.9x for back-to-back faults of an otherwise idle process (4.4 us seen by
// the faulting thread vs 2.3 us handler CPU), 2.7-2.8x for a thread sweeping
// a hot set at full speed (throughput lost per fault vs handler CPU).
constexpr double kFaultCostFactor = 3.0;
// A page written after a scan re-protected it takes one WP_ASYNC fault,
// resolved inside the kernel on the vCPU: we cannot time it, only count it
// (pages reported written, less those that MINOR-faulted instead). Charged at
// the cost track_bench measures, 3.4-3.9 us on the project machine.
constexpr double kWriteFaultNs = 3500;
// Fewer faults than this between ticks make too noisy a per-fault sample.
constexpr uint64_t kMinFaultSample = 64;
// Smoothing of measured unit costs: one noisy period must not swing the slicing.
constexpr double kEwma = 0.2;

uint64_t ClockNs(clockid_t c) {
  timespec ts;
  if (clock_gettime(c, &ts) != 0) return 0;  // e.g. the fault thread's clock once it exited
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}
uint64_t MonoNs() { return ClockNs(CLOCK_MONOTONIC); }

double Ewma(double avg, double sample) { return avg == 0 ? sample : kEwma * sample + (1 - kEwma) * avg; }

bool IsIdleStamp(uint16_t s) { return s != kUnknown && s != kActive; }

}  // namespace

struct AccessTracker::Snapshot {
  uint64_t now_ns;
  uint32_t epoch;
};

Result<std::unique_ptr<AccessTracker>> AccessTracker::Create(vm::GuestMemory* memory, const vm::FaultStats* faults,
                                                             const TrackerOptions& opts) {
  const vm::GuestMapping& map = memory->mapping();
  if (!(opts.cpu_budget_pct > 0) || opts.min_period_ms == 0 || opts.min_period_ms > opts.max_period_ms ||
      opts.read_cycle == 0)
    return InvalidArgument("tracker options: need cpu_budget_pct > 0, 0 < min_period <= max_period, read_cycle >= 1");
  if (opts.history_epochs < 2 || opts.max_epoch > 0xFFFE || opts.max_epoch < 2 * opts.history_epochs + 1)
    return InvalidArgument("tracker options: need history_epochs >= 2 and 2*history_epochs < max_epoch <= 65534");
  AGILE_ASSIGN_OR_RETURN(WriteScanner scanner, WriteScanner::Open(map));
  // The first scan reports every page never write-protected, i.e. history
  // from before tracking: discard it.
  AGILE_RETURN_IF_ERROR(scanner.Scan([](uint64_t, uint64_t) {}).status());
  return std::unique_ptr<AccessTracker>(new AccessTracker(memory, faults, opts, std::move(scanner)));
}

AccessTracker::AccessTracker(vm::GuestMemory* memory, const vm::FaultStats* faults, const TrackerOptions& opts,
                             WriteScanner scanner)
    : mem_(memory),
      faults_(faults),
      opts_(opts),
      scanner_(std::move(scanner)),
      first_idx_(memory->mapping().file_offset / uffd::kPageSize),
      end_idx_(first_idx_ + memory->mapping().length / uffd::kPageSize),
      chunks_((end_idx_ - first_idx_ + kChunkPages - 1) / kChunkPages),
      stamps_(new std::atomic<uint16_t>[end_idx_ - first_idx_]),
      chunk_faults_(new std::atomic<uint32_t>[chunks_]),
      drop_ns_(new std::atomic<uint64_t>[opts.history_epochs]),
      // Start gently, with the smallest slices: nothing is measured yet.
      slices_(static_cast<uint32_t>(std::min<uint64_t>(opts.read_cycle, chunks_))),
      chunk_cycle_faults_(chunks_, 0),
      period_ms_(opts.min_period_ms),
      sampler_(memory, opts.sampler) {
  for (uint64_t i = 0; i < end_idx_ - first_idx_; ++i) stamps_[i].store(kUnknown, std::memory_order_relaxed);
  for (uint64_t c = 0; c < chunks_; ++c) chunk_faults_[c].store(0, std::memory_order_relaxed);
  for (uint32_t i = 0; i < opts.history_epochs; ++i) drop_ns_[i].store(0, std::memory_order_relaxed);
  stats_.slices = slices_;
  stats_.period_ms = static_cast<double>(opts.min_period_ms);
}

AccessTracker::~AccessTracker() { Stop(); }

void AccessTracker::OnAccess(uint64_t idx) {
  sampler_.OnAccess(idx);
  if (!fault_clock_known_.load(std::memory_order_acquire)) {
    // Only the fault thread calls this, so the clock is written once.
    if (pthread_getcpuclockid(pthread_self(), &fault_clock_) == 0)
      fault_clock_known_.store(true, std::memory_order_release);
  }
  if (idx < first_idx_ || idx >= end_idx_) return;
  const uint64_t i = idx - first_idx_;
  // A fault on a page we dropped is what read tracking costs: count it.
  if (IsIdleStamp(stamps_[i].exchange(kActive, std::memory_order_relaxed)))
    chunk_faults_[i / kChunkPages].fetch_add(1, std::memory_order_relaxed);
}

AccessTracker::Snapshot AccessTracker::Now() const { return {MonoNs(), epoch_.load(std::memory_order_acquire)}; }

uint64_t AccessTracker::DropNs(const Snapshot& snap, uint32_t s) const {
  // Epochs older than the ring read the oldest time it holds: later than the
  // truth, so idleness is understated, never overstated. A stamp newer than
  // the snapshot (a tick ran meanwhile) reads its own slot, which NewEpoch()
  // published before any page could carry it.
  if (s + opts_.history_epochs <= snap.epoch) s = snap.epoch - opts_.history_epochs + 1;
  return drop_ns_[s % opts_.history_epochs].load(std::memory_order_acquire);
}

void AccessTracker::NewEpoch() {
  if (epoch_.load(std::memory_order_relaxed) + 1 > opts_.max_epoch) Rebase();
  uint32_t e = epoch_.load(std::memory_order_relaxed) + 1;
  drop_ns_[e % opts_.history_epochs].store(kDropping, std::memory_order_release);
  epoch_.store(e, std::memory_order_release);
}

void AccessTracker::Rebase() {
  // Shift every idle stamp down by a multiple of the ring size, so ring slots
  // keep their meaning; stamps older than the ring collapse to 1, which reads
  // as "older than the ring" both before and after.
  std::unique_lock<std::shared_mutex> lock(rebase_mu_);
  const uint32_t h = opts_.history_epochs;
  const uint32_t next = epoch_.load(std::memory_order_relaxed) + 1;
  const uint32_t shift = (next - h - 1) / h * h;
  for (uint64_t i = 0; i < end_idx_ - first_idx_; ++i) {
    uint16_t s = stamps_[i].load(std::memory_order_relaxed);
    if (!IsIdleStamp(s)) continue;
    auto to = static_cast<uint16_t>(s > shift ? s - shift : 1);
    // Fails only if the fault thread marked the page active meanwhile: keep that.
    stamps_[i].compare_exchange_strong(s, to, std::memory_order_release, std::memory_order_relaxed);
  }
  epoch_.store(next - 1 - shift, std::memory_order_release);
}

void AccessTracker::HarvestChunk(uint64_t c) {
  // Faults since the chunk's previous drop: one complete cycle's worth.
  uint32_t f = chunk_faults_[c].exchange(0, std::memory_order_relaxed);
  cycle_faults_ = cycle_faults_ - chunk_cycle_faults_[c] + f;
  chunk_cycle_faults_[c] = f;
}

Status AccessTracker::DropSlice(uint32_t epoch, SliceResult* out) {
  const auto e = static_cast<uint16_t>(epoch);
  const uint64_t count = (chunks_ + slices_ - 1) / slices_;
  uint64_t run_first = 0, run_last = 0;
  bool open = false;

  auto flush = [&]() -> Status {
    open = false;
    uint64_t ns = 0;
    Status s = mem_->DropPtes(run_first, run_last + 1 - run_first, &ns);
    out->drop_ns += ns;
    if (s.ok()) return s;
    // PTEs may still map these pages, so "idle since this drop" would be a
    // lie: mark them active again (harmless if they were idle before).
    for (uint64_t i = run_first; i <= run_last; ++i) {
      uint16_t want = e;
      stamps_[i - first_idx_].compare_exchange_strong(want, kActive, std::memory_order_relaxed);
    }
    return s;
  };

  // written_ holds this tick's written runs in increasing order.
  auto w = std::upper_bound(written_.begin(), written_.end(), first_idx_ + next_chunk_ * kChunkPages,
                            [](uint64_t i, const WrittenRun& r) { return i < r.end; });
  for (uint64_t n = 0; n < count; ++n) {
    const uint64_t c = next_chunk_;
    next_chunk_ = c + 1 == chunks_ ? 0 : c + 1;
    if (c == 0 && n > 0) {  // wrapped around: runs never span the wrap
      if (open) AGILE_RETURN_IF_ERROR(flush());
      w = written_.begin();
    }
    if (next_chunk_ == 0) out->cycle_done = true;
    HarvestChunk(c);
    const uint64_t first = first_idx_ + c * kChunkPages, end = std::min(first + kChunkPages, end_idx_);
    for (uint64_t i = first; i < end; ++i) {
      std::atomic<uint16_t>& st = stamps_[i - first_idx_];
      uint16_t s = st.load(std::memory_order_relaxed);
      if (mem_->state(i) != vm::PageState::kResident) {
        // Gone from residence (offloaded, in flight, discarded): its history
        // says nothing about the page that may come back, e.g. by prefetch,
        // which maps it without a fault we would see.
        if (IsIdleStamp(s)) st.compare_exchange_strong(s, kUnknown, std::memory_order_relaxed);
        continue;
      }
      while (w != written_.end() && w->end <= i) ++w;
      if (w != written_.end() && w->first <= i) {
        // Just seen written, so known active: dropping its PTE would only buy
        // a fault to learn the same. It stays mapped (and active); a run of
        // dropped pages must not bridge over it.
        ++out->kept;
        if (open) AGILE_RETURN_IF_ERROR(flush());
        continue;
      }
      // Mark before the drop: an access between here and the madvise is
      // either a fault (active again) or lands before the drop time we record.
      if (!IsIdleStamp(s)) st.compare_exchange_strong(s, e, std::memory_order_release, std::memory_order_relaxed);
      if (open && i - run_last > kBridgePages) AGILE_RETURN_IF_ERROR(flush());
      if (!open) {
        open = true;
        run_first = i;
      }
      run_last = i;
      ++out->dropped;
    }
  }
  if (open) AGILE_RETURN_IF_ERROR(flush());
  return Status::Ok();
}

Status AccessTracker::Tick() {
  std::lock_guard<std::mutex> lock(tick_mu_);
  const uint64_t t0 = MonoNs();
  const uint64_t cpu0 = ClockNs(CLOCK_THREAD_CPUTIME_ID);

  // Writes since the last scan happened in the epoch that ends now.
  uint64_t written = 0;
  written_.clear();
  auto scanned = scanner_.Scan([&](uint64_t first, uint64_t count) {
    for (uint64_t i = first; i < first + count; ++i) stamps_[i - first_idx_].store(kActive, std::memory_order_relaxed);
    written_.push_back({first, first + count});
    written += count;
  });
  const uint64_t scan_ns = MonoNs() - t0;
  if (!scanned.ok()) {
    std::lock_guard<std::mutex> l(stats_mu_);
    ++stats_.errors;
    return scanned.status();
  }

  NewEpoch();
  const uint32_t epoch = epoch_.load(std::memory_order_relaxed);
  SliceResult slice;
  Status dropped_ok = DropSlice(epoch, &slice);
  // Stamped pages are idle from here on unless they fault (or were marked active again).
  drop_ns_[epoch % opts_.history_epochs].store(MonoNs(), std::memory_order_release);

  const uint64_t tick_cpu_ns = ClockNs(CLOCK_THREAD_CPUTIME_ID) - cpu0;
  Adapt(tick_cpu_ns, scan_ns, written, slice, t0);
  std::lock_guard<std::mutex> l(stats_mu_);
  ++stats_.ticks;
  stats_.epoch = epoch;
  stats_.last_tick_ms = static_cast<double>(tick_cpu_ns) / 1e6;
  stats_.last_scan_ms = static_cast<double>(scan_ns) / 1e6;
  stats_.last_drop_ms = static_cast<double>(slice.drop_ns) / 1e6;
  stats_.last_written = written;
  stats_.last_dropped = slice.dropped;
  stats_.last_kept = slice.kept;
  stats_.pages_written += written;
  stats_.pages_dropped += slice.dropped;
  if (!dropped_ok.ok()) ++stats_.errors;
  return dropped_ok;
}

double AccessTracker::FaultCostNs() {
  uint64_t handled = faults_->first_touch.load(std::memory_order_relaxed) +
                     faults_->minor.load(std::memory_order_relaxed) +
                     faults_->refault.load(std::memory_order_relaxed) +
                     faults_->spurious.load(std::memory_order_relaxed);
  if (fault_clock_known_.load(std::memory_order_acquire)) {
    uint64_t cpu = ClockNs(fault_clock_);
    bool enough = handled - prev_faults_handled_ >= kMinFaultSample;
    if (cpu != 0 && prev_fault_cpu_ns_ != 0 && enough)
      fault_cpu_ns_ = Ewma(fault_cpu_ns_, static_cast<double>(cpu - prev_fault_cpu_ns_) /
                                              static_cast<double>(handled - prev_faults_handled_));
    if (cpu != 0 && (prev_fault_cpu_ns_ == 0 || enough)) {
      prev_fault_cpu_ns_ = cpu;
      prev_faults_handled_ = handled;
    }
  }
  return fault_cpu_ns_ * kFaultCostFactor;
}

void AccessTracker::Adapt(uint64_t tick_cpu_ns, uint64_t scan_ns, uint64_t written, const SliceResult& slice,
                          uint64_t tick_start_ns) {
  const double fault_ns = FaultCostNs();
  const uint64_t minor = faults_->minor.load(std::memory_order_relaxed);
  // Write faults of the period that just ended: its writes, less the pages
  // that were written (or read, see write_scanner.h) through a MINOR fault.
  const uint64_t write_faults = written - std::min(written, minor - prev_minor_);
  const double write_ns = static_cast<double>(write_faults) * kWriteFaultNs;
  // Measured cost of the coverage cycle: every period's tick, the MINOR
  // faults that followed it and its write faults, over the cycle's wall time.
  if (prev_tick_ns_ != 0)
    cycle_cost_ns_ += static_cast<double>(prev_tick_cost_ns_) + static_cast<double>(minor - prev_minor_) * fault_ns +
                      write_ns;
  double est_pct = -1;
  if (slice.cycle_done) {
    ++cycles_;
    if (cycle_start_ns_ != 0) est_pct = 100.0 * cycle_cost_ns_ / static_cast<double>(tick_start_ns - cycle_start_ns_);
    cycle_start_ns_ = tick_start_ns;
    cycle_cost_ns_ = 0;
  }
  const uint64_t own_ns = tick_cpu_ns - std::min(tick_cpu_ns, scan_ns) + slice.drop_ns;
  prev_tick_ns_ = tick_start_ns;
  prev_tick_cost_ns_ = scan_ns + own_ns;
  prev_minor_ = minor;
  if (slice.dropped + slice.kept > 0)
    var_ns_per_page_ = Ewma(var_ns_per_page_, static_cast<double>(own_ns) / static_cast<double>(slice.dropped + slice.kept));
  {
    std::lock_guard<std::mutex> l(stats_mu_);
    stats_.minor_faults = minor;
    stats_.cycle_faults = cycle_faults_;
    stats_.fault_cost_us = fault_ns / 1e3;
    if (est_pct >= 0) stats_.est_cpu_pct = est_pct;
  }
  // Each chunk's fault count needs two drops of it; until then keep the
  // gentle start.
  if (cycles_ < 2) return;

  // Cost of one full coverage: walking and dropping every resident page, and
  // the faults it causes. Cheapest coverage that fits the budget: all at once
  // at the minimum period if possible, else more, smaller slices at the
  // minimum period (write recency stays fine), else the most slices allowed
  // at a longer period.
  const double full_var = var_ns_per_page_ * static_cast<double>(mem_->count(vm::PageState::kResident)) +
                          static_cast<double>(cycle_faults_) * fault_ns;
  const double budget = opts_.cpu_budget_pct / 100.0;
  const double fixed = static_cast<double>(scan_ns) + write_ns;  // every tick, whatever the slice
  const double min_ns = static_cast<double>(opts_.min_period_ms) * 1e6;
  const auto most = static_cast<uint32_t>(std::min<uint64_t>(opts_.read_cycle, chunks_));
  uint32_t n = most;
  for (uint32_t k = 1; k < most; ++k) {
    if (fixed + full_var / k <= budget * min_ns) {
      n = k;
      break;
    }
  }
  auto period = static_cast<uint64_t>((fixed + full_var / n) / budget / 1e6);
  period = std::clamp(period, opts_.min_period_ms, opts_.max_period_ms);
  slices_ = n;
  period_ms_.store(period, std::memory_order_relaxed);
  std::lock_guard<std::mutex> l(stats_mu_);
  stats_.slices = n;
  stats_.period_ms = static_cast<double>(period);
}

void AccessTracker::Start() {
  {
    // Faults taken while stopped (e.g. the VM mapping back what the last tick
    // dropped) belong to no period: measure afresh from the first tick.
    std::lock_guard<std::mutex> t(tick_mu_);
    prev_tick_ns_ = 0;
    cycle_start_ns_ = 0;
    cycle_cost_ns_ = 0;
  }
  sampler_.Start();
  std::lock_guard<std::mutex> l(run_mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { Run(); });
}

void AccessTracker::Stop() {
  sampler_.Stop();
  {
    std::lock_guard<std::mutex> l(run_mu_);
    if (!thread_.joinable()) return;
    stop_ = true;
  }
  run_cv_.notify_all();
  thread_.join();
}

void AccessTracker::Run() {
  for (;;) {
    Status s = Tick();
    if (!s.ok()) {
      if (s.code() == Code::kUnavailable) {
        spdlog::error("working-set tracking stopped: {}", s.ToString());
        return;
      }
      spdlog::warn("working-set tracking tick failed ({}); retrying next period", s.ToString());
    }
    std::unique_lock<std::mutex> l(run_mu_);
    if (run_cv_.wait_for(l, std::chrono::milliseconds(period_ms()), [this] { return stop_; })) return;
  }
}

uint64_t AccessTracker::WssPages(double window_s) const {
  std::shared_lock<std::shared_mutex> lock(rebase_mu_);
  const Snapshot snap = Now();
  const auto window_ns = static_cast<uint64_t>(std::max(0.0, window_s) * 1e9);
  const uint64_t cutoff = snap.now_ns > window_ns ? snap.now_ns - window_ns : 0;
  uint64_t n = 0;
  for (uint64_t i = first_idx_; i < end_idx_; ++i) {
    if (mem_->state(i) != vm::PageState::kResident) continue;
    uint16_t s = stamps_[i - first_idx_].load(std::memory_order_acquire);
    if (s == kActive || (s != kUnknown && DropNs(snap, s) >= cutoff)) ++n;
  }
  return n;
}

std::vector<uint64_t> AccessTracker::ColdestResident(size_t max_n, double min_idle_s) const {
  std::shared_lock<std::shared_mutex> lock(rebase_mu_);
  const Snapshot snap = Now();
  const auto idle_ns = static_cast<uint64_t>(std::max(0.0, min_idle_s) * 1e9);
  std::vector<uint64_t> out;
  if (max_n == 0 || idle_ns > snap.now_ns) return out;
  const uint64_t latest_drop = snap.now_ns - idle_ns;
  auto eligible = [&](uint64_t i, uint16_t* s) {
    if (mem_->state(i) != vm::PageState::kResident) return false;
    *s = stamps_[i - first_idx_].load(std::memory_order_acquire);
    return IsIdleStamp(*s) && DropNs(snap, *s) <= latest_drop;
  };
  // Counting pass by stamp (older stamp = colder), then collect just enough.
  std::vector<uint32_t> per_stamp(kActive, 0);
  uint16_t s = 0;
  for (uint64_t i = first_idx_; i < end_idx_; ++i)
    if (eligible(i, &s)) ++per_stamp[s];
  uint32_t cut = 1;
  size_t below = 0;  // pages with stamps older than `cut`
  while (cut < kActive && below + per_stamp[cut] < max_n) below += per_stamp[cut++];
  size_t at_cut = max_n - below;
  std::vector<std::pair<uint16_t, uint64_t>> picked;
  picked.reserve(max_n);
  for (uint64_t i = first_idx_; i < end_idx_; ++i) {
    if (!eligible(i, &s) || s > cut) continue;
    if (s == cut) {
      if (at_cut == 0) continue;
      --at_cut;
    }
    picked.emplace_back(s, i);
  }
  std::sort(picked.begin(), picked.end());
  if (picked.size() > max_n) picked.resize(max_n);  // pages that went idle between the passes
  out.reserve(picked.size());
  for (const auto& p : picked) out.push_back(p.second);
  return out;
}

std::optional<double> AccessTracker::IdleSeconds(uint64_t idx) const {
  if (idx < first_idx_ || idx >= end_idx_) return std::nullopt;
  std::shared_lock<std::shared_mutex> lock(rebase_mu_);
  const Snapshot snap = Now();
  uint16_t s = stamps_[idx - first_idx_].load(std::memory_order_acquire);
  if (s == kUnknown) return std::nullopt;
  if (s == kActive) return 0.0;
  uint64_t d = DropNs(snap, s);
  return d >= snap.now_ns ? 0.0 : static_cast<double>(snap.now_ns - d) / 1e9;
}

TrackerStats AccessTracker::stats() const {
  std::lock_guard<std::mutex> l(stats_mu_);
  return stats_;
}

}  // namespace agile::track
