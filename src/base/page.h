// The guest page: the unit every part of agile moves, tracks and stores.
// x86-64 small pages; huge pages are not used for guest RAM (the RAM file is
// on tmpfs without huge=, so the kernel faults and reports 4 KiB pages).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "base/status.h"

namespace agile {

constexpr size_t kPageSize = 4096;
constexpr unsigned kPageShift = 12;
static_assert(size_t{1} << kPageShift == kPageSize);

// Byte offset of page `idx` in the RAM file.
constexpr uint64_t PageOffset(uint64_t idx) { return idx << kPageShift; }
// Pages needed to hold `bytes` (rounded up).
constexpr uint64_t PagesFor(uint64_t bytes) { return (bytes + kPageSize - 1) >> kPageShift; }

// Calls f(first, count) for each run of consecutive indexes in `sorted`, so a
// range operation (punch, drop PTEs) is one call per run, not per page.
// Stops at, and returns, the first error f returns.
template <class F>
Status ForEachRun(std::span<const uint64_t> sorted, F f) {
  for (size_t i = 0; i < sorted.size();) {
    size_t j = i + 1;
    while (j < sorted.size() && sorted[j] == sorted[j - 1] + 1) ++j;
    AGILE_RETURN_IF_ERROR(f(sorted[i], uint64_t{j - i}));
    i = j;
  }
  return Status::Ok();
}

}  // namespace agile
