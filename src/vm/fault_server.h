// Serves the userfaultfd of one VM on a dedicated thread: first touch gets a
// zero page, a dropped PTE (MINOR fault) is re-mapped with UFFDIO_CONTINUE, an
// offloaded page is fetched from the PageSource and installed with UFFDIO_COPY.
// A page in flight (owned by an evictor or a migration) defers the fault until
// its owner settles it. Invariant 2: zeros are only ever mapped for kZero.
#pragma once

#include <linux/userfaultfd.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <vector>
#include <thread>

#include "base/fd.h"
#include "base/status.h"
#include "uffd/uffd.h"
#include "vm/latency.h"
#include "vm/page_source.h"
#include "vm/page_table.h"
#include "vm/shim_link.h"

namespace agile::vm {

struct FaultStats {
  std::atomic<uint64_t> first_touch{0};  // kZero pages served a zero page
  std::atomic<uint64_t> minor{0};        // dropped PTEs re-mapped (read tracking)
  std::atomic<uint64_t> refault{0};      // faults on offloaded pages, served from the source
  std::atomic<uint64_t> prefetched{0};   // offloaded pages brought in next to a refault
  std::atomic<uint64_t> spurious{0};     // already resolved by a racing fault
  std::atomic<uint64_t> deferred{0};     // waited for a page in flight or at a migration source
  std::atomic<uint64_t> fetch_errors{0}; // source unreachable (retried)
  LatencyHistogram first_touch_latency;
  LatencyHistogram refault_latency;
};

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
  // `table`, `uffd` and `source` must outlive the server. `source` may be null
  // while no page is offloaded. A refault also brings in up to
  // `prefetch_pages - 1` offloaded pages that follow the faulting one.
  FaultServer(uffd::Uffd* uffd, const GuestMapping& map, PageTable* table, PageSource* source,
              uint32_t prefetch_pages = 4);
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

 private:
  struct Pending {
    uint64_t addr;
    uint64_t flags;
    uint64_t start_ns;
  };
  void Run();
  // Returns true when the fault is resolved, false to retry it later.
  bool Serve(const Pending& f);
  bool ServeState(uint64_t idx, PageState st, uint64_t page_addr, const Pending& f);
  bool ServeOffloaded(uint64_t idx, uint64_t start_ns);

  uffd::Uffd* uffd_;
  GuestMapping map_;
  PageTable* table_;
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
  std::vector<uint8_t> fetch_buf_;  // prefetch_pages_ pages, page-aligned use only
};

uint64_t NowNs();

}  // namespace agile::vm
