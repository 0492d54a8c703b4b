#include "vm/page_table.h"

namespace agile::vm {

const char* PageStateName(PageState s) {
  switch (s) {
    case PageState::kZero: return "zero";
    case PageState::kResident: return "resident";
    case PageState::kOffloaded: return "offloaded";
    case PageState::kInFlight: return "in_flight";
    case PageState::kRemote: return "remote";
  }
  return "?";
}

PageTable::PageTable(uint64_t pages, PageState initial) : pages_(pages), states_(new std::atomic<uint8_t>[pages]) {
  for (uint64_t i = 0; i < pages; ++i) states_[i].store(static_cast<uint8_t>(initial), std::memory_order_relaxed);
  for (auto& c : counts_) c.store(0);
  counts_[static_cast<int>(initial)].store(pages);
}

bool PageTable::Transition(uint64_t idx, PageState from, PageState to) {
  auto expected = static_cast<uint8_t>(from);
  if (!states_[idx].compare_exchange_strong(expected, static_cast<uint8_t>(to), std::memory_order_acq_rel))
    return false;
  if (from != to) {
    counts_[static_cast<int>(from)].fetch_sub(1, std::memory_order_relaxed);
    counts_[static_cast<int>(to)].fetch_add(1, std::memory_order_relaxed);
  }
  return true;
}

void PageTable::Set(uint64_t idx, PageState to) {
  auto old = static_cast<PageState>(states_[idx].exchange(static_cast<uint8_t>(to), std::memory_order_acq_rel));
  if (old != to) {
    counts_[static_cast<int>(old)].fetch_sub(1, std::memory_order_relaxed);
    counts_[static_cast<int>(to)].fetch_add(1, std::memory_order_relaxed);
  }
}

}  // namespace agile::vm
