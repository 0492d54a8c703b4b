#include "track/write_scanner.h"

#include <fcntl.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <string>

namespace agile::track {
namespace {

// Regions per ioctl call. Contiguous written pages share one region, so this
// bounds calls, not pages; 1024 regions is 24 KiB.
constexpr size_t kRegionsPerCall = 1024;

Status ScanError(int err) {
  switch (err) {
    case ENOTTY:
      return Unsupported("PAGEMAP_SCAN is not supported by this kernel (needs Linux >= 6.7)");
    case EPERM:
      return Unsupported("PAGEMAP_SCAN: the guest RAM mapping is not registered with userfaultfd WP_ASYNC");
    case ESRCH:
      return Unavailable("PAGEMAP_SCAN: the VM process is gone");
    default:
      return ErrnoStatus("PAGEMAP_SCAN", err);
  }
}

}  // namespace

Result<WriteScanner> WriteScanner::Open(const vm::GuestMapping& map) {
  if (map.length == 0 || map.length % uffd::kPageSize != 0 || map.base % uffd::kPageSize != 0 ||
      map.file_offset % uffd::kPageSize != 0)
    return InvalidArgument("guest mapping is empty or not page-aligned");
  std::string path = "/proc/" + std::to_string(map.pid) + "/pagemap";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus("open " + path);
  WriteScanner s(std::move(fd), map);
  s.vec_.resize(kRegionsPerCall);
  // Probe one page without write-protecting anything: tells an old kernel
  // (ENOTTY) or a mapping without WP_ASYNC (EPERM) apart now, not mid-scan.
  pm_scan_arg arg{};
  arg.size = sizeof(arg);
  arg.flags = PM_SCAN_CHECK_WPASYNC;
  arg.start = map.base;
  arg.end = map.base + uffd::kPageSize;
  arg.vec = reinterpret_cast<uint64_t>(s.vec_.data());
  arg.vec_len = s.vec_.size();
  arg.category_mask = PAGE_IS_WRITTEN;
  arg.return_mask = PAGE_IS_WRITTEN;
  while (::ioctl(s.pagemap_.get(), PAGEMAP_SCAN, &arg) < 0) {
    if (errno != EINTR) return ScanError(errno);
  }
  return s;
}

Result<uint64_t> WriteScanner::ScanRange(uint64_t offset, uint64_t len, const RunFn& on_run, bool rearm) {
  if (offset < map_.file_offset || offset % uffd::kPageSize != 0 || len % uffd::kPageSize != 0 ||
      offset - map_.file_offset > map_.length || len > map_.length - (offset - map_.file_offset))
    return InvalidArgument("scan range is not page-aligned or outside the guest mapping");
  pm_scan_arg arg{};
  arg.size = sizeof(arg);
  // WP_MATCHING re-protects exactly the pages it reports, in the same page
  // table walk; CHECK_WPASYNC makes the kernel refuse (EPERM) instead of
  // silently reporting nothing on a range without async write-protection.
  arg.flags = (rearm ? PM_SCAN_WP_MATCHING : 0) | PM_SCAN_CHECK_WPASYNC;
  arg.start = map_.base + (offset - map_.file_offset);
  arg.end = arg.start + len;
  arg.vec = reinterpret_cast<uint64_t>(vec_.data());
  arg.vec_len = vec_.size();
  // Only PAGE_IS_WRITTEN: the kernel has a dedicated fast path for exactly
  // this mask. An empty PTE counts as written (seen on 6.18: a page written,
  // then dropped by DropPtes before this scan, is reported) and gets a
  // write-protect marker, so dropping PTEs never hides a write.
  arg.category_mask = PAGE_IS_WRITTEN;
  arg.return_mask = PAGE_IS_WRITTEN;
  uint64_t pages = 0;
  while (arg.start < arg.end) {
    long n = ::ioctl(pagemap_.get(), PAGEMAP_SCAN, &arg);
    if (n < 0) {
      // The kernel returns EINTR only with a fatal signal pending (killable
      // mmap lock), i.e. while this process dies; retrying is harmless.
      if (errno == EINTR) continue;
      return ScanError(errno);
    }
    for (long i = 0; i < n; ++i) {
      const page_region& r = vec_[static_cast<size_t>(i)];
      uint64_t first = (r.start - map_.base + map_.file_offset) / uffd::kPageSize;
      uint64_t count = (r.end - r.start) / uffd::kPageSize;
      pages += count;
      on_run(first, count);
    }
    // A full buffer stops the walk early at walk_end; continue from there.
    if (arg.walk_end <= arg.start && arg.walk_end < arg.end)
      return Internal("PAGEMAP_SCAN made no progress at " + std::to_string(arg.walk_end));
    arg.start = arg.walk_end;
  }
  return pages;
}

Result<uint64_t> WriteScanner::Scan(const RunFn& on_run, bool rearm) {
  return ScanRange(map_.file_offset, map_.length, on_run, rearm);
}

Result<uint64_t> WriteScanner::Scan(std::vector<uint64_t>* written, bool rearm) {
  return Scan(
      [written](uint64_t first, uint64_t count) {
        for (uint64_t i = 0; i < count; ++i) written->push_back(first + i);
      },
      rearm);
}

}  // namespace agile::track
