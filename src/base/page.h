// The guest page: the unit every part of agile moves, tracks and stores.
// x86-64 small pages; huge pages are not used for guest RAM (the RAM file is
// on tmpfs without huge=, so the kernel faults and reports 4 KiB pages).
#pragma once

#include <cstddef>
#include <cstdint>

namespace agile {

constexpr size_t kPageSize = 4096;
constexpr unsigned kPageShift = 12;
static_assert(size_t{1} << kPageShift == kPageSize);

// Byte offset of page `idx` in the RAM file.
constexpr uint64_t PageOffset(uint64_t idx) { return idx << kPageShift; }
// Pages needed to hold `bytes` (rounded up).
constexpr uint64_t PagesFor(uint64_t bytes) { return (bytes + kPageSize - 1) >> kPageShift; }

}  // namespace agile
