// Creating and registering a userfaultfd over a shared-file mapping. Runs in
// the process that owns the mapping (inside QEMU via the shim, or a test
// process). Deliberately free of allocation-heavy dependencies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace agile::uffd {

struct Registration {
  int fd = -1;               // the userfaultfd, O_CLOEXEC | O_NONBLOCK
  uint64_t features = 0;     // granted by UFFDIO_API
  uint64_t ioctls = 0;       // offered by UFFDIO_REGISTER for the range
};

// Creates a uffd with agile's required features and registers [addr, addr+len)
// in MISSING|MINOR|WP modes. On failure returns false and fills *error with a
// message an operator can act on (e.g. which feature the kernel lacks).
bool CreateAndRegister(void* addr, size_t len, Registration* out, std::string* error);

// Names of features in `mask`, e.g. "WP_ASYNC WP_UNPOPULATED".
std::string FeatureNames(uint64_t mask);

}  // namespace agile::uffd
