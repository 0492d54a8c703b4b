// A stand-in for QEMU in working-set tracking tests and benchmarks: maps a
// shared RAM file with libagile-shim.so preloaded (like shm_guest) and offers
// access patterns a tracker can be judged against. Usage: track_guest RAM_PATH
// PAGES; prints "ready", then answers one line per command on stdin:
//   fill G F N     write a pattern derived from (index, G) into pages [F, F+N)
//   verify G F N   check that pattern: "ok" or "bad <index>"
//   read F N       load one word of each page of [F, F+N)
//   write F N      store one word of each page of [F, F+N), keeping its value
//   time F N       read one word per page, timing each access:
//                  "ok pages=<n> total_ns=<t> p50_ns=<a> p99_ns=<b>"
//   hot F N W      start a thread sweeping [F, F+N) at full speed, one word
//                  per page per sweep, W percent of the accesses being stores
//                  (which keep the word's value, so `verify` still holds)
//   stop           stop it: "ok accesses=<n> ns=<t> run_ns=<r> wait_ns=<w>
//                  sys_ms=<s>": the thread's time on a CPU and runnable but
//                  waiting for one (/proc/thread-self/schedstat), and its
//                  kernel CPU time (/proc/thread-self/stat, 10 ms ticks). The
//                  sweep never sleeps, so t - r - w is time stalled in page
//                  faults; a benchmark can tell those apart from other
//                  tenants' load
//   quit
// Other answers: "ok", or "error <why>".
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "vm/testing/stand_in.h"

namespace {

using agile::vm::testing::NowNs;
using agile::vm::testing::Pattern;
constexpr size_t kPage = agile::vm::testing::kStandInPage;
constexpr size_t kWords = kPage / 8;

struct SchedTimes {
  uint64_t run_ns = 0, wait_ns = 0, sys_ms = 0;
};

// The calling thread's scheduler times so far; zeros where unavailable.
SchedTimes ThreadTimes() {
  SchedTimes t;
  unsigned long long run = 0, wait = 0;
  if (FILE* f = std::fopen("/proc/thread-self/schedstat", "r")) {
    if (std::fscanf(f, "%llu %llu", &run, &wait) == 2) t = {run, wait, 0};
    std::fclose(f);
  }
  if (FILE* f = std::fopen("/proc/thread-self/stat", "r")) {
    char buf[1024];
    size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    std::fclose(f);
    // Fields after the parenthesised name: state is field 3, stime field 15.
    if (const char* p = std::strrchr(buf, ')')) {
      std::istringstream in(p + 2);
      std::string field;
      for (int i = 3; i <= 15 && in >> field; ++i)
        if (i == 15) t.sys_ms = std::strtoull(field.c_str(), nullptr, 10) * 1000 / ::sysconf(_SC_CLK_TCK);
    }
  }
  return t;
}

struct Hot {
  std::thread thread;
  std::atomic<bool> stop{false};
  uint64_t accesses = 0;
  uint64_t ns = 0;
  SchedTimes times;
};

// Sweeps the pages in order; the word touched moves every sweep so stores do
// not always hit the same cache line. Whether an access stores is a cheap
// hash of (sweep, page), so a W% mix is spread over all pages.
void Sweep(volatile uint64_t* mem, uint64_t first, uint64_t n, uint32_t write_pct, Hot* h) {
  uint64_t t0 = NowNs(), count = 0;
  SchedTimes s0 = ThreadTimes();
  for (uint64_t sweep = 0; !h->stop.load(std::memory_order_relaxed); ++sweep) {
    size_t word = sweep % kWords;
    for (uint64_t i = first; i < first + n; ++i) {
      volatile uint64_t* w = mem + i * kWords + word;
      uint64_t v = *w;
      if ((((i ^ sweep) * 0x9E3779B97F4A7C15ULL) >> 57) % 100 < write_pct) *w = v;
    }
    count += n;
  }
  h->accesses = count;
  h->ns = NowNs() - t0;
  SchedTimes s1 = ThreadTimes();
  h->times = {s1.run_ns - s0.run_ns, s1.wait_ns - s0.wait_ns, s1.sys_ms - s0.sys_ms};
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t pages = 0;
  auto* mem = static_cast<uint64_t*>(agile::vm::testing::MapRamFromArgs(argc, argv, "track_guest", &pages));
  if (mem == nullptr) return 2;
  volatile uint64_t* vmem = mem;
  Hot hot;
  std::cout << "ready" << std::endl;
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string cmd;
    in >> cmd;
    uint64_t a = 0, first = 0, n = 0;
    if (cmd == "fill" || cmd == "verify") in >> a;
    if (cmd != "stop" && cmd != "quit") in >> first >> n;
    if (cmd == "hot") in >> a;
    if (!in || first > pages || n > pages - first) {
      std::cout << "error bad arguments: " << line << std::endl;
      continue;
    }
    if (cmd == "fill" || cmd == "verify") {
      uint64_t bad = UINT64_MAX;
      for (uint64_t i = first; i < first + n && bad == UINT64_MAX; ++i) {
        volatile uint64_t* w = vmem + i * kWords;
        for (size_t k = 0; k < kWords; ++k) {
          if (cmd == "fill") {
            w[k] = Pattern(i, a, k);
          } else if (w[k] != Pattern(i, a, k)) {
            bad = i;
            break;
          }
        }
      }
      if (bad == UINT64_MAX) std::cout << "ok" << std::endl;
      else std::cout << "bad " << bad << std::endl;
    } else if (cmd == "read" || cmd == "write") {
      for (uint64_t i = first; i < first + n; ++i) {
        uint64_t v = vmem[i * kWords];
        if (cmd == "write") vmem[i * kWords] = v;
      }
      std::cout << "ok" << std::endl;
    } else if (cmd == "time") {
      std::vector<uint64_t> lat(std::max<uint64_t>(n, 1));
      uint64_t t0 = NowNs();
      for (uint64_t i = 0; i < n; ++i) {
        uint64_t s = NowNs();
        (void)vmem[(first + i) * kWords];
        lat[i] = NowNs() - s;
      }
      uint64_t total = NowNs() - t0;
      std::sort(lat.begin(), lat.end());
      std::cout << "ok pages=" << n << " total_ns=" << total << " p50_ns=" << lat[lat.size() / 2]
                << " p99_ns=" << lat[lat.size() * 99 / 100] << std::endl;
    } else if (cmd == "hot") {
      if (hot.thread.joinable() || a > 100) {
        std::cout << "error hot set already running or write percent > 100" << std::endl;
        continue;
      }
      hot.stop.store(false);
      hot.thread = std::thread(Sweep, vmem, first, n, static_cast<uint32_t>(a), &hot);
      std::cout << "ok" << std::endl;
    } else if (cmd == "stop") {
      if (!hot.thread.joinable()) {
        std::cout << "error no hot set running" << std::endl;
        continue;
      }
      hot.stop.store(true);
      hot.thread.join();
      std::cout << "ok accesses=" << hot.accesses << " ns=" << hot.ns << " run_ns=" << hot.times.run_ns
                << " wait_ns=" << hot.times.wait_ns << " sys_ms=" << hot.times.sys_ms << std::endl;
    } else if (cmd == "quit") {
      break;
    } else {
      std::cout << "error unknown command " << cmd << std::endl;
    }
  }
  if (hot.thread.joinable()) {
    hot.stop.store(true);
    hot.thread.join();
  }
  return 0;
}
