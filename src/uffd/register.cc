#include "uffd/register.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "uffd/compat.h"

namespace agile::uffd {
namespace {

int OpenUffd() { return static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK)); }

std::string Errno(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

}  // namespace

std::string FeatureNames(uint64_t mask) {
  static const struct {
    uint64_t bit;
    const char* name;
  } kNames[] = {
      {UFFD_FEATURE_MISSING_SHMEM, "MISSING_SHMEM"},
      {UFFD_FEATURE_MINOR_SHMEM, "MINOR_SHMEM"},
      {UFFD_FEATURE_WP_HUGETLBFS_SHMEM, "WP_HUGETLBFS_SHMEM"},
      {UFFD_FEATURE_WP_UNPOPULATED, "WP_UNPOPULATED"},
      {UFFD_FEATURE_WP_ASYNC, "WP_ASYNC"},
  };
  std::string out;
  for (const auto& n : kNames) {
    if (mask & n.bit) {
      if (!out.empty()) out += ' ';
      out += n.name;
    }
  }
  return out;
}

bool CreateAndRegister(void* addr, size_t len, Registration* out, std::string* error) {
  // Probe first: UFFDIO_API with unknown bits fails with a bare EINVAL, and it
  // may be called only once per fd, so ask a throwaway fd what the kernel has.
  int probe = OpenUffd();
  if (probe < 0) {
    *error = Errno("userfaultfd()") + " (needs root or vm.unprivileged_userfaultfd=1)";
    return false;
  }
  uffdio_api api{};
  api.api = UFFD_API;
  if (::ioctl(probe, UFFDIO_API, &api) != 0) {
    *error = Errno("UFFDIO_API probe");
    ::close(probe);
    return false;
  }
  ::close(probe);
  uint64_t missing = kRequiredFeatures & ~api.features;
  if (missing != 0) {
    *error = "kernel lacks userfaultfd features: " + FeatureNames(missing) +
             " (agile needs Linux >= 6.7 with shmem userfaultfd support)";
    return false;
  }

  int fd = OpenUffd();
  if (fd < 0) {
    *error = Errno("userfaultfd()");
    return false;
  }
  api = {};
  api.api = UFFD_API;
  api.features = kRequiredFeatures;
  if (::ioctl(fd, UFFDIO_API, &api) != 0) {
    *error = Errno("UFFDIO_API");
    ::close(fd);
    return false;
  }
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<uint64_t>(addr);
  reg.range.len = len;
  reg.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR | UFFDIO_REGISTER_MODE_WP;
  if (::ioctl(fd, UFFDIO_REGISTER, &reg) != 0) {
    *error = Errno("UFFDIO_REGISTER (MISSING|MINOR|WP)");
    ::close(fd);
    return false;
  }
  if ((reg.ioctls & kRequiredIoctls) != kRequiredIoctls) {
    *error = "UFFDIO_REGISTER did not offer COPY, ZEROPAGE, CONTINUE and WRITEPROTECT for the range";
    ::close(fd);
    return false;
  }
  out->fd = fd;
  out->features = api.features;
  out->ioctls = reg.ioctls;
  return true;
}

}  // namespace agile::uffd
