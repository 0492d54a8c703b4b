#include "vm/fault_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>

#include "base/page.h"

namespace agile::vm {
namespace {
// The server whose fault thread this is (null on other threads): a page
// settled by the fault thread itself needs no kick, as the loop retries its
// deferred faults before it sleeps again. Skipping it saves an eventfd write
// and a spurious poll wake-up per fault.
thread_local const FaultServer* tls_serving = nullptr;
}  // namespace

FaultServer::FaultServer(GuestMemory* memory, PageSource* source, uint32_t prefetch_pages)
    : mem_(memory),
      source_(source),
      prefetch_pages_(std::clamp<uint32_t>(prefetch_pages, 1, kMaxPrefetchPages)),
      fetch_buf_(static_cast<size_t>(prefetch_pages_) * kPageSize) {}

FaultServer::~FaultServer() { Stop(); }

Status FaultServer::Start() {
  wake_fd_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_fd_) return ErrnoStatus("eventfd");
  mem_->set_settle_listener([this] { Kick(); });
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
  if (tls_serving == this) return;
  uint64_t one = 1;
  if (wake_fd_) (void)!::write(wake_fd_.get(), &one, sizeof(one));
}

void FaultServer::Run() {
  tls_serving = this;
  constexpr size_t kBatch = 64;
  uffd_msg msgs[kBatch];
  while (!stop_.load()) {
    // Busy-poll the (non-blocking) uffd for a moment before sleeping: the
    // next fault of a vCPU that is faulting page after page usually comes
    // within microseconds, and putting this thread to sleep and waking it
    // costs more than the fault itself (fault_bench).
    // Adaptive (see set_busy_poll): a window that caught nothing turns it
    // off until faults come close together again, so a sparsely faulting
    // guest does not lose a core's time to it (TCG on two cores did).
    size_t got = 0;
    if (deferred_.empty() && busy_poll_ns_ > 0 && spin_) {
      auto r = PollFaults(msgs, kBatch);
      if (!r.ok()) return;
      got = *r;
      spin_ = got > 0;
      (got > 0 ? stats_.busy_poll_hits : stats_.busy_poll_misses).fetch_add(1, std::memory_order_relaxed);
    }
    if (got == 0) {
      const uint64_t slept = NowNs();
      pollfd p[2] = {{mem_->fault_fd(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
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
      if (busy_poll_ns_ > 0 && NowNs() - slept <= busy_poll_ns_ + kWakeCostNs) spin_ = true;
      auto r = mem_->ReadFaultEvents(msgs, kBatch);
      if (!r.ok()) {
        if (on_fatal_) on_fatal_(r.status());
        return;
      }
      got = *r;
    }
    uint64_t now = NowNs();
    for (size_t i = 0; i < got; ++i) {
      if (msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;  // no other events were requested
      Pending f{msgs[i].arg.pagefault.address, msgs[i].arg.pagefault.flags, now};
      if (!Serve(f)) {
        stats_.deferred.fetch_add(1, std::memory_order_relaxed);
        deferred_.push_back(f);
      }
    }
  }
}

Result<size_t> FaultServer::PollFaults(uffd_msg* msgs, size_t max) {
  const uint64_t until = NowNs() + busy_poll_ns_;
  do {
    auto r = mem_->ReadFaultEvents(msgs, max);
    if (!r.ok()) {
      if (on_fatal_) on_fatal_(r.status());
      return r;
    }
    if (*r > 0) return r;
  } while (!stop_.load(std::memory_order_relaxed) && NowNs() < until);
  return size_t{0};
}

bool FaultServer::Serve(const Pending& f) {
  uint64_t idx;
  if (!mem_->PageOf(f.addr, &idx)) {
    spdlog::error("fault at {:#x} outside the registered RAM mapping; ignored", f.addr);
    return true;
  }
  Status error;
  bool done = false;
  switch (mem_->ServeFault(idx, f.flags & UFFD_PAGEFAULT_FLAG_MINOR, f.start_ns, &stats_, &error)) {
    case FaultOutcome::kFirstTouch:
    case FaultOutcome::kRemapped:
    case FaultOutcome::kSpurious:
      done = true;  // counted by GuestMemory before the vCPU woke
      break;
    case FaultOutcome::kOffloaded:
      done = ServeOffloaded(idx, f.start_ns);
      break;
    case FaultOutcome::kInFlight:
      return false;
    case FaultOutcome::kRemote: {
      RemotePager* pager = pager_.load();
      if (pager != nullptr) pager->Request(idx);  // retried every ms while deferred: the pager de-duplicates
      return false;
    }
    case FaultOutcome::kFailed:
      if (error.code() == Code::kUnavailable) {
        if (on_fatal_) on_fatal_(error);
        stop_.store(true);
        return true;
      }
      spdlog::error("page {}: cannot resolve fault ({}); will retry", idx, error.ToString());
      return false;
  }
  if (done && observer_ != nullptr) observer_->OnAccess(idx);
  return done;
}

bool FaultServer::ServeOffloaded(uint64_t idx, uint64_t start_ns) {
  if (source_ == nullptr) {
    spdlog::error("page {} is offloaded but no swap store is configured; the vCPU waits", idx);
    return false;
  }
  auto installed = mem_->Refault(idx, prefetch_pages_, source_, fetch_buf_.data(), start_ns, &stats_);
  if (!installed.ok()) {
    stats_.fetch_errors.fetch_add(1, std::memory_order_relaxed);
    uint64_t now = NowNs();
    uint64_t zero = 0;
    stats_.fetch_failing_since_ns.compare_exchange_strong(zero, now, std::memory_order_relaxed);
    if (now - last_fetch_warn_ns_ > 1000000000ULL) {
      last_fetch_warn_ns_ = now;
      spdlog::error("page {}: refault failed ({}); the vCPU waits until the page can be fetched", idx,
                    installed.status().ToString());
    }
    return false;
  }
  if (stats_.fetch_failing_since_ns.load(std::memory_order_relaxed) != 0) {
    spdlog::info("swap store reachable again after {:.0f} ms", static_cast<double>(NowNs() - stats_.fetch_failing_since_ns.load()) / 1e6);
    stats_.fetch_failing_since_ns.store(0, std::memory_order_relaxed);
  }
  if (installed->empty()) return false;  // no longer offloaded: served again from its new state
  // Brought in beside a refault: young, so no evictor takes them straight back.
  if (observer_ != nullptr)
    for (size_t i = 1; i < installed->size(); ++i) observer_->OnAccess((*installed)[i]);
  return true;
}

}  // namespace agile::vm
