// Write tracking of a guest's RAM from outside the VM process: the
// PAGEMAP_SCAN ioctl on /proc/<pid>/pagemap, over a mapping registered with
// userfaultfd WP_ASYNC, reports the pages written since the previous scan and
// write-protects them again in the same pass (PM_SCAN_WP_MATCHING), so no write
// falls between reporting and re-arming. Used by working-set tracking and,
// later, by pre-copy migration for dirty pages.
//
// What counts as "written", as seen on Linux 6.18 (write_scanner_test.cc):
//  - The first scan reports every page never write-protected, populated or
//    not, so it is a baseline: call Scan() once and discard what it reports
//    when only writes from now on matter.
//  - Dropped PTEs (ShimLink::DropPtes, MADV_DONTNEED in the VM process) never
//    hide a write: a protected PTE becomes a uffd-wp marker (still protected,
//    not reported), a written one becomes empty and is still reported.
//  - UFFDIO_CONTINUE maps a dropped page unprotected, so a page only read
//    after a drop is reported written once. Reports are a superset of the
//    writes, never a subset.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "base/fd.h"
#include "base/status.h"
#include "uffd/compat.h"
#include "vm/shim_link.h"

namespace agile::track {

// Not thread-safe: one scan at a time per scanner (it owns its result
// buffer). Two scanners of one VM would split the written bits between them
// (each page goes to whichever scan sees it first), so a VM has one consumer.
class WriteScanner {
 public:
  // Called once per run of written pages [first, first+count), as RAM-file
  // page indexes, in increasing order.
  using RunFn = std::function<void(uint64_t first, uint64_t count)>;

  // Opens /proc/<map.pid>/pagemap. Fails with kUnsupported when the kernel
  // has no PAGEMAP_SCAN (Linux < 6.7) or the mapping is not registered for
  // WP_ASYNC write-protection, so callers learn it at setup, not mid-scan.
  static Result<WriteScanner> Open(const vm::GuestMapping& map);

  // Reports the pages of [offset, offset+len) of the RAM file written since
  // the previous scan of each page, and write-protects them again. Returns the
  // number of pages reported. The range must lie within the mapping and be
  // page-aligned.
  // rearm=false reports without write-protecting (the next scan reports
  // these pages again): for a last scan whose caller never scans again,
  // e.g. a migration's stop-and-copy, where re-protecting tens of thousands
  // of pages would only lengthen the VM's pause.
  Result<uint64_t> ScanRange(uint64_t offset, uint64_t len, const RunFn& on_run, bool rearm = true);
  // The whole mapping.
  Result<uint64_t> Scan(const RunFn& on_run, bool rearm = true);
  // The whole mapping, appending page indexes to *written.
  Result<uint64_t> Scan(std::vector<uint64_t>* written, bool rearm = true);

  WriteScanner(WriteScanner&&) noexcept = default;
  WriteScanner& operator=(WriteScanner&&) noexcept = default;

 private:
  WriteScanner(UniqueFd pagemap, const vm::GuestMapping& map) : pagemap_(std::move(pagemap)), map_(map) {}
  UniqueFd pagemap_;
  vm::GuestMapping map_;
  std::vector<page_region> vec_;  // the kernel's output buffer, reused across scans
};

}  // namespace agile::track
