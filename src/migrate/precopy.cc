#include "migrate/precopy.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "vm/fault_server.h"

namespace agile::migrate {
namespace {
constexpr uint64_t kSmallDirtyPages = 64;
// Rescan for writes this often while a round sends, so a page written since
// the round began waits for the next round instead of being sent twice.
constexpr uint64_t kRescanNs = 50'000'000;
constexpr size_t kChunkPages = 1024;  // pages sent between rescan checks
}  // namespace

PrecopyLoop::PrecopyLoop(vm::GuestMemory* mem, PageStream* stream, PrecopyOptions opt, Hooks hooks)
    : mem_(mem), stream_(stream), opt_(std::move(opt)), hooks_(std::move(hooks)) {}

Status PrecopyLoop::Run(PrecopyResult* r) {
  AGILE_ASSIGN_OR_RETURN(track::WriteScanner scanner, track::WriteScanner::Open(mem_->mapping()));
  const uint64_t npages = mem_->pages();
  // Pages written since the current round began: the next round's scope.
  std::vector<uint8_t> dirty_bm(npages, 0);
  std::vector<uint64_t> dirty, scanned;
  auto collect = [&]() -> Status {
    scanned.clear();
    AGILE_RETURN_IF_ERROR(scanner.Scan(&scanned).status());
    for (uint64_t p : scanned) {
      if (p < npages && !dirty_bm[p]) {
        dirty_bm[p] = 1;
        dirty.push_back(p);
      }
    }
    return Status::Ok();
  };
  // Baseline: from here on every write is seen by a later scan.
  AGILE_RETURN_IF_ERROR(scanner.Scan(&scanned).status());
  // Round 0: what lives here (agile) or everything with data (precopy).
  std::vector<uint64_t> pages;
  for (uint64_t i = 0; i < npages; ++i) {
    vm::PageState st = mem_->state(i);
    if (st == vm::PageState::kResident || st == vm::PageState::kInFlight ||
        (st == vm::PageState::kOffloaded && opt_.mode == wire::MigMode::kPrecopy))
      pages.push_back(i);
  }
  const bool tail_allowed = opt_.mode == wire::MigMode::kAgile && opt_.postcopy_tail;
  uint64_t last_dirty = 0;  // dirty pages after the previous round
  int no_progress = 0;      // consecutive rounds that did not shrink the dirty set
  for (;;) {
    AGILE_RETURN_IF_ERROR(hooks_.cancelled());
    AGILE_RETURN_IF_ERROR(hooks_.peer());
    if (hooks_.progress) hooks_.progress(*r, pages.size());
    uint64_t t = vm::NowNs(), last_scan = t, sent = 0, skipped = 0;
    std::vector<uint64_t> chunk;
    for (size_t at = 0; at < pages.size();) {
      if (vm::NowNs() - last_scan >= kRescanNs) {
        AGILE_RETURN_IF_ERROR(collect());
        last_scan = vm::NowNs();
        AGILE_RETURN_IF_ERROR(hooks_.cancelled());
      }
      chunk.clear();
      for (; at < pages.size() && chunk.size() < kChunkPages; ++at) {
        if (dirty_bm[pages[at]]) ++skipped;  // written again already: goes next round
        else chunk.push_back(pages[at]);
      }
      AGILE_RETURN_IF_ERROR(stream_->Send(chunk, r->rounds, &sent));
    }
    double secs = static_cast<double>(vm::NowNs() - t) / 1e9;
    if (sent > 256 && secs > 0) r->page_rate = static_cast<double>(sent) / secs;
    r->pages_sent += sent;
    AGILE_RETURN_IF_ERROR(stream_->EndRound(r->rounds, sent));
    const uint32_t round = r->rounds++;
    AGILE_RETURN_IF_ERROR(collect());
    for (uint64_t p : dirty) dirty_bm[p] = 0;
    std::sort(dirty.begin(), dirty.end());
    pages.swap(dirty);
    dirty.clear();
    // The rest must fit the downtime target at the measured page rate.
    double rate = r->page_rate > 0 ? r->page_rate : 20000;
    double est_ms = static_cast<double>(pages.size()) / rate * 1000;
    spdlog::info("vm {}: round {} sent {} pages in {:.0f} ms (skipped {} written again); {} dirty, {:.0f} ms to send",
                 opt_.vm, round, sent, secs * 1000, skipped, pages.size(), est_ms);
    if (est_ms <= static_cast<double>(opt_.max_downtime_ms) || pages.size() <= kSmallDirtyPages) break;
    // Agile's hybrid: when the guest writes at least half as many pages as a
    // round sends, further rounds converge slowly or never; post-copying the
    // remainder costs one pass over it instead of one per round plus a long
    // stop-and-copy.
    if (tail_allowed && (pages.size() * 2 >= sent || r->rounds >= opt_.max_rounds)) {
      r->tail = true;
      r->converged = false;
      spdlog::info("vm {}: {} pages were written during round {} ({} sent); they follow after switchover "
                   "(post-copy tail), cold pages from the swap store",
                   opt_.vm, pages.size(), round, sent);
      break;
    }
    // The guest dirties its pages as fast as the link moves them: more rounds
    // only resend the same set. Stop after two rounds without real progress.
    no_progress = (r->rounds > 1 && pages.size() * 10 >= last_dirty * 9) ? no_progress + 1 : 0;
    last_dirty = pages.size();
    if (no_progress >= 2) {
      r->converged = false;
      spdlog::warn("vm {}: pre-copy is not converging ({} pages dirty per round at {:.0f} pages/s, target {} ms); "
                   "stopping the VM for the rest",
                   opt_.vm, pages.size(), rate, opt_.max_downtime_ms);
      break;
    }
    if (r->rounds >= opt_.max_rounds) {
      r->converged = false;
      spdlog::warn("vm {}: pre-copy did not converge after {} rounds ({} pages still dirty, {:.0f} ms at {:.0f} "
                   "pages/s, target {} ms); stopping the VM for the rest",
                   opt_.vm, r->rounds, pages.size(), est_ms, rate, opt_.max_downtime_ms);
      break;
    }
  }
  // Pages dirtied in the last round go with the final stop-and-copy (or the
  // post-copy tail).
  r->dirty.swap(pages);
  r->scanner = std::make_unique<track::WriteScanner>(std::move(scanner));
  return Status::Ok();
}

}  // namespace agile::migrate
