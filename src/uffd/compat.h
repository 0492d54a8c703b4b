// Kernel ABI that Debian 12's headers (6.1) predate: userfaultfd WP_ASYNC and
// WP_UNPOPULATED (6.4/6.7) and the PAGEMAP_SCAN ioctl (6.7). Values are the
// kernel's UAPI; whether the running kernel has them is checked at run time
// (UFFDIO_API features), never assumed.
#pragma once

#include <linux/fs.h>
#include <linux/userfaultfd.h>

#include "base/page.h"
#include <sys/ioctl.h>

#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif

#ifndef PAGEMAP_SCAN
#define PAGE_IS_WPALLOWED (1 << 0)
#define PAGE_IS_WRITTEN (1 << 1)
#define PAGE_IS_FILE (1 << 2)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#define PAGE_IS_PFNZERO (1 << 5)
#define PAGE_IS_HUGE (1 << 6)
#define PAGE_IS_SOFT_DIRTY (1 << 7)

struct page_region {
  __u64 start;
  __u64 end;
  __u64 categories;
};

#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)

struct pm_scan_arg {
  __u64 size;
  __u64 flags;
  __u64 start;
  __u64 end;
  __u64 walk_end;
  __u64 vec;
  __u64 vec_len;
  __u64 max_pages;
  __u64 category_inverted;
  __u64 category_mask;
  __u64 category_anyof_mask;
  __u64 return_mask;
};

#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif

namespace agile::uffd {

// What agile needs from the kernel, and why:
//   MISSING_SHMEM  serve first touch and refaults of the shmem RAM file
//   MINOR_SHMEM    read tracking: pages whose PTEs were dropped fault again
//   WP_HUGETLBFS_SHMEM + WP_ASYNC + WP_UNPOPULATED  write tracking via PAGEMAP_SCAN
constexpr unsigned long long kRequiredFeatures =
    UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_WP_HUGETLBFS_SHMEM |
    UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED;

constexpr unsigned long long kRequiredIoctls =
    (1ULL << _UFFDIO_COPY) | (1ULL << _UFFDIO_ZEROPAGE) | (1ULL << _UFFDIO_CONTINUE) |
    (1ULL << _UFFDIO_WRITEPROTECT);

using agile::kPageSize;  // base/page.h

}  // namespace agile::uffd
