// A stand-in for QEMU in unit tests and benchmarks: a plain process that maps
// a shared RAM file with libagile-shim.so preloaded, so agiled's fault service
// can be exercised without booting a VM. Usage: shm_guest RAM_PATH PAGES, then
// commands on stdin, one answer line each on stdout:
//   write G    fill every page with a pattern derived from (index, G)
//   verify G   check the pattern; "ok" or "bad <index>"
//   touch      read the first byte of every page once, timing each access:
//              "ok pages=<n> total_ns=<t> p50_ns=<a> p99_ns=<b>"
//   quit
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

namespace {

constexpr size_t kPage = 4096;

uint64_t Pattern(uint64_t idx, uint64_t gen, size_t word) {
  uint64_t x = idx * 0x9E3779B97F4A7C15ULL ^ (gen + 1) * 0xC2B2AE3D27D4EB4FULL ^ word;
  x ^= x >> 29;
  return x * 0xBF58476D1CE4E5B9ULL;
}

uint64_t Now() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: shm_guest RAM_PATH PAGES\n");
    return 2;
  }
  uint64_t pages = std::strtoull(argv[2], nullptr, 10);
  int fd = ::open(argv[1], O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    std::perror("open");
    return 1;
  }
  auto* mem = static_cast<uint8_t*>(::mmap(nullptr, pages * kPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  if (mem == MAP_FAILED) {
    std::perror("mmap");
    return 1;
  }
  std::cout << "ready" << std::endl;
  std::string cmd;
  while (std::cin >> cmd) {
    if (cmd == "write" || cmd == "verify") {
      uint64_t gen;
      std::cin >> gen;
      uint64_t bad = UINT64_MAX;
      for (uint64_t i = 0; i < pages && bad == UINT64_MAX; ++i) {
        auto* w = reinterpret_cast<uint64_t*>(mem + i * kPage);
        for (size_t k = 0; k < kPage / 8; ++k) {
          if (cmd == "write") w[k] = Pattern(i, gen, k);
          else if (w[k] != Pattern(i, gen, k)) {
            bad = i;
            break;
          }
        }
      }
      if (bad == UINT64_MAX) std::cout << "ok" << std::endl;
      else std::cout << "bad " << bad << std::endl;
    } else if (cmd == "touch") {
      std::vector<uint64_t> lat(pages);
      uint64_t t0 = Now();
      volatile uint8_t sink = 0;
      for (uint64_t i = 0; i < pages; ++i) {
        uint64_t a = Now();
        sink = sink + mem[i * kPage];
        lat[i] = Now() - a;
      }
      uint64_t total = Now() - t0;
      std::sort(lat.begin(), lat.end());
      std::cout << "ok pages=" << pages << " total_ns=" << total << " p50_ns=" << lat[pages / 2]
                << " p99_ns=" << lat[pages * 99 / 100] << std::endl;
    } else if (cmd == "quit") {
      return 0;
    } else {
      std::cout << "error unknown command " << cmd << std::endl;
    }
  }
  return 0;
}
