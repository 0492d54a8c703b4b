// The guest memory of one VM, and the only code that changes where a guest
// page lives. It owns the RAM file, the userfaultfd over QEMU's mapping of it
// and the shim link that drops PTEs inside QEMU, plus the per-page state
// table. Every verb below is one documented move of the page state machine
// (docs/invariants.md) paired with the RAM-file or uffd operation that makes
// it true, so no other module writes guest pages or states.
//
// Concurrency: a page is changed only by whoever moved it to kInFlight (a
// compare-and-swap), so each verb is atomic with respect to the others page by
// page; verbs over many pages claim them one at a time. A fault on a page in
// flight waits (the fault server retries it when the owner settles the page).
//
// Lifetime: held by shared_ptr. Workers (a migration, an offload) keep it
// alive, so the file descriptors they use stay the ones of this VM even after
// `vm stop`; Retire() makes every later mutating verb fail instead.
#pragma once

#include <linux/userfaultfd.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "base/fd.h"
#include "base/page.h"
#include "base/status.h"
#include "uffd/uffd.h"
#include "vm/fault_stats.h"
#include "vm/location_map.h"
#include "vm/page_source.h"
#include "vm/page_table.h"
#include "vm/shim_link.h"

namespace agile::vm {

// What serving one fault came to; the fault server counts and retries.
enum class FaultOutcome {
  kFirstTouch,  // kZero -> kResident: a zero page was mapped
  kRemapped,    // kResident, PTE dropped (MINOR fault): mapped again with UFFDIO_CONTINUE
  kSpurious,    // already mapped by a racing fault: the vCPU was only woken
  kOffloaded,   // in the swap store: the caller refaults it (Refault)
  kInFlight,    // being moved by its owner: retry once it settles
  kRemote,      // still at a migration source: ask for it, retry once it arrives
  kFailed,      // the kernel refused; see the status (kUnavailable: QEMU is gone)
};

// A run of pages in one state (LocationRuns).
struct PageRun {
  uint64_t first = 0;
  uint64_t count = 0;
  PageState state = PageState::kZero;
};

class GuestMemory {
 public:
  // How long a verb that must see a settled page (ReadPage, LocationRuns)
  // waits for a page in flight: a refault from a healthy store takes
  // microseconds, one from a store that is down never ends.
  static constexpr int kSettleTimeoutMs = 5000;

  // Takes over the RAM file, the uffd and the shim link of a VM whose shim
  // just handed them over. Every page starts in `initial`: kZero for a new
  // VM (the file is empty), kRemote for an incoming migration.
  GuestMemory(UniqueFd ram_fd, uffd::Uffd uffd, ShimLink shim, PageState initial);
  ~GuestMemory();
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;

  // ---- crash consistency (docs/invariants.md, "Crash consistency") ----
  // The state-dir record of which pages are offloaded. Attached before the
  // fault server starts; from then on every move to kOffloaded sets a page's
  // bit and every punch to kZero clears it, both before the punch.
  void AttachLocationMap(LocationMap map) { locations_.emplace(std::move(map)); }
  // Startup of an adopted VM only (before the fault server runs): every page
  // from the RAM file and the location map. Data in the file -> kResident
  // (it wins over a stale offloaded bit: a refault fills the file before the
  // guest sees the page); a hole with its bit set -> kOffloaded; any other
  // hole -> kZero (never touched, or known zero).
  // remote (an incoming post-copy's pages at the source at switchover, one
  // byte per page; migrate/migration_record.h): a hole whose byte is set and
  // whose offloaded bit is not is still kRemote - a page not received yet,
  // which must be asked of the source, never mapped as zeros (invariant 2).
  Status Recover(const std::vector<uint8_t>* remote = nullptr);
  // Wakes every thread waiting on a fault of this mapping. An adopted VM's
  // vCPUs may wait on faults the previous agiled read but never resolved:
  // woken, they touch the page again and fault anew to us.
  Status WakeAll() { return uffd_.Wake(map_.base, map_.length); }

  // ---- reading state (any thread) ----
  uint64_t pages() const { return table_.pages(); }
  PageState state(uint64_t idx) const { return table_.Get(idx); }
  uint64_t count(PageState s) const { return table_.Count(s); }
  const GuestMapping& mapping() const { return map_; }
  // What the RAM file really occupies in tmpfs (measured, not inferred).
  uint64_t RamFileBytes() const;
  // Called whenever a page leaves kInFlight or kRemote, so faults that wait
  // on it are retried at once. Set before the fault server starts.
  void set_settle_listener(std::function<void()> f) { on_settle_ = std::move(f); }

  // ---- fault service (the fault thread) ----
  int fault_fd() const { return uffd_.fd(); }
  Result<size_t> ReadFaultEvents(uffd_msg* msgs, size_t max) { return uffd_.ReadEvents(msgs, max); }
  // Page index of a faulting address, or false when it is outside guest RAM.
  bool PageOf(uint64_t addr, uint64_t* idx) const;
  // Resolves a fault that needs no data from elsewhere:
  //   kZero     -> kInFlight -> kResident (zero page mapped, vCPU woken)
  //   kResident -> kResident (MINOR: UFFDIO_CONTINUE; otherwise just woken)
  // and reports kOffloaded / kInFlight / kRemote for the caller to handle.
  // What it did is counted in *stats before the vCPU wakes (start_ns: when
  // the fault was read, for the latency histogram).
  FaultOutcome ServeFault(uint64_t idx, bool minor, uint64_t start_ns, FaultStats* stats, Status* error);
  // kOffloaded -> kInFlight -> kResident for `idx` and up to max_pages - 1
  // offloaded pages right after it (prefetch), fetched from `source` into
  // `buf` (max_pages pages) and installed with UFFDIO_COPY; wakes the vCPU
  // waiting on `idx`. Returns the pages installed, `idx` first; empty when
  // idx was no longer offloaded (raced: look again). On a fetch error every
  // claimed page goes back to kOffloaded (invariant 2: never zeros).
  // Counted in *stats (refault, prefetched, latency) before the wake.
  Result<std::vector<uint64_t>> Refault(uint64_t idx, uint32_t max_pages, PageSource* source, uint8_t* buf,
                                        uint64_t start_ns, FaultStats* stats);

  // ---- offload (one evictor at a time) ----
  // kResident -> kInFlight for each listed page that is resident; returns
  // the pages claimed, in the order given.
  std::vector<uint64_t> ClaimResident(std::span<const uint64_t> idx);
  // The content of `count` claimed pages from `first`, read through a
  // read-only shared mapping of the RAM file (no copy). Stable while the
  // claim lasts: the guest has no PTE for them (drop PTEs first) and its
  // faults wait.
  Result<const uint8_t*> ClaimedRun(uint64_t first, uint64_t count);
  // kInFlight -> kOffloaded (`stored`: safe in the swap store) and kInFlight
  // -> kZero (`zero`: found all-zero), after punching all of them out of the
  // RAM file (invariant 3: only once the store acknowledged). If the punch
  // fails every page goes back to kResident (both copies are good).
  Status PublishOffloaded(std::span<const uint64_t> stored, std::span<const uint64_t> zero);
  // kInFlight -> kResident: a claim ends with the page where it was.
  void Unclaim(std::span<const uint64_t> idx);

  // ---- access tracking and offload: drop PTEs inside QEMU ----
  // Drops the page-table entries of `count` pages from `first` inside the VM
  // process; data stays in the file and the next access faults (MINOR).
  Status DropPtes(uint64_t first, uint64_t count, uint64_t* elapsed_ns = nullptr);

  // ---- migration source ----
  // The current content of page idx into `out`: from the RAM file when
  // resident, from `store` when offloaded (the claim, kResident/kOffloaded ->
  // kInFlight -> back, keeps an evictor or a refault from moving it under
  // the read). A page in flight is waited for (kSettleTimeoutMs). Returns
  // the state the page was read in; kZero: nothing was read (send nothing).
  Result<PageState> ReadPage(uint64_t idx, uint8_t* out, PageSource* store);
  // Every page's state as runs, after waiting for pages in flight to settle.
  // A snapshot: exact while the guest is paused and no evictor runs.
  Result<std::vector<PageRun>> LocationRuns();

  // ---- migration destination ----
  // A page arriving from the source: kRemote -> kInFlight -> kResident
  // (written into the RAM file; returns true), or, when overwrite_resident,
  // a kResident page rewritten by a later pre-copy round (returns false).
  // Any other state keeps its content (the guest's copy wins after switchover).
  Result<bool> InstallIncoming(uint64_t idx, const uint8_t* data, bool overwrite_resident);
  // kResident -> kRemote for pages [first, first + count): the copy here
  // went stale (agile's post-copy tail). Remote first, then punched: a touch
  // in between asks the source and never sees the stale copy. A page already
  // kRemote stays so. A run is punched with one call per stretch of pages
  // it moved (the switchover waits on this: ~50K pages one by one took
  // hundreds of ms).
  Status MarkStale(uint64_t first, uint64_t count = 1);
  // Pages [first, first + count) live in the swap store (to = kOffloaded)
  // or nowhere (to = kZero): kRemote/kResident -> kInFlight -> `to`, any
  // copy here punched (one call per resident stretch), and waiting faults
  // retried once for the run rather than once per page.
  Status Relocate(uint64_t first, uint64_t count, PageState to);
  Status Relocate(uint64_t idx, PageState to) { return Relocate(idx, 1, to); }

  // ---- lifetime ----
  // The VM stopped: every later verb that would change a page fails with
  // kUnavailable. The descriptors stay open until the last holder lets go.
  void Retire();
  bool retired() const { return retired_.load(std::memory_order_acquire); }

 private:
  uint64_t AddrOf(uint64_t idx) const { return map_.base + idx * kPageSize - map_.file_offset; }
  Status Punch(uint64_t first, uint64_t count);
  Status CheckLive() const;
  void Settled();
  // Waits until page idx is not kInFlight; its state then, or kUnavailable.
  Result<PageState> WaitSettled(uint64_t idx);

  UniqueFd ram_fd_;
  uffd::Uffd uffd_;
  ShimLink shim_;
  GuestMapping map_;
  PageTable table_;
  std::function<void()> on_settle_;
  std::optional<LocationMap> locations_;
  void RecordLocation(std::span<const uint64_t> idx, bool offloaded);
  std::atomic<bool> retired_{false};
  std::mutex view_mu_;            // guards the lazy read-only mapping
  const uint8_t* view_ = nullptr; // the RAM file, mapped read-only (ClaimedRun)
  size_t view_len_ = 0;
};

}  // namespace agile::vm
