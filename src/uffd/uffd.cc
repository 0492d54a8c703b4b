#include "uffd/uffd.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>

#include "uffd/compat.h"

namespace agile::uffd {
namespace {

Status ResolveError(const char* op, int err) {
  if (err == EEXIST) return AlreadyExists(std::string(op) + ": page already present");
  if (err == ESRCH || err == ENOENT) return Unavailable(std::string(op) + ": target process is gone");
  return ErrnoStatus(op, err);
}

// Runs one resolve ioctl until the whole range is done. `progress` reads how
// many bytes the kernel handled in a call (it reports a negative errno there
// on failure, or the count of bytes done before EAGAIN).
template <typename Arg, typename Progress, typename Advance>
Status RunResolve(int fd, unsigned long req, const char* op, Arg arg, Progress progress, Advance advance,
                  size_t len) {
  size_t done = 0;
  while (done < len) {
    int rc = ::ioctl(fd, req, &arg);
    int64_t n = progress(arg);
    if (n > 0) {
      done += static_cast<size_t>(n);
      advance(arg, static_cast<size_t>(n));
    }
    if (rc == 0) return Status::Ok();
    if (errno == EAGAIN || errno == EINTR) continue;
    return ResolveError(op, errno);
  }
  return Status::Ok();
}

}  // namespace

Result<size_t> Uffd::ReadEvents(uffd_msg* msgs, size_t max) {
  for (;;) {
    ssize_t r = ::read(fd_.get(), msgs, sizeof(uffd_msg) * max);
    if (r >= 0) return static_cast<size_t>(r) / sizeof(uffd_msg);
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return size_t{0};
    return ErrnoStatus("read userfaultfd");
  }
}

Status Uffd::Copy(uint64_t dst, const void* src, size_t len, bool wake) {
  uffdio_copy c{};
  c.mode = wake ? 0 : UFFDIO_COPY_MODE_DONTWAKE;
  c.dst = dst;
  c.src = reinterpret_cast<uint64_t>(src);
  c.len = len;
  return RunResolve(
      fd_.get(), UFFDIO_COPY, "UFFDIO_COPY", c, [](const uffdio_copy& a) { return a.copy; },
      [](uffdio_copy& a, size_t n) {
        a.dst += n;
        a.src += n;
        a.len -= n;
        a.copy = 0;
      },
      len);
}

Status Uffd::ZeroPage(uint64_t dst, size_t len, bool wake) {
  uffdio_zeropage z{};
  z.mode = wake ? 0 : UFFDIO_ZEROPAGE_MODE_DONTWAKE;
  z.range.start = dst;
  z.range.len = len;
  return RunResolve(
      fd_.get(), UFFDIO_ZEROPAGE, "UFFDIO_ZEROPAGE", z, [](const uffdio_zeropage& a) { return a.zeropage; },
      [](uffdio_zeropage& a, size_t n) {
        a.range.start += n;
        a.range.len -= n;
        a.zeropage = 0;
      },
      len);
}

Status Uffd::Continue(uint64_t dst, size_t len) {
  uffdio_continue c{};
  c.range.start = dst;
  c.range.len = len;
  return RunResolve(
      fd_.get(), UFFDIO_CONTINUE, "UFFDIO_CONTINUE", c, [](const uffdio_continue& a) { return a.mapped; },
      [](uffdio_continue& a, size_t n) {
        a.range.start += n;
        a.range.len -= n;
        a.mapped = 0;
      },
      len);
}

Status Uffd::WriteProtect(uint64_t dst, size_t len, bool protect) {
  uffdio_writeprotect w{};
  w.range.start = dst;
  w.range.len = len;
  w.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0;
  for (;;) {
    if (::ioctl(fd_.get(), UFFDIO_WRITEPROTECT, &w) == 0) return Status::Ok();
    if (errno == EAGAIN || errno == EINTR) continue;
    return ResolveError("UFFDIO_WRITEPROTECT", errno);
  }
}

Status Uffd::Wake(uint64_t dst, size_t len) {
  uffdio_range r{dst, len};
  if (::ioctl(fd_.get(), UFFDIO_WAKE, &r) != 0) return ResolveError("UFFDIO_WAKE", errno);
  return Status::Ok();
}

}  // namespace agile::uffd
