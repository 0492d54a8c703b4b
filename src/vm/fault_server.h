// Serves the userfaultfd of one VM on a dedicated thread: reads fault events,
// lets GuestMemory resolve each one (first touch: a zero page; a dropped PTE:
// UFFDIO_CONTINUE; an offloaded page: refault from the PageSource), counts
// what happened, and defers a fault on a page in flight (owned by an evictor
// or a migration) or at a migration source until the page settles.
// Invariant 2: zeros are only ever mapped for kZero (GuestMemory::ServeFault).
#pragma once

#include <linux/userfaultfd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <vector>
#include <thread>

#include "base/fd.h"
#include "base/clock.h"
#include "base/status.h"
#include "vm/fault_stats.h"
#include "vm/guest_memory.h"
#include "vm/latency.h"
#include "vm/page_source.h"

namespace agile::vm {

// Told of every page the guest is seen to access through a fault (first
// touch, MINOR after dropped PTEs, refault). Called on the fault thread: keep
// it cheap (set a bit).
class AccessObserver {
 public:
  virtual ~AccessObserver() = default;
  virtual void OnAccess(uint64_t idx) = 0;
};

// Asks a migration source for pages still there (kRemote). Asynchronous: the
// fault is deferred and retried once the page has been installed. Called on
// the fault thread; implementations de-duplicate repeated requests.
class RemotePager {
 public:
  virtual ~RemotePager() = default;
  virtual void Request(uint64_t idx) = 0;
};

class FaultServer {
 public:
  static constexpr uint32_t kMaxPrefetchPages = 64;
  // `memory` and `source` must outlive the server. `source` may be null
  // while no page is offloaded. A refault also brings in up to
  // `prefetch_pages - 1` offloaded pages that follow the faulting one.
  FaultServer(GuestMemory* memory, PageSource* source, uint32_t prefetch_pages = 4);
  ~FaultServer();

  Status Start();
  void Stop();  // idempotent; joins the thread

  const FaultStats& stats() const { return stats_; }
  // Called when the fault thread hits an error it cannot retry (QEMU gone).
  void set_on_fatal(std::function<void(const Status&)> f) { on_fatal_ = std::move(f); }
  // Must be set before Start(); may be null.
  void set_access_observer(AccessObserver* o) { observer_ = o; }
  // May be set or cleared at any time (incoming migrations).
  void set_remote_pager(RemotePager* p) { pager_.store(p); }
  // Wakes the thread so deferred faults are retried now (after a page settles).
  void Kick();
  // How long the fault thread reads the uffd in a loop before it sleeps in
  // poll(); 0 sleeps at once. Must be set before Start(). Adaptive: after a
  // window that caught nothing the thread sleeps at once, and it spins again
  // only once a fault woke it within kSpinPaysNs of going to sleep (faults
  // coming close together, as from a vCPU touching page after page). A guest
  // faulting now and then, or a TCG vCPU that needs the core, pays one
  // window per quiet spell, not one per fault.
  void set_busy_poll(std::chrono::microseconds d) { busy_poll_ns_ = static_cast<uint64_t>(d.count()) * 1000; }
  static constexpr std::chrono::microseconds kDefaultBusyPoll{20};
  // The window plus what waking a sleeping thread costs on our VMs (35-40 us):
  // a fault that woke the thread this soon would have been caught spinning.
  static constexpr uint64_t kWakeCostNs = 50'000;

 private:
  struct Pending {
    uint64_t addr;
    uint64_t flags;
    uint64_t start_ns;
  };
  void Run();
  // Returns true when the fault is resolved, false to retry it later.
  bool Serve(const Pending& f);
  bool ServeOffloaded(uint64_t idx, uint64_t start_ns);
  // Reads fault events without sleeping for up to busy_poll_ns_; 0 when
  // none came. An error has been reported through on_fatal_.
  Result<size_t> PollFaults(uffd_msg* msgs, size_t max);

  GuestMemory* mem_;
  PageSource* source_;
  uint32_t prefetch_pages_;
  UniqueFd wake_fd_;  // eventfd: stop and kick
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::deque<Pending> deferred_;
  FaultStats stats_;
  std::function<void(const Status&)> on_fatal_;
  AccessObserver* observer_ = nullptr;
  std::atomic<RemotePager*> pager_{nullptr};
  uint64_t last_fetch_warn_ns_ = 0;
  uint64_t busy_poll_ns_ = static_cast<uint64_t>(kDefaultBusyPoll.count()) * 1000;
  bool spin_ = true;  // the last window paid (or no evidence yet): spin after the next batch
  std::vector<uint8_t> fetch_buf_;  // prefetch_pages_ pages, page-aligned use only
};

// The monotonic clock in ns (base/clock.h), kept under this name for callers.
inline uint64_t NowNs() { return MonotonicNs(); }

}  // namespace agile::vm
