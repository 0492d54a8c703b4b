// Where a VM's non-resident pages are fetched from on a fault: the swap store
// (memd) for offloaded pages, or a migration source. Implementations must be
// safe to call from the fault thread; they block until the data arrives or
// fail (Unavailable) - the fault server retries and never substitutes zeros.
#pragma once

#include <cstdint>

#include "base/status.h"

namespace agile::vm {

class PageSource {
 public:
  virtual ~PageSource() = default;
  // Reads page `idx` (4 KiB) into out. kNotFound means the source holds no
  // such page - a data-loss condition the caller reports, never zero-fills.
  virtual Status Fetch(uint64_t idx, uint8_t* out) = 0;
};

}  // namespace agile::vm
