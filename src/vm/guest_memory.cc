#include "vm/guest_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "base/clock.h"
#include "base/io.h"
#include "base/page.h"

namespace agile::vm {

GuestMemory::GuestMemory(UniqueFd ram_fd, uffd::Uffd uffd, ShimLink shim, PageState initial)
    : ram_fd_(std::move(ram_fd)),
      uffd_(std::move(uffd)),
      shim_(std::move(shim)),
      map_(shim_.mapping()),
      table_((map_.file_offset + map_.length) / kPageSize, initial) {}

GuestMemory::~GuestMemory() {
  if (view_ != nullptr) ::munmap(const_cast<uint8_t*>(view_), view_len_);
}

uint64_t GuestMemory::RamFileBytes() const {
  struct stat sb {};
  if (::fstat(ram_fd_.get(), &sb) != 0) return 0;
  return static_cast<uint64_t>(sb.st_blocks) * 512;
}

bool GuestMemory::PageOf(uint64_t addr, uint64_t* idx) const {
  uint64_t page_addr = addr & ~(uint64_t{kPageSize} - 1);
  if (page_addr < map_.base || page_addr >= map_.base + map_.length) return false;
  *idx = (page_addr - map_.base + map_.file_offset) / kPageSize;
  return true;
}

Status GuestMemory::CheckLive() const {
  return retired() ? Unavailable("the VM's guest memory was released (vm stopped)") : Status::Ok();
}

void GuestMemory::Settled() {
  if (on_settle_) on_settle_();
}

void GuestMemory::RecordLocation(std::span<const uint64_t> idx, bool offloaded) {
  if (!locations_) return;
  for (uint64_t i : idx) locations_->Set(i, offloaded);
}

Status GuestMemory::Recover(const std::vector<uint8_t>* remote) {
  if (remote != nullptr && remote->size() != pages())
    return InvalidArgument("recover: the remote page list has " + std::to_string(remote->size()) +
                           " pages, guest RAM " + std::to_string(pages()));
  const uint64_t end = pages() * kPageSize;
  uint64_t pos = 0;
  auto holes_until = [&](uint64_t to) {
    for (uint64_t i = pos / kPageSize; i < to / kPageSize; ++i)
      table_.Set(i, locations_ && locations_->offloaded(i) ? PageState::kOffloaded
                    : remote != nullptr && (*remote)[i]    ? PageState::kRemote
                                                           : PageState::kZero);
  };
  // SEEK_DATA/SEEK_HOLE on tmpfs: whole pages, the page cache's own view.
  while (pos < end) {
    off_t data = ::lseek(ram_fd_.get(), static_cast<off_t>(pos), SEEK_DATA);
    if (data < 0 && errno == ENXIO) break;  // only holes from here on
    if (data < 0) return ErrnoStatus("SEEK_DATA in guest RAM file");
    uint64_t d = std::min<uint64_t>(static_cast<uint64_t>(data) & ~(uint64_t{kPageSize} - 1), end);
    holes_until(d);
    off_t hole = ::lseek(ram_fd_.get(), data, SEEK_HOLE);
    if (hole < 0) return ErrnoStatus("SEEK_HOLE in guest RAM file");
    uint64_t h = std::min<uint64_t>((static_cast<uint64_t>(hole) + kPageSize - 1) & ~(uint64_t{kPageSize} - 1), end);
    for (uint64_t i = d / kPageSize; i < h / kPageSize; ++i) table_.Set(i, PageState::kResident);
    pos = h;
  }
  holes_until(end);
  return Status::Ok();
}

void GuestMemory::Retire() { retired_.store(true, std::memory_order_release); }

Status GuestMemory::Punch(uint64_t first, uint64_t count) {
  if (::fallocate(ram_fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(PageOffset(first)),
                  static_cast<off_t>(count * kPageSize)) != 0)
    return ErrnoStatus("punch hole in guest RAM file");
  return Status::Ok();
}

Result<PageState> GuestMemory::WaitSettled(uint64_t idx) {
  PageState st = table_.Get(idx);
  if (st != PageState::kInFlight) return st;
  const uint64_t deadline = MonotonicNs() + uint64_t{kSettleTimeoutMs} * 1000000;
  while ((st = table_.Get(idx)) == PageState::kInFlight) {
    if (MonotonicNs() > deadline)
      return Unavailable("page " + std::to_string(idx) + " stayed in flight for " + std::to_string(kSettleTimeoutMs) +
                         " ms (a refault waiting on an unreachable swap store?)");
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return st;
}

// ---- fault service ----

FaultOutcome GuestMemory::ServeFault(uint64_t idx, bool minor, uint64_t start_ns, FaultStats* stats,
                                     Status* error) {
  for (;;) {
    const uint64_t addr = AddrOf(idx);
    switch (table_.Get(idx)) {
      case PageState::kZero: {
        // Hold the page in flight while installing it, and wake the guest only
        // after publishing kResident: an evictor that saw kResident before the
        // mapping existed could read the page before a guest write lands and
        // lose that write (invariant 3).
        if (!table_.Transition(idx, PageState::kZero, PageState::kInFlight)) continue;
        Status s = uffd_.ZeroPage(addr, kPageSize, /*wake=*/false);
        if (!s.ok() && s.code() != Code::kAlreadyExists) {
          table_.Set(idx, PageState::kZero);
          *error = s;
          return FaultOutcome::kFailed;
        }
        table_.Set(idx, PageState::kResident);
        Settled();
        (s.ok() ? stats->first_touch : stats->spurious).fetch_add(1, std::memory_order_relaxed);
        stats->first_touch_latency.Record(MonotonicNs() - start_ns);
        Status w = uffd_.Wake(addr, kPageSize);
        if (!w.ok()) {
          *error = w;
          return FaultOutcome::kFailed;
        }
        return s.ok() ? FaultOutcome::kFirstTouch : FaultOutcome::kSpurious;
      }
      case PageState::kResident: {
        // In the RAM file. A MINOR fault means its PTE was dropped; anything
        // else raced with a fault that already mapped it.
        Status s = Status(Code::kAlreadyExists, "mapped");
        if (minor) {
          stats->minor.fetch_add(1, std::memory_order_relaxed);  // before CONTINUE wakes the vCPU
          s = uffd_.Continue(addr, kPageSize);
          if (s.ok()) return FaultOutcome::kRemapped;
          stats->minor.fetch_sub(1, std::memory_order_relaxed);
        }
        // The kernel wakes waiters only when CONTINUE maps the page: after
        // EEXIST (mapped by a racing fault) the thread must be woken.
        if (s.code() == Code::kAlreadyExists) {
          stats->spurious.fetch_add(1, std::memory_order_relaxed);
          s = uffd_.Wake(addr, kPageSize);
          if (s.ok() || s.code() == Code::kAlreadyExists) return FaultOutcome::kSpurious;
          stats->spurious.fetch_sub(1, std::memory_order_relaxed);
        }
        *error = s;
        return FaultOutcome::kFailed;
      }
      case PageState::kOffloaded: return FaultOutcome::kOffloaded;
      case PageState::kInFlight: return FaultOutcome::kInFlight;
      case PageState::kRemote: return FaultOutcome::kRemote;
    }
  }
}

Result<std::vector<uint64_t>> GuestMemory::Refault(uint64_t idx, uint32_t max_pages, PageSource* source,
                                                   uint8_t* buf, uint64_t start_ns, FaultStats* stats) {
  std::vector<uint64_t> claimed;
  if (!table_.Transition(idx, PageState::kOffloaded, PageState::kInFlight)) return claimed;
  // Claim the faulting page, then offloaded pages right after it, so no
  // evictor or migration touches them while they are fetched and installed.
  claimed.push_back(idx);
  for (uint64_t n = idx + 1; n < pages() && claimed.size() < max_pages; ++n) {
    if (!table_.Transition(n, PageState::kOffloaded, PageState::kInFlight)) break;
    claimed.push_back(n);
  }
  auto give_back = [&](size_t from) {
    for (size_t i = from; i < claimed.size(); ++i) table_.Set(claimed[i], PageState::kOffloaded);
    Settled();
  };
  uint8_t present[64] = {};
  std::vector<uint8_t> more_present;
  uint8_t* pres = present;
  if (claimed.size() > sizeof(present)) {
    more_present.assign(claimed.size(), 0);
    pres = more_present.data();
  }
  Status s = source->Fetch(std::span<const uint64_t>(claimed.data(), claimed.size()), buf, pres);
  if (s.ok() && !pres[0]) s = NotFound("the swap store does not hold page " + std::to_string(idx));
  if (!s.ok()) {
    give_back(0);
    return s;
  }
  std::vector<uint64_t> installed;
  for (size_t i = 0; i < claimed.size(); ++i) {
    uint64_t n = claimed[i];
    if (!pres[i]) {  // a prefetch candidate the store lacks: left for its own fault
      table_.Set(n, PageState::kOffloaded);
      continue;
    }
    Status c = uffd_.Copy(AddrOf(n), buf + i * kPageSize, kPageSize, /*wake=*/false);
    if (!c.ok() && c.code() != Code::kAlreadyExists) {
      table_.Set(n, PageState::kOffloaded);
      if (i == 0) {
        give_back(1);
        return c.Annotate("install refaulted page " + std::to_string(n));
      }
      continue;
    }
    table_.Set(n, PageState::kResident);
    installed.push_back(n);
  }
  // After the copy: the file holds the data now, which wins anyway; the bit
  // is cleared so the map counts what the store holds for us.
  RecordLocation(installed, false);
  Settled();
  stats->refault.fetch_add(1, std::memory_order_relaxed);
  stats->prefetched.fetch_add(installed.size() - 1, std::memory_order_relaxed);
  stats->refault_latency.Record(MonotonicNs() - start_ns);
  AGILE_RETURN_IF_ERROR(uffd_.Wake(AddrOf(idx), kPageSize).Annotate("wake after refault"));
  return installed;
}

// ---- offload ----

std::vector<uint64_t> GuestMemory::ClaimResident(std::span<const uint64_t> idx) {
  std::vector<uint64_t> claimed;
  if (retired()) return claimed;
  claimed.reserve(idx.size());
  for (uint64_t i : idx)
    if (i < pages() && table_.Transition(i, PageState::kResident, PageState::kInFlight)) claimed.push_back(i);
  return claimed;
}

Result<const uint8_t*> GuestMemory::ClaimedRun(uint64_t first, uint64_t count) {
  if (first + count > pages() || first + count < first) return Internal("claimed run past the end of guest RAM");
  for (uint64_t i = first; i < first + count; ++i)
    if (table_.Get(i) != PageState::kInFlight) return Internal("page " + std::to_string(i) + " is not claimed");
  std::lock_guard<std::mutex> l(view_mu_);
  if (view_ == nullptr) {
    size_t len = pages() * kPageSize;
    void* p = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, ram_fd_.get(), 0);
    if (p == MAP_FAILED) return ErrnoStatus("map guest RAM file read-only");
    view_ = static_cast<const uint8_t*>(p);
    view_len_ = len;
  }
  const uint8_t* run = view_ + PageOffset(first);
  // One call maps the run instead of a fault per page; where the kernel
  // lacks it, the caller's reads fault the pages in one by one.
  (void)::madvise(const_cast<uint8_t*>(run), count * kPageSize, MADV_POPULATE_READ);
  return run;
}

Status GuestMemory::PublishOffloaded(std::span<const uint64_t> stored, std::span<const uint64_t> zero) {
  // Punch in runs: stored and zero pages are each sorted by the evictor, and
  // a punch per contiguous run keeps fallocate calls few.
  auto punch_all = [&](std::span<const uint64_t> list) {
    return ForEachRun(list, [&](uint64_t first, uint64_t count) { return Punch(first, count); });
  };
  Status s = CheckLive();
  // The record first, the punch second: a crash in between leaves data in
  // the file, which wins over the record at recovery.
  if (s.ok()) RecordLocation(stored, true);
  if (s.ok()) RecordLocation(zero, false);
  if (s.ok()) s = punch_all(stored);
  if (s.ok()) s = punch_all(zero);
  if (!s.ok()) {
    // The pages are in the store and (at least partly) still in the file:
    // either copy is good, so they stay resident.
    Unclaim(stored);
    Unclaim(zero);
    return s;
  }
  for (uint64_t i : stored) table_.Set(i, PageState::kOffloaded);
  for (uint64_t i : zero) table_.Set(i, PageState::kZero);
  Settled();
  return Status::Ok();
}

void GuestMemory::Unclaim(std::span<const uint64_t> idx) {
  for (uint64_t i : idx) table_.Set(i, PageState::kResident);
  Settled();
}

Status GuestMemory::DropPtes(uint64_t first, uint64_t count, uint64_t* elapsed_ns) {
  AGILE_RETURN_IF_ERROR(CheckLive());
  return shim_.DropPtes(PageOffset(first), count * kPageSize, elapsed_ns);
}

// ---- migration source ----

Result<PageState> GuestMemory::ReadPage(uint64_t idx, uint8_t* out, PageSource* store) {
  AGILE_RETURN_IF_ERROR(CheckLive());
  for (;;) {
    AGILE_ASSIGN_OR_RETURN(PageState st, WaitSettled(idx));
    if (st == PageState::kZero || st == PageState::kRemote) return st;
    if (!table_.Transition(idx, st, PageState::kInFlight)) continue;  // moved meanwhile: look again
    Status s;
    if (st == PageState::kResident) {
      s = PreadFull(ram_fd_.get(), out, kPageSize, static_cast<off_t>(PageOffset(idx)));
    } else if (store == nullptr) {
      s = Internal("page " + std::to_string(idx) + " is offloaded but there is no swap store");
    } else {
      uint8_t present = 0;
      s = store->Fetch(std::span<const uint64_t>(&idx, 1), out, &present);
      if (s.ok() && !present) s = Internal("the swap store lost page " + std::to_string(idx));
    }
    table_.Set(idx, st);
    Settled();
    if (!s.ok()) return s;
    return st;
  }
}

Result<std::vector<PageRun>> GuestMemory::LocationRuns() {
  std::vector<PageRun> runs;
  for (uint64_t i = 0; i < pages(); ++i) {
    AGILE_ASSIGN_OR_RETURN(PageState st, WaitSettled(i));
    if (!runs.empty() && runs.back().state == st && runs.back().first + runs.back().count == i) ++runs.back().count;
    else runs.push_back({i, 1, st});
  }
  return runs;
}

// ---- migration destination ----

Result<bool> GuestMemory::InstallIncoming(uint64_t idx, const uint8_t* data, bool overwrite_resident) {
  AGILE_RETURN_IF_ERROR(CheckLive());
  if (idx >= pages()) return Corruption("incoming page " + std::to_string(idx) + " is past the end of guest RAM");
  // A page still at the source is in no mapping (any touch faults and
  // waits), so writing it into the RAM file is safe at any time; the waiting
  // vCPU is retried and maps it.
  PageState from = PageState::kRemote;
  if (!table_.Transition(idx, from, PageState::kInFlight)) {
    from = PageState::kResident;
    if (!overwrite_resident || !table_.Transition(idx, from, PageState::kInFlight)) return false;
  }
  Status s = PwriteFull(ram_fd_.get(), data, kPageSize, static_cast<off_t>(PageOffset(idx)));
  table_.Set(idx, s.ok() ? PageState::kResident : from);
  Settled();
  if (!s.ok()) return s.Annotate("write incoming page");
  return from == PageState::kRemote;
}

Status GuestMemory::MarkStale(uint64_t first, uint64_t count) {
  AGILE_RETURN_IF_ERROR(CheckLive());
  if (first > pages() || count > pages() - first)
    return Corruption("pages " + std::to_string(first) + "+" + std::to_string(count) + " are past the end of guest RAM");
  // [from, i): pages this call moved to kRemote and has not punched yet.
  uint64_t from = first;
  auto punch = [&](uint64_t i) { return i > from ? Punch(from, i - from) : Status::Ok(); };
  for (uint64_t i = first; i < first + count; ++i) {
    if (table_.Transition(i, PageState::kResident, PageState::kRemote)) continue;
    AGILE_RETURN_IF_ERROR(punch(i));
    from = i + 1;
    PageState st = table_.Get(i);
    if (st != PageState::kRemote)
      return Internal("page " + std::to_string(i) + " is " + PageStateName(st) + ", cannot go back to the source");
  }
  return punch(first + count);
}

Status GuestMemory::Relocate(uint64_t first, uint64_t count, PageState to) {
  AGILE_RETURN_IF_ERROR(CheckLive());
  if (to != PageState::kZero && to != PageState::kOffloaded)
    return InvalidArgument(std::string("a page cannot be relocated to ") + PageStateName(to));
  if (first > pages() || count > pages() - first)
    return Corruption("pages " + std::to_string(first) + "+" + std::to_string(count) + " are past the end of guest RAM");
  // Every page of the run is claimed (kInFlight) before its location bit
  // changes and before any copy is punched, and published only after.
  std::vector<uint64_t> claimed;
  std::vector<PageState> was;
  Status s;
  for (uint64_t i = first; i < first + count && s.ok(); ++i) {
    for (;;) {
      PageState st = table_.Get(i);
      if (st == to) break;
      if (st != PageState::kRemote && st != PageState::kResident) {
        s = Internal("page " + std::to_string(i) + " is " + PageStateName(st) + ", cannot be relocated");
        break;
      }
      if (!table_.Transition(i, st, PageState::kInFlight)) continue;
      claimed.push_back(i);
      was.push_back(st);
      break;
    }
  }
  if (s.ok()) {
    RecordLocation(claimed, to == PageState::kOffloaded);
    // Resident copies go, a stretch of consecutive pages per call.
    for (size_t k = 0; k < claimed.size() && s.ok();) {
      if (was[k] != PageState::kResident) {
        ++k;
        continue;
      }
      size_t e = k + 1;
      while (e < claimed.size() && was[e] == PageState::kResident && claimed[e] == claimed[e - 1] + 1) ++e;
      s = Punch(claimed[k], e - k);
      // A failed punch leaves those copies: they stay where they were.
      if (!s.ok()) {
        for (size_t m = 0; m < claimed.size(); ++m) table_.Set(claimed[m], m >= k ? was[m] : to);
        RecordLocation(std::span<const uint64_t>(claimed.data() + k, claimed.size() - k), false);
        Settled();
        return s;
      }
      k = e;
    }
  }
  // On an error before any punch, the claimed pages go back untouched.
  for (size_t m = 0; m < claimed.size(); ++m) table_.Set(claimed[m], s.ok() ? to : was[m]);
  if (!claimed.empty()) Settled();
  return s;
}

}  // namespace agile::vm
