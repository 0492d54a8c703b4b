#include "bare_uffd_floor.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>

namespace agile::bench {
namespace {

constexpr size_t kPage = 4096;

// One MISSING fault answered with a zero page; false when the uffd is gone.
bool AnswerOne(int uffd, uint64_t base) {
  uffd_msg msg;
  ssize_t n = ::read(uffd, &msg, sizeof msg);
  if (n != static_cast<ssize_t>(sizeof msg)) return false;
  if (msg.event != UFFD_EVENT_PAGEFAULT) return true;
  uffdio_zeropage z{};
  z.range.start = (msg.arg.pagefault.address & ~(kPage - 1));
  z.range.len = kPage;
  // EEXIST: a concurrent fault on the same page was answered already.
  if (::ioctl(uffd, UFFDIO_ZEROPAGE, &z) != 0 && errno != EEXIST) {
    std::fprintf(stderr, "bare uffd floor: UFFDIO_ZEROPAGE at page %llu: %s\n",
                 static_cast<unsigned long long>((z.range.start - base) / kPage), std::strerror(errno));
    return false;
  }
  return true;
}

}  // namespace

double BareUffdFaultsPerSecond(uint64_t pages, std::chrono::microseconds busy_poll) {
  const size_t len = pages * kPage;
  int fd = ::memfd_create("bare_uffd_floor", MFD_CLOEXEC);
  if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(len)) != 0) {
    std::fprintf(stderr, "bare uffd floor: memfd: %s\n", std::strerror(errno));
    if (fd >= 0) ::close(fd);
    return 0;
  }
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) return 0;
  const auto base = reinterpret_cast<uint64_t>(p);
  int uffd = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  uffdio_api api{.api = UFFD_API, .features = 0, .ioctls = 0};
  uffdio_register reg{};
  reg.range = {base, len};
  reg.mode = UFFDIO_REGISTER_MODE_MISSING;
  if (uffd < 0 || ::ioctl(uffd, UFFDIO_API, &api) != 0 || ::ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) {
    std::fprintf(stderr, "bare uffd floor: userfaultfd: %s\n", std::strerror(errno));
    if (uffd >= 0) ::close(uffd);
    ::munmap(p, len);
    return 0;
  }

  std::atomic<bool> done{false}, failed{false};
  std::thread handler([&] {
    // On an error, give the range back to the kernel so the toucher ends.
    auto fail = [&] {
      failed = true;
      uffdio_range all{base, len};
      ::ioctl(uffd, UFFDIO_UNREGISTER, &all);
    };
    const auto window = std::chrono::duration_cast<std::chrono::nanoseconds>(busy_poll);
    while (!done.load(std::memory_order_relaxed)) {
      // Busy-poll: retry the non-blocking read until the window runs out.
      auto until = std::chrono::steady_clock::now() + window;
      bool served = false;
      do {
        if (AnswerOne(uffd, base)) {
          served = true;
          break;
        }
        if (errno != EAGAIN) return fail();
      } while (window.count() > 0 && std::chrono::steady_clock::now() < until);
      if (served) continue;
      pollfd pfd{uffd, POLLIN, 0};
      ::poll(&pfd, 1, 100);
    }
  });

  auto* mem = static_cast<volatile uint8_t*>(p);
  uint8_t sink = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < pages; ++i) sink = static_cast<uint8_t>(sink + mem[i * kPage]);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  (void)sink;
  done = true;
  handler.join();
  ::close(uffd);
  ::munmap(p, len);
  return failed ? 0 : static_cast<double>(pages) / s;
}

}  // namespace agile::bench
