#include "offload/victim_policy.h"

#include <algorithm>
#include <unordered_set>

namespace agile::offload {

LastFaultPolicy::LastFaultPolicy(const vm::GuestMemory* memory)
    : mem_(memory), stamp_(new std::atomic<uint32_t>[memory->pages()]) {
  for (uint64_t i = 0; i < memory->pages(); ++i) stamp_[i].store(0, std::memory_order_relaxed);
}

void LastFaultPolicy::OnAccess(uint64_t idx) {
  stamp_[idx].store(seq_.fetch_add(1, std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

std::vector<uint64_t> LastFaultPolicy::Coldest(size_t n) {
  std::vector<std::pair<uint32_t, uint64_t>> resident;
  for (uint64_t i = 0; i < mem_->pages(); ++i)
    if (mem_->state(i) == vm::PageState::kResident) resident.emplace_back(stamp_[i].load(std::memory_order_relaxed), i);
  n = std::min(n, resident.size());
  std::partial_sort(resident.begin(), resident.begin() + static_cast<long>(n), resident.end());
  std::vector<uint64_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = resident[i].second;
  return out;
}

std::vector<uint64_t> TrackerPolicy::Coldest(size_t n) {
  std::vector<uint64_t> out = tracker_->ColdestResident(n, 0);
  if (out.size() >= n || fallback_ == nullptr) return out;
  std::unordered_set<uint64_t> taken(out.begin(), out.end());
  for (uint64_t idx : fallback_->Coldest(n)) {
    if (out.size() >= n) break;
    if (!taken.count(idx)) out.push_back(idx);
  }
  return out;
}

}  // namespace agile::offload
