// Where a VM's non-resident pages are fetched from on a fault: the swap store
// (memd) for offloaded pages, or a migration source. Called only from the
// fault thread. Implementations block until the data arrives or fail
// (kUnavailable); the fault server then retries and never substitutes zeros.
#pragma once

#include <cstdint>
#include <span>

#include "base/status.h"

namespace agile::vm {

class PageSource {
 public:
  virtual ~PageSource() = default;
  // Reads pages idx[i] into out + i*4096 and sets present[i] (1 = found).
  // A page the source does not hold is present[i] = 0: for the faulting page
  // that is a data-loss condition the caller reports, never zero-fills.
  virtual Status Fetch(std::span<const uint64_t> idx, uint8_t* out, uint8_t* present) = 0;
};

}  // namespace agile::vm
