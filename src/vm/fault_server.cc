#include "vm/fault_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <ctime>

#include "uffd/compat.h"

namespace agile::vm {

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

FaultServer::FaultServer(uffd::Uffd* uffd, const GuestMapping& map, PageTable* table, PageSource* source,
                         uint32_t prefetch_pages)
    : uffd_(uffd),
      map_(map),
      table_(table),
      source_(source),
      prefetch_pages_(std::clamp<uint32_t>(prefetch_pages, 1, kMaxPrefetchPages)),
      fetch_buf_(static_cast<size_t>(prefetch_pages_) * uffd::kPageSize) {}

FaultServer::~FaultServer() { Stop(); }

Status FaultServer::Start() {
  wake_fd_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_fd_) return ErrnoStatus("eventfd");
  thread_ = std::thread([this] { Run(); });
  return Status::Ok();
}

void FaultServer::Stop() {
  if (!thread_.joinable()) return;
  stop_.store(true);
  Kick();
  thread_.join();
}

void FaultServer::Kick() {
  uint64_t one = 1;
  if (wake_fd_) (void)!::write(wake_fd_.get(), &one, sizeof(one));
}

void FaultServer::Run() {
  constexpr size_t kBatch = 64;
  uffd_msg msgs[kBatch];
  while (!stop_.load()) {
    pollfd p[2] = {{uffd_->fd(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
    // Deferred faults are retried every millisecond until their page settles.
    int pr = ::poll(p, 2, deferred_.empty() ? 1000 : 1);
    if (pr < 0 && errno != EINTR) {
      if (on_fatal_) on_fatal_(ErrnoStatus("poll userfaultfd"));
      return;
    }
    if (p[1].revents & POLLIN) {
      uint64_t v;
      (void)!::read(wake_fd_.get(), &v, sizeof(v));
    }
    if (p[0].revents & (POLLERR | POLLHUP)) {
      if (on_fatal_) on_fatal_(Unavailable("userfaultfd closed: the VM process is gone"));
      return;
    }
    for (size_t n = deferred_.size(); n > 0; --n) {
      Pending f = deferred_.front();
      deferred_.pop_front();
      if (!Serve(f)) deferred_.push_back(f);
    }
    if (!(p[0].revents & POLLIN)) continue;
    auto got = uffd_->ReadEvents(msgs, kBatch);
    if (!got.ok()) {
      if (on_fatal_) on_fatal_(got.status());
      return;
    }
    uint64_t now = NowNs();
    for (size_t i = 0; i < *got; ++i) {
      if (msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;  // no other events were requested
      Pending f{msgs[i].arg.pagefault.address, msgs[i].arg.pagefault.flags, now};
      if (!Serve(f)) {
        stats_.deferred.fetch_add(1, std::memory_order_relaxed);
        deferred_.push_back(f);
      }
    }
  }
}

bool FaultServer::Serve(const Pending& f) {
  uint64_t page_addr = f.addr & ~(uffd::kPageSize - 1);
  if (page_addr < map_.base || page_addr >= map_.base + map_.length) {
    spdlog::error("fault at {:#x} outside the registered RAM mapping; ignored", f.addr);
    return true;
  }
  uint64_t idx = (page_addr - map_.base + map_.file_offset) / uffd::kPageSize;
  PageState st = table_->Get(idx);
  bool done = ServeState(idx, st, page_addr, f);
  if (done && observer_ != nullptr) observer_->OnAccess(idx);
  return done;
}

bool FaultServer::ServeState(uint64_t idx, PageState st, uint64_t page_addr, const Pending& f) {
  Status s;
  switch (st) {
    case PageState::kZero:
      // Hold the page in flight while installing it, and wake the guest only
      // after publishing kResident: an evictor that saw kResident earlier than
      // the mapping exists could otherwise read the page before a guest write
      // lands and lose that write.
      if (!table_->Transition(idx, PageState::kZero, PageState::kInFlight)) return ServeState(idx, table_->Get(idx), page_addr, f);
      s = uffd_->ZeroPage(page_addr, uffd::kPageSize, /*wake=*/false);
      if (s.ok() || s.code() == Code::kAlreadyExists) {
        table_->Set(idx, PageState::kResident);
        (s.ok() ? stats_.first_touch : stats_.spurious).fetch_add(1, std::memory_order_relaxed);
        s = uffd_->Wake(page_addr, uffd::kPageSize);
        stats_.first_touch_latency.Record(NowNs() - f.start_ns);
        if (s.ok()) return true;
      } else {
        table_->Set(idx, PageState::kZero);
      }
      break;
    case PageState::kResident:
      // The page is in the RAM file. A MINOR fault means its PTE was dropped;
      // anything else raced with a fault that already mapped it.
      if (f.flags & UFFD_PAGEFAULT_FLAG_MINOR) {
        stats_.minor.fetch_add(1, std::memory_order_relaxed);
        s = uffd_->Continue(page_addr, uffd::kPageSize);
        if (s.ok()) return true;
        stats_.minor.fetch_sub(1, std::memory_order_relaxed);
        // The kernel wakes waiters only when CONTINUE maps the page: after
        // EEXIST (already mapped by a racing fault) the thread must be woken.
        if (s.code() == Code::kAlreadyExists) s = uffd_->Wake(page_addr, uffd::kPageSize);
      } else {
        s = uffd_->Wake(page_addr, uffd::kPageSize);
      }
      if (s.ok() || s.code() == Code::kAlreadyExists) {
        stats_.spurious.fetch_add(1, std::memory_order_relaxed);
        return true;
      }
      break;
    case PageState::kOffloaded:
      return ServeOffloaded(idx, f.start_ns);
    case PageState::kInFlight:
      return false;
    case PageState::kRemote: {
      RemotePager* pager = pager_.load();
      if (pager != nullptr) pager->Request(idx);  // retried every ms while deferred: the pager de-duplicates
      return false;
    }
  }
  if (s.code() == Code::kUnavailable) {
    if (on_fatal_) on_fatal_(s);
    stop_.store(true);
    return true;
  }
  spdlog::error("page {}: cannot resolve fault ({}); will retry", idx, s.ToString());
  return false;
}

bool FaultServer::ServeOffloaded(uint64_t idx, uint64_t start_ns) {
  if (source_ == nullptr) {
    spdlog::error("page {} is offloaded but no swap store is configured; the vCPU waits", idx);
    return false;
  }
  // Claim the faulting page, then any offloaded pages right after it, so no
  // evictor or migration touches them while we install them.
  if (!table_->Transition(idx, PageState::kOffloaded, PageState::kInFlight)) return false;
  std::vector<uint64_t> claimed = {idx};
  uint64_t map_first = map_.file_offset / uffd::kPageSize;
  uint64_t map_end = map_first + map_.length / uffd::kPageSize;
  for (uint64_t n = idx + 1; n < map_end && claimed.size() < prefetch_pages_; ++n) {
    if (!table_->Transition(n, PageState::kOffloaded, PageState::kInFlight)) break;
    claimed.push_back(n);
  }
  uint8_t present[kMaxPrefetchPages] = {};
  uint8_t* buf = fetch_buf_.data();
  Status s = source_->Fetch(std::span<const uint64_t>(claimed.data(), claimed.size()), buf, present);
  if (s.ok() && !present[0]) s = NotFound("the swap store does not hold page " + std::to_string(idx));
  if (!s.ok()) {
    for (uint64_t n : claimed) table_->Set(n, PageState::kOffloaded);
    stats_.fetch_errors.fetch_add(1, std::memory_order_relaxed);
    uint64_t now = NowNs();
    if (now - last_fetch_warn_ns_ > 1000000000ULL) {
      last_fetch_warn_ns_ = now;
      spdlog::error("page {}: swap store fetch failed ({}); the vCPU waits until the page can be fetched", idx,
                    s.ToString());
    }
    return false;
  }
  for (size_t i = 0; i < claimed.size(); ++i) {
    uint64_t n = claimed[i];
    if (!present[i]) {  // a prefetch candidate the store lacks: leave it for its own fault
      table_->Set(n, PageState::kOffloaded);
      continue;
    }
    uint64_t addr = map_.base + (n - map_first) * uffd::kPageSize;
    Status c = uffd_->Copy(addr, buf + i * uffd::kPageSize, uffd::kPageSize, /*wake=*/false);
    if (!c.ok() && c.code() != Code::kAlreadyExists) {
      table_->Set(n, PageState::kOffloaded);
      spdlog::error("page {}: UFFDIO_COPY failed ({})", n, c.ToString());
      if (i == 0) return false;
      continue;
    }
    table_->Set(n, PageState::kResident);
    if (i > 0) {
      stats_.prefetched.fetch_add(1, std::memory_order_relaxed);
      // Brought in beside a refault: young, so no evictor takes it straight back.
      if (observer_ != nullptr) observer_->OnAccess(n);
    }
  }
  stats_.refault.fetch_add(1, std::memory_order_relaxed);
  Status w = uffd_->Wake(map_.base + (idx - map_first) * uffd::kPageSize, uffd::kPageSize);
  if (!w.ok()) spdlog::error("page {}: UFFDIO_WAKE failed ({})", idx, w.ToString());
  stats_.refault_latency.Record(NowNs() - start_ns);
  return true;
}

}  // namespace agile::vm
