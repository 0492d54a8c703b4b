// A stand-in for QEMU in unit tests and benchmarks: a plain process that maps
// a shared RAM file with libagile-shim.so preloaded, so agiled's fault service
// can be exercised without booting a VM. Usage: shm_guest RAM_PATH PAGES, then
// commands on stdin, one answer line each on stdout:
//   write G    fill every page with a pattern derived from (index, G)
//   verify G   check the pattern; "ok" or "bad <index>"
//   touch      read the first byte of every page once, timing each access:
//              "ok pages=<n> total_ns=<t> p50_ns=<a> p99_ns=<b>"
//   quit
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <unistd.h>

#include "vm/testing/stand_in.h"

namespace {

using agile::vm::testing::NowNs;
using agile::vm::testing::Pattern;
constexpr size_t kPage = agile::vm::testing::kStandInPage;

}  // namespace

int main(int argc, char** argv) {
  uint64_t pages = 0;
  auto* mem = static_cast<uint8_t*>(agile::vm::testing::MapRamFromArgs(argc, argv, "shm_guest", &pages));
  if (mem == nullptr) return 2;
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
      uint64_t t0 = NowNs();
      volatile uint8_t sink = 0;
      for (uint64_t i = 0; i < pages; ++i) {
        uint64_t a = NowNs();
        sink = sink + mem[i * kPage];
        lat[i] = NowNs() - a;
      }
      uint64_t total = NowNs() - t0;
      std::sort(lat.begin(), lat.end());
      std::cout << "ok pages=" << pages << " total_ns=" << total << " p50_ns=" << lat[pages / 2]
                << " p99_ns=" << lat[pages * 99 / 100] << std::endl;
    } else if (cmd == "sparse") {
      // Reads one byte of each of the first n pages, gap_us apart: a guest
      // that faults now and then, not page after page.
      uint64_t n, gap_us;
      std::cin >> n >> gap_us;
      volatile uint8_t sink = 0;
      for (uint64_t i = 0; i < n && i < pages; ++i) {
        sink = sink + mem[i * kPage];
        ::usleep(static_cast<useconds_t>(gap_us));
      }
      std::cout << "ok" << std::endl;
    } else if (cmd == "quit") {
      return 0;
    } else {
      std::cout << "error unknown command " << cmd << std::endl;
    }
  }
  return 0;
}
