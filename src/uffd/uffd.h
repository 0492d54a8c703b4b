// Daemon-side handle on a userfaultfd received from another process (QEMU).
// The fd carries that process's mm, so the resolve ioctls act on QEMU's
// mapping from here. Thread-safe: the ioctls may be issued from any thread.
#pragma once

#include <linux/userfaultfd.h>

#include <cstddef>
#include <cstdint>

#include "base/fd.h"
#include "base/status.h"

namespace agile::uffd {

class Uffd {
 public:
  Uffd() = default;
  explicit Uffd(UniqueFd fd) : fd_(std::move(fd)) {}
  int fd() const { return fd_.get(); }
  bool valid() const { return fd_.valid(); }

  // Non-blocking read of pending messages; 0 when none are pending.
  Result<size_t> ReadEvents(uffd_msg* msgs, size_t max);

  // Each resolve call retries EAGAIN and partial progress. A page that is
  // already present (EEXIST, e.g. two vCPUs faulted on it) is kAlreadyExists:
  // callers usually treat it as success. A vanished mm (QEMU gone) is
  // kUnavailable.
  // wake=false (DONTWAKE) lets the caller publish state before the faulting
  // threads run again; it must then call Wake().
  Status Copy(uint64_t dst, const void* src, size_t len, bool wake = true);
  Status ZeroPage(uint64_t dst, size_t len, bool wake = true);
  Status Continue(uint64_t dst, size_t len);
  Status WriteProtect(uint64_t dst, size_t len, bool protect);
  // Wakes threads waiting on a range resolved by other means.
  Status Wake(uint64_t dst, size_t len);

 private:
  UniqueFd fd_;
};

}  // namespace agile::uffd
