#include "offload/evictor.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <future>
#include <span>
#include <system_error>
#include <vector>

#include "base/clock.h"
#include "base/page.h"
#include "wire/memd_proto.h"

namespace agile::offload {
namespace {

constexpr size_t kPage = kPageSize;
constexpr size_t kBatchPages = 2048;     // pages claimed and moved per round (8 MiB)
// EvictTo hands the pipeline this many batches at a time, so the PUT of one
// overlaps the drop and read of the next (and the policy's scan of the page
// table is paid once per 64 MiB, not per 8 MiB).
constexpr size_t kBatchesPerCall = 8;
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

// One batch between its claim and its publication.
struct Evictor::Batch {
  std::vector<uint64_t> claimed;     // kInFlight, sorted
  std::vector<memd::PageRef> data;   // pages to store (point into the RAM mapping)
  std::vector<uint64_t> zero;        // all-zero pages: marked, never sent
};

Result<EvictReport> Evictor::EvictTo(uint64_t target_pages, VictimPolicy* policy) {
  EvictReport r;
  uint64_t t0 = MonotonicNs();
  AGILE_RETURN_IF_ERROR(store_->Claim());
  for (;;) {
    uint64_t resident = mem_->count(vm::PageState::kResident);
    if (resident <= target_pages) break;
    auto victims = policy->Coldest(std::min<uint64_t>(resident - target_pages, kBatchPages * kBatchesPerCall));
    if (victims.empty()) break;
    uint64_t before = r.pages_offloaded + r.pages_zero;
    AGILE_RETURN_IF_ERROR(EvictPages(std::move(victims), &r));
    if (r.pages_offloaded + r.pages_zero == before) break;  // everything raced back in; try again later
  }
  r.seconds = static_cast<double>(MonotonicNs() - t0) / 1e9;
  r.resident_after = mem_->count(vm::PageState::kResident);
  return r;
}

void Evictor::PutBack(const Batch& b) { mem_->Unclaim(b.claimed); }

Status Evictor::Prepare(std::vector<uint64_t> victims, Batch* b) {
  // 1. claim
  b->claimed = mem_->ClaimResident(victims);
  if (b->claimed.empty()) return Status::Ok();
  auto put_back = [&](const Status& why) {
    PutBack(*b);
    b->claimed.clear();
    return why;
  };
  // 2. no access without a fault from here on
  for (const Run& run : Runs(b->claimed, kMergeGapPages)) {
    Status s = mem_->DropPtes(run.first, run.count);
    if (!s.ok()) return put_back(s.Annotate("drop PTEs before offload"));
  }
  // 3. read out, split zero pages from data pages
  b->data.clear();
  b->zero.clear();
  for (const Run& run : Runs(b->claimed, 0)) {
    auto p = mem_->ClaimedRun(run.first, run.count);
    if (!p.ok()) return put_back(p.status());
    for (uint64_t i = 0; i < run.count; ++i) {
      const uint8_t* page = *p + i * kPage;
      if (AllZero(page)) b->zero.push_back(run.first + i);
      else b->data.push_back({run.first + i, page});
    }
  }
  return Status::Ok();
}

Status Evictor::Finish(Batch* b, const Status& put_status, EvictReport* report) {
  auto done = [&](Status st) {
    b->claimed.clear();
    return st;
  };
  // 4. (the PUT) the data must be safe in memd before it leaves the RAM file
  if (!put_status.ok()) {
    PutBack(*b);
    return done(put_status.Annotate("offload to swap store"));
  }
  // 5. free host memory, then publish where each page now lives (on a
  // failed punch the pages stay resident: both copies are good)
  std::vector<uint64_t> stored;
  stored.reserve(b->data.size());
  for (const auto& p : b->data) stored.push_back(p.index);
  if (Status st = mem_->PublishOffloaded(stored, b->zero); !st.ok()) return done(st);
  report->pages_offloaded += b->data.size();
  report->pages_zero += b->zero.size();
  report->bytes_sent += b->data.size() * kPage;
  report->batches += 1;
  return done(Status::Ok());
}

Status Evictor::EvictPages(std::vector<uint64_t> victims, EvictReport* report) {
  std::sort(victims.begin(), victims.end());
  victims.erase(std::unique(victims.begin(), victims.end()), victims.end());
  // Two batches at most are between claim and publication: `flying`, whose
  // PUT runs on a helper thread, and `next`, being prepared meanwhile. The
  // helper only talks to the store; the page table, the shim and the RAM
  // file are touched from this thread alone.
  Batch batches[2];
  Batch* flying = nullptr;
  std::future<Status> put;
  Status first_error;
  auto land = [&] {  // waits for the flying batch's PUT, then punches and publishes it
    Status st = Finish(flying, put.get(), report);
    flying = nullptr;
    if (!st.ok() && first_error.ok()) first_error = st;
  };
  for (size_t at = 0; at < victims.size() && first_error.ok(); at += kBatchPages) {
    Batch* next = flying == &batches[0] ? &batches[1] : &batches[0];
    size_t end = std::min(victims.size(), at + kBatchPages);
    Status st = Prepare(std::vector<uint64_t>(victims.begin() + static_cast<long>(at),
                                              victims.begin() + static_cast<long>(end)),
                        next);
    if (flying != nullptr) land();
    if (!st.ok() && first_error.ok()) first_error = st;
    if (!first_error.ok()) {
      // Stop at the first failure; a batch already prepared goes back.
      if (!next->claimed.empty()) {
        PutBack(*next);
        next->claimed.clear();
      }
      break;
    }
    if (next->claimed.empty()) continue;  // everything raced back in
    if (next->data.empty()) {             // only zero pages: nothing to store
      if (Status f = Finish(next, Status::Ok(), report); !f.ok()) first_error = f;
      continue;
    }
    auto pages = std::span<const memd::PageRef>(next->data);
    try {
      put = std::async(std::launch::async, [this, pages] { return store_->Put(pages); });
    } catch (const std::system_error&) {
      // No thread to be had: store this batch without overlap.
      std::promise<Status> now;
      now.set_value(store_->Put(pages));
      put = now.get_future();
    }
    flying = next;
  }
  if (flying != nullptr) land();
  return first_error;
}

}  // namespace agile::offload
