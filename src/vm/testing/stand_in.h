// What the QEMU stand-ins (shm_guest, track_guest) share: the page pattern
// their fill/verify commands write and check, a clock, and mapping the RAM
// file from the command line the way QEMU maps guest RAM (shared, so the
// preloaded shim hands agiled a userfaultfd over it).
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace agile::vm::testing {

constexpr size_t kStandInPage = 4096;

// Word `word` of page `idx` in generation `gen`: distinct per page, word and
// generation, so a page from the wrong place or time never verifies.
inline uint64_t Pattern(uint64_t idx, uint64_t gen, size_t word) {
  uint64_t x = idx * 0x9E3779B97F4A7C15ULL ^ (gen + 1) * 0xC2B2AE3D27D4EB4FULL ^ word;
  x ^= x >> 29;
  return x * 0xBF58476D1CE4E5B9ULL;
}

inline uint64_t NowNs() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

// Parses "PROG RAM_PATH PAGES" and maps the file; nullptr (after saying why
// on stderr) when the arguments or the mapping are wrong.
inline void* MapRamFromArgs(int argc, char** argv, const char* prog, uint64_t* pages) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s RAM_PATH PAGES\n", prog);
    return nullptr;
  }
  *pages = std::strtoull(argv[2], nullptr, 10);
  int fd = ::open(argv[1], O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    std::perror("open");
    return nullptr;
  }
  void* mem = ::mmap(nullptr, *pages * kStandInPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (mem == MAP_FAILED) {
    std::perror("mmap");
    return nullptr;
  }
  return mem;
}

}  // namespace agile::vm::testing
