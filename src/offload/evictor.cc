#include "offload/evictor.h"

#include <fcntl.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "base/io.h"
#include "store/memd_proto.h"

namespace agile::offload {
namespace {

constexpr size_t kPage = 4096;
constexpr size_t kBatchPages = 2048;     // pages claimed and moved per round (8 MiB)
constexpr uint64_t kMergeGapPages = 32;  // drop PTEs over gaps this small: one shim call, a few extra MINOR faults

bool AllZero(const uint8_t* p) {
  const auto* w = reinterpret_cast<const uint64_t*>(p);
  for (size_t i = 0; i < kPage / 8; ++i)
    if (w[i] != 0) return false;
  return true;
}

struct Run {
  uint64_t first, count;
};

// Contiguous runs of sorted indexes; with merge_gap > 0, runs closer than
// that are joined (used for PTE drops, never for reads or punches).
std::vector<Run> Runs(const std::vector<uint64_t>& sorted, uint64_t merge_gap) {
  std::vector<Run> runs;
  for (uint64_t idx : sorted) {
    if (!runs.empty() && idx - (runs.back().first + runs.back().count) <= merge_gap) {
      runs.back().count = idx - runs.back().first + 1;
    } else {
      runs.push_back({idx, 1});
    }
  }
  return runs;
}

}  // namespace

Result<EvictReport> Evictor::EvictTo(uint64_t target_pages, VictimPolicy* policy) {
  EvictReport r;
  uint64_t t0 = vm::NowNs();
  AGILE_RETURN_IF_ERROR(store_->Claim());
  for (;;) {
    uint64_t resident = table_->Count(vm::PageState::kResident);
    if (resident <= target_pages) break;
    auto victims = policy->Coldest(std::min<uint64_t>(resident - target_pages, kBatchPages));
    if (victims.empty()) break;
    uint64_t before = r.pages_offloaded + r.pages_zero;
    AGILE_RETURN_IF_ERROR(EvictPages(std::move(victims), &r));
    if (r.pages_offloaded + r.pages_zero == before) break;  // everything raced back in; try again later
  }
  r.seconds = static_cast<double>(vm::NowNs() - t0) / 1e9;
  r.resident_after = table_->Count(vm::PageState::kResident);
  return r;
}

Status Evictor::EvictPages(std::vector<uint64_t> victims, EvictReport* report) {
  std::sort(victims.begin(), victims.end());
  victims.erase(std::unique(victims.begin(), victims.end()), victims.end());
  // 1. claim
  std::vector<uint64_t> claimed;
  claimed.reserve(victims.size());
  for (uint64_t idx : victims)
    if (idx < table_->pages() && table_->Transition(idx, vm::PageState::kResident, vm::PageState::kInFlight))
      claimed.push_back(idx);
  if (claimed.empty()) return Status::Ok();
  auto put_back = [&](const Status& why) {
    for (uint64_t idx : claimed) table_->Set(idx, vm::PageState::kResident);
    faults_->Kick();
    return why;
  };
  // 2. no access without a fault from here on
  for (const Run& run : Runs(claimed, kMergeGapPages)) {
    Status s = shim_->DropPtes(run.first * kPage, run.count * kPage);
    if (!s.ok()) return put_back(s.Annotate("drop PTEs before offload"));
  }
  // 3. read out, split zero pages from data pages
  std::vector<uint8_t> buf(claimed.size() * kPage);
  std::vector<memd::PageRef> data;
  std::vector<uint64_t> zero;
  size_t at = 0;
  for (const Run& run : Runs(claimed, 0)) {
    uint8_t* p = buf.data() + at * kPage;
    Status s = PreadFull(ram_fd_, p, run.count * kPage, static_cast<off_t>(run.first * kPage));
    if (!s.ok()) return put_back(s.Annotate("read guest RAM"));
    for (uint64_t i = 0; i < run.count; ++i) {
      const uint8_t* page = p + i * kPage;
      if (AllZero(page)) zero.push_back(run.first + i);
      else data.push_back({run.first + i, page});
    }
    at += run.count;
  }
  // 4. store; the data must be safe in memd before it leaves the RAM file
  if (!data.empty()) {
    Status s = store_->Put(data);
    if (!s.ok()) return put_back(s.Annotate("offload to swap store"));
  }
  // 5. free host memory, then publish where each page now lives
  for (const Run& run : Runs(claimed, 0)) {
    if (::fallocate(ram_fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(run.first * kPage),
                    static_cast<off_t>(run.count * kPage)) != 0) {
      // The pages are stored in memd and still in the file: either copy is
      // good, so keep them resident and report.
      return put_back(ErrnoStatus("punch hole in guest RAM file"));
    }
  }
  for (const auto& p : data) table_->Set(p.index, vm::PageState::kOffloaded);
  for (uint64_t idx : zero) table_->Set(idx, vm::PageState::kZero);
  faults_->Kick();  // faults that waited on these pages can be served now
  report->pages_offloaded += data.size();
  report->pages_zero += zero.size();
  report->bytes_sent += data.size() * kPage;
  report->batches += 1;
  return Status::Ok();
}

}  // namespace agile::offload
