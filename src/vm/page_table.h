// The per-page state table of one VM: where each guest page's authoritative
// copy lives (invariant 1). One byte per page; counters kept in step so stats
// are O(1). Thread-safe: states are atomics, transitions are compare-and-swap.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

namespace agile::vm {

enum class PageState : uint8_t {
  kZero = 0,       // never touched or known zero: nothing stored anywhere
  kResident = 1,   // in the RAM file on this host
  kOffloaded = 2,  // in the swap store (memd) only
  kInFlight = 3,   // being moved; its owner (evictor, fetcher, migration) holds it
  kRemote = 4,     // still at the migration source (incoming VM); fetched on demand
};
constexpr int kPageStateCount = 5;
const char* PageStateName(PageState s);

class PageTable {
 public:
  explicit PageTable(uint64_t pages, PageState initial = PageState::kZero);

  uint64_t pages() const { return pages_; }
  PageState Get(uint64_t idx) const { return static_cast<PageState>(states_[idx].load(std::memory_order_acquire)); }

  // Moves idx from `from` to `to` only if it is in `from`; false otherwise.
  bool Transition(uint64_t idx, PageState from, PageState to);
  // Unconditional set (used while nothing else can touch the page).
  void Set(uint64_t idx, PageState to);

  uint64_t Count(PageState s) const { return counts_[static_cast<int>(s)].load(std::memory_order_relaxed); }

 private:
  uint64_t pages_;
  std::unique_ptr<std::atomic<uint8_t>[]> states_;
  std::atomic<uint64_t> counts_[kPageStateCount];
};

}  // namespace agile::vm
