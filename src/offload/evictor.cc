#include "offload/evictor.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <future>
#include <span>
#include <system_error>
#include <vector>

#include "wire/memd_proto.h"

namespace agile::offload {
namespace {

constexpr size_t kPage = 4096;
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

Evictor::~Evictor() {
  if (ram_ != nullptr) ::munmap(const_cast<uint8_t*>(ram_), ram_len_);
}

Status Evictor::MapRam() {
  if (ram_ != nullptr) return Status::Ok();
  struct stat st {};
  if (::fstat(ram_fd_, &st) != 0) return ErrnoStatus("fstat guest RAM file");
  if (st.st_size <= 0) return Internal("guest RAM file is empty");
  void* p = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_SHARED, ram_fd_, 0);
  if (p == MAP_FAILED) return ErrnoStatus("map guest RAM file for offload");
  ram_ = static_cast<const uint8_t*>(p);
  ram_len_ = static_cast<size_t>(st.st_size);
  return Status::Ok();
}

Result<EvictReport> Evictor::EvictTo(uint64_t target_pages, VictimPolicy* policy) {
  EvictReport r;
  uint64_t t0 = vm::NowNs();
  AGILE_RETURN_IF_ERROR(store_->Claim());
  for (;;) {
    uint64_t resident = table_->Count(vm::PageState::kResident);
    if (resident <= target_pages) break;
    auto victims = policy->Coldest(std::min<uint64_t>(resident - target_pages, kBatchPages * kBatchesPerCall));
    if (victims.empty()) break;
    uint64_t before = r.pages_offloaded + r.pages_zero;
    AGILE_RETURN_IF_ERROR(EvictPages(std::move(victims), &r));
    if (r.pages_offloaded + r.pages_zero == before) break;  // everything raced back in; try again later
  }
  r.seconds = static_cast<double>(vm::NowNs() - t0) / 1e9;
  r.resident_after = table_->Count(vm::PageState::kResident);
  return r;
}

void Evictor::PutBack(const Batch& b) {
  for (uint64_t idx : b.claimed) table_->Set(idx, vm::PageState::kResident);
  faults_->Kick();
}

Status Evictor::Prepare(std::vector<uint64_t> victims, Batch* b) {
  // 1. claim
  b->claimed.clear();
  b->claimed.reserve(victims.size());
  for (uint64_t idx : victims)
    if (idx < table_->pages() && table_->Transition(idx, vm::PageState::kResident, vm::PageState::kInFlight))
      b->claimed.push_back(idx);
  if (b->claimed.empty()) return Status::Ok();
  auto put_back = [&](const Status& why) {
    PutBack(*b);
    b->claimed.clear();
    return why;
  };
  // 2. no access without a fault from here on
  for (const Run& run : Runs(b->claimed, kMergeGapPages)) {
    Status s = shim_->DropPtes(run.first * kPage, run.count * kPage);
    if (!s.ok()) return put_back(s.Annotate("drop PTEs before offload"));
  }
  // 3. read out, split zero pages from data pages
  if (Status s = MapRam(); !s.ok()) return put_back(s);
  b->data.clear();
  b->zero.clear();
  for (const Run& run : Runs(b->claimed, 0)) {
    if ((run.first + run.count) * kPage > ram_len_) return put_back(Internal("page past the end of the RAM file"));
    const uint8_t* p = ram_ + run.first * kPage;
    // One call maps the run instead of a fault per page; where the kernel
    // lacks it, the reads below fault the pages in one by one.
    (void)::madvise(const_cast<uint8_t*>(p), run.count * kPage, MADV_POPULATE_READ);
    for (uint64_t i = 0; i < run.count; ++i) {
      const uint8_t* page = p + i * kPage;
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
  // 5. free host memory, then publish where each page now lives
  for (const Run& run : Runs(b->claimed, 0)) {
    if (::fallocate(ram_fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(run.first * kPage),
                    static_cast<off_t>(run.count * kPage)) != 0) {
      // The pages are stored in memd and still in the file: either copy is
      // good, so keep them resident and report.
      Status st = ErrnoStatus("punch hole in guest RAM file");
      PutBack(*b);
      return done(st);
    }
  }
  for (const auto& p : b->data) table_->Set(p.index, vm::PageState::kOffloaded);
  for (uint64_t idx : b->zero) table_->Set(idx, vm::PageState::kZero);
  faults_->Kick();  // faults that waited on these pages can be served now
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
