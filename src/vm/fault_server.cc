#include "vm/fault_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <ctime>

#include "uffd/compat.h"

namespace agile::vm {

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

FaultServer::FaultServer(uffd::Uffd* uffd, const GuestMapping& map, PageTable* table, PageSource* source)
    : uffd_(uffd), map_(map), table_(table), source_(source) {}

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
      s = uffd_->ZeroPage(page_addr, uffd::kPageSize);
      if (s.ok() || s.code() == Code::kAlreadyExists) {
        table_->Transition(idx, PageState::kZero, PageState::kResident);
        if (s.ok()) {
          stats_.first_touch.fetch_add(1, std::memory_order_relaxed);
          stats_.first_touch_latency.Record(NowNs() - f.start_ns);
        } else {
          stats_.spurious.fetch_add(1, std::memory_order_relaxed);
        }
        return true;
      }
      break;
    case PageState::kResident:
      // The page is in the RAM file. A MINOR fault means its PTE was dropped;
      // anything else raced with a fault that already mapped it.
      s = (f.flags & UFFD_PAGEFAULT_FLAG_MINOR) ? uffd_->Continue(page_addr, uffd::kPageSize)
                                                : uffd_->Wake(page_addr, uffd::kPageSize);
      if (s.ok() && (f.flags & UFFD_PAGEFAULT_FLAG_MINOR)) {
        stats_.minor.fetch_add(1, std::memory_order_relaxed);
        return true;
      }
      if (s.ok() || s.code() == Code::kAlreadyExists) {
        stats_.spurious.fetch_add(1, std::memory_order_relaxed);
        return true;
      }
      break;
    case PageState::kOffloaded:
      return ServeOffloaded(idx, page_addr, f.start_ns);
    case PageState::kInFlight:
      return false;
  }
  if (s.code() == Code::kUnavailable) {
    if (on_fatal_) on_fatal_(s);
    stop_.store(true);
    return true;
  }
  spdlog::error("page {}: cannot resolve fault ({}); will retry", idx, s.ToString());
  return false;
}

bool FaultServer::ServeOffloaded(uint64_t idx, uint64_t page_addr, uint64_t start_ns) {
  if (source_ == nullptr) {
    spdlog::error("page {} is offloaded but no swap store is configured; the vCPU waits", idx);
    return false;
  }
  // Claim the page so no evictor or migration touches it while we install it.
  if (!table_->Transition(idx, PageState::kOffloaded, PageState::kInFlight)) return false;
  alignas(4096) static thread_local uint8_t buf[uffd::kPageSize];
  Status s = source_->Fetch(idx, buf);
  if (!s.ok()) {
    table_->Set(idx, PageState::kOffloaded);
    stats_.fetch_errors.fetch_add(1, std::memory_order_relaxed);
    uint64_t now = NowNs();
    if (now - last_fetch_warn_ns_ > 1000000000ULL) {
      last_fetch_warn_ns_ = now;
      spdlog::error("page {}: swap store fetch failed ({}); the vCPU waits until it is reachable", idx,
                    s.ToString());
    }
    return false;
  }
  s = uffd_->Copy(page_addr, buf, uffd::kPageSize);
  if (!s.ok() && s.code() != Code::kAlreadyExists) {
    table_->Set(idx, PageState::kOffloaded);
    spdlog::error("page {}: UFFDIO_COPY failed ({})", idx, s.ToString());
    return false;
  }
  table_->Set(idx, PageState::kResident);
  stats_.refault.fetch_add(1, std::memory_order_relaxed);
  stats_.refault_latency.Record(NowNs() - start_ns);
  return true;
}

}  // namespace agile::vm
