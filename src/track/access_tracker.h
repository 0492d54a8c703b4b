// Working-set tracking of one VM, transparently: writes are seen by
// PAGEMAP_SCAN (WriteScanner), reads by dropping the PTEs of resident pages
// inside the VM process (ShimLink::DropPtes) and counting the pages that then
// MINOR-fault (AccessObserver, called by the FaultServer). Answers the working
// set size over a time window and the coldest resident pages for the offloader.
//
// The two combine: a page the scan has just reported written is known active,
// so its PTE is kept rather than dropped — written pages cost no faults. (A
// page read after a drop is reported written once, see write_scanner.h, so a
// read-only hot page faults every other coverage cycle when all RAM is
// dropped at once.)
//
// Per page, one uint16: unknown (never observed), active (accessed since its
// PTE was last dropped) or idle since drop epoch S (not accessed since that
// drop — any access after a drop faults, so this is known, not sampled).
// Epoch times live in a ring; older ones read as the oldest the ring holds,
// which only ever understates idleness.
//
// Resolution: reads are seen once per coverage cycle (`slices` periods, see
// TrackerStats). WssPages() counts pages that may have been accessed within
// the window, so it over-counts by at most the pages last touched up to two
// cycles before the window; ColdestResident() returns only pages known idle.
//
// Cost: each tick measures its own CPU (scan, walk, drop requests) and the
// madvise time inside the VM process; MINOR faults on dropped pages are
// counted per 2 MiB chunk between two drops of that chunk, so the faults one
// full coverage causes are known exactly however hot pages cluster, and are
// priced at a measured per-fault cost; the write-protect faults that write
// tracking costs the guest are counted from the scans. Period and slicing
// adapt so this stays within `cpu_budget_pct` of one core.
#pragma once

#include <time.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <thread>
#include <vector>

#include "base/status.h"
#include "track/write_scanner.h"
#include "track/wss_sampler.h"
#include "vm/fault_server.h"
#include "vm/page_table.h"
#include "vm/guest_memory.h"

namespace agile::track {

struct TrackerOptions {
  double cpu_budget_pct = 2.0;  // of one core: scans, PTE drops, and the faults both cause in the guest
  uint64_t min_period_ms = 1000;
  uint64_t max_period_ms = 60000;
  // Every resident page's PTE is dropped at least once per `read_cycle`
  // periods; fewer (down to 1: all at once) when the budget allows.
  uint32_t read_cycle = 8;
  // Epochs whose times are kept exactly, and the epoch at which stamps are
  // rebased to stay within 16 bits. Defaults suit production; tests lower
  // them to exercise the rebase.
  uint32_t history_epochs = 4096;
  uint32_t max_epoch = 0xFFFE;
  // The sampled working-set size (wss_sampler.h), run beside the coverage.
  SamplerOptions sampler;
};

struct TrackerStats {
  uint64_t ticks = 0;
  uint64_t epoch = 0;
  double period_ms = 0;          // current wait between ticks
  uint32_t slices = 0;           // periods per full read coverage (1 = all RAM each tick)
  double last_tick_ms = 0;       // tracker thread CPU of the last tick (scan + walk + drop requests)
  double last_scan_ms = 0;       // PAGEMAP_SCAN alone (wall)
  double last_drop_ms = 0;       // madvise time inside the VM process, as the shim measured it
  uint64_t last_written = 0;     // pages reported written by the last scan
  uint64_t last_dropped = 0;     // resident pages whose PTEs the last tick dropped
  uint64_t last_kept = 0;        // resident pages of its slice kept mapped: just seen written
  uint64_t pages_written = 0;    // totals since creation
  uint64_t pages_dropped = 0;
  uint64_t minor_faults = 0;     // MINOR faults since creation (all caused by dropped PTEs)
  uint64_t cycle_faults = 0;     // faults one full coverage caused, last measured
  double fault_cost_us = 0;      // charged per MINOR fault (see access_tracker.cc)
  double est_cpu_pct = 0;        // cost over time of the last full coverage cycle
  uint64_t errors = 0;           // ticks that failed (logged; retried next period)
};

class AccessTracker : public vm::AccessObserver {
 public:
  // `memory` and `faults` must outlive the tracker. Opens the WriteScanner
  // (kUnsupported on kernels without PAGEMAP_SCAN) and takes a baseline
  // scan, since the first scan reports every never-protected page.
  static Result<std::unique_ptr<AccessTracker>> Create(vm::GuestMemory* memory, const vm::FaultStats* faults,
                                                       const TrackerOptions& opts = {});
  ~AccessTracker() override;

  // FaultServer hook, on the fault thread only: lock-free, two relaxed atomics.
  void OnAccess(uint64_t idx) override;

  // One period's work: scan writes, start a new epoch, drop the PTEs of the
  // next slice of resident pages, adapt period and slicing. Serialised with
  // itself; callers either drive Tick() themselves or use Start().
  Status Tick();
  // Runs Tick() every period_ms() on an own thread until Stop(). A tick that
  // fails is logged and retried; kUnavailable (VM process gone) ends the
  // thread. Cost measurement restarts with the first tick, so faults taken
  // while stopped are charged to no period.
  void Start();
  void Stop();  // idempotent; joins the thread

  uint64_t period_ms() const { return period_ms_.load(std::memory_order_relaxed); }

  // Queries: thread-safe, O(pages), safe to call during Tick() and faults.
  // Resident pages that may have been accessed in the last `window_s` seconds.
  uint64_t WssPages(double window_s) const;
  // The sampler's estimate of the working set over its interval (right
  // within two intervals of a phase change); -1 before its first interval.
  int64_t SampledWssPages() const { return sampler_.EstimatePages(); }
  uint64_t sampler_interval_ms() const { return sampler_.interval_ms(); }
  // Up to max_n resident pages not accessed for at least min_idle_s seconds,
  // coldest first (ties by page index).
  std::vector<uint64_t> ColdestResident(size_t max_n, double min_idle_s) const;
  // Seconds page `idx` is known to have been idle: 0 if accessed since its
  // PTE was last dropped, nullopt if not observed yet. Meaningful for
  // resident pages.
  std::optional<double> IdleSeconds(uint64_t idx) const;

  TrackerStats stats() const;

 private:
  static constexpr uint64_t kChunkPages = 512;  // 2 MiB: the unit of slices and of fault counts

  struct Snapshot;  // epoch and clock for one query
  struct WrittenRun {
    uint64_t first, end;
  };
  struct SliceResult {
    uint64_t dropped = 0, kept = 0, drop_ns = 0;
    bool cycle_done = false;  // the walk wrapped: all RAM was covered once more
  };

  AccessTracker(vm::GuestMemory* memory, const vm::FaultStats* faults, const TrackerOptions& opts,
                WriteScanner scanner);

  Snapshot Now() const;
  // Drop time of epoch s as seen from `snap`; UINT64_MAX while its drop runs.
  uint64_t DropNs(const Snapshot& snap, uint32_t s) const;
  void NewEpoch();
  void Rebase();
  void HarvestChunk(uint64_t c);
  Status DropSlice(uint32_t epoch, SliceResult* out);
  double FaultCostNs();
  void Adapt(uint64_t tick_cpu_ns, uint64_t scan_ns, uint64_t written, const SliceResult& slice,
             uint64_t tick_start_ns);
  void Run();

  vm::GuestMemory* mem_;  // read: page states; changed only by dropping PTEs
  const vm::FaultStats* faults_;
  TrackerOptions opts_;
  WriteScanner scanner_;
  uint64_t first_idx_, end_idx_;  // RAM-file pages covered by the mapping
  uint64_t chunks_;

  std::unique_ptr<std::atomic<uint16_t>[]> stamps_;        // per page, encoding in access_tracker.cc
  std::unique_ptr<std::atomic<uint32_t>[]> chunk_faults_;  // faults on dropped pages since the chunk's last drop
  std::unique_ptr<std::atomic<uint64_t>[]> drop_ns_;       // ring: epoch % history_epochs -> drop time
  std::atomic<uint32_t> epoch_{0};
  mutable std::shared_mutex rebase_mu_;  // queries shared; Rebase() exclusive

  // The fault thread's CPU clock, learnt on its first OnAccess(): the
  // measured part of a MINOR fault's cost.
  std::atomic<bool> fault_clock_known_{false};
  clockid_t fault_clock_{};

  std::mutex tick_mu_;  // serialises Tick(); guards the tick-side state below
  uint64_t next_chunk_ = 0;                // where the read coverage walk continues
  uint32_t slices_;
  uint64_t cycles_ = 0;                    // coverage cycles completed
  std::vector<uint32_t> chunk_cycle_faults_;  // each chunk's faults over its last complete cycle
  uint64_t cycle_faults_ = 0;              // their sum: faults one full coverage costs
  std::vector<WrittenRun> written_;        // this tick's scan result
  uint64_t prev_tick_ns_ = 0, prev_tick_cost_ns_ = 0, prev_minor_ = 0;
  uint64_t prev_fault_cpu_ns_ = 0, prev_faults_handled_ = 0;
  double fault_cpu_ns_ = 0;                // EWMA: handler CPU per fault
  double var_ns_per_page_ = 0;             // EWMA: walk + drop cost per covered page
  uint64_t cycle_start_ns_ = 0;            // measured cost of the running coverage cycle
  double cycle_cost_ns_ = 0;
  std::atomic<uint64_t> period_ms_;

  mutable std::mutex stats_mu_;
  TrackerStats stats_;

  std::mutex run_mu_;
  std::condition_variable run_cv_;
  bool stop_ = false;
  std::thread thread_;
  WssSampler sampler_;
};

}  // namespace agile::track
