// How a migration's sender reads cold pages from the VM's swap store: on the
// store's bulk connection, not the fault thread's, so a migration never
// queues behind (or ahead of) guest faults; and, once the migration is past
// its commit point, riding out a store outage instead of failing (giving up
// then strands the VM at the destination: docs/reliability.md, finding 4).
//
// Thread-safe as the store is (the demand-serving and push threads share one).
#pragma once

#include <atomic>
#include <cstdint>
#include <span>

#include "base/status.h"
#include "offload/swap_store.h"
#include "vm/page_source.h"

namespace agile::migrate {

class StoreReader : public vm::PageSource {
 public:
  explicit StoreReader(offload::SwapStore* store) : store_(store) {}
  // A fetch failing kUnavailable (store down, restarting, partitioned) is
  // retried every kRetryMs while the retry budget lasts (each attempt is
  // bounded by the store's own connect and request timeouts); any other
  // error, and kUnavailable with no budget left, is returned.
  Status Fetch(std::span<const uint64_t> idx, uint8_t* out, uint8_t* present) override;
  // 0 (the default): no retry, the caller fails at once.
  void set_retry_ms(int ms) { retry_ms_.store(ms); }
  static constexpr int kRetryMs = 250;

 private:
  offload::SwapStore* store_;
  std::atomic<int> retry_ms_{0};
};

}  // namespace agile::migrate
