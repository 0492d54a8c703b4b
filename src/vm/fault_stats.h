// What the fault service of one VM did, counted where it happens (in
// GuestMemory, before the vCPU is woken, so a guest that sees its access
// done also sees it counted).
#pragma once

#include <atomic>
#include <cstdint>

#include "vm/latency.h"

namespace agile::vm {

struct FaultStats {
  std::atomic<uint64_t> first_touch{0};  // kZero pages served a zero page
  std::atomic<uint64_t> minor{0};        // dropped PTEs re-mapped (read tracking)
  std::atomic<uint64_t> refault{0};      // faults on offloaded pages, served from the source
  std::atomic<uint64_t> prefetched{0};   // offloaded pages brought in next to a refault
  std::atomic<uint64_t> spurious{0};     // already resolved by a racing fault
  std::atomic<uint64_t> deferred{0};     // waited for a page in flight or at a migration source
  std::atomic<uint64_t> fetch_errors{0}; // source unreachable (retried)
  // The fault thread's busy-poll (FaultServer::set_busy_poll): windows that
  // caught a fault, windows spent for nothing (after which it sleeps at once
  // until faults come close together again).
  std::atomic<uint64_t> busy_poll_hits{0};
  std::atomic<uint64_t> busy_poll_misses{0};
  // NowNs() of the first failed fetch since the last good one; 0 = fetching works.
  std::atomic<uint64_t> fetch_failing_since_ns{0};
  LatencyHistogram first_touch_latency;
  LatencyHistogram refault_latency;
};

}  // namespace agile::vm
