// First-touch fault service through agiled's real fault path: a test process
// (shm_guest, the QEMU stand-in, with the real shim preloaded) touches every
// page of a fresh RAM file once; each touch is a userfaultfd MISSING fault that
// our FaultServer answers with UFFDIO_ZEROPAGE. The process times each access.
// The floor, measured in the same run: the same read touches of a fresh
// tmpfs file mapped without userfaultfd (the kernel allocates each page
// itself), i.e. what a first touch costs with no fault service at all; and
// the bare userfaultfd handler (bare_uffd_floor.h), i.e. what the kernel's
// uffd round trip alone allows, with and without the same busy-poll window.
//
//   fault_bench [--pages N] [--runs R] [--json FILE]
#include <sys/mman.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "bare_uffd_floor.h"
#include "vm/fault_server.h"
#include "vm/testing/guest_process.h"

using namespace agile;

namespace {

// Pages per second the kernel alone first-touches (read) in a fresh memfd
// mapping: the floor under any fault service. 0 on error.
double KernelFloor(uint64_t pages) {
  const size_t page = 4096, len = pages * page;
  int fd = ::memfd_create("fault_bench_floor", MFD_CLOEXEC);
  if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(len)) != 0) return 0;
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) return 0;
  auto* mem = static_cast<volatile uint8_t*>(p);
  uint8_t sink = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < pages; ++i) sink = static_cast<uint8_t>(sink + mem[i * page]);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ::munmap(p, len);
  (void)sink;
  return static_cast<double>(pages) / s;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fault_bench - first-touch fault service latency and rate through agiled's fault server"};
  uint64_t pages = 262144;  // 1 GiB
  int runs = 3;
  std::string json_path, shim = AGILE_SHIM_PATH, guest = AGILE_SHM_GUEST_PATH;
  app.add_option("--pages", pages, "Pages touched per run")->capture_default_str();
  app.add_option("--runs", runs, "Runs (the median run is reported)")->capture_default_str();
  app.add_option("--json", json_path, "Write results as JSON here");
  int busy_poll_us = -1;
  app.add_option("--busy-poll-us", busy_poll_us, "Fault thread's busy-poll window (default: FaultServer's)");
  CLI11_PARSE(app, argc, argv);

  struct Run {
    double faults_per_s, p50_us, p99_us, server_p50_us, server_p99_us;
  };
  std::vector<Run> results;
  std::vector<double> floors, bare_sleep, bare_poll;
  const auto window = busy_poll_us >= 0 ? std::chrono::microseconds(busy_poll_us) : vm::FaultServer::kDefaultBusyPoll;
  static const std::regex kLine(R"(ok pages=(\d+) total_ns=(\d+) p50_ns=(\d+) p99_ns=(\d+))");
  for (int r = 0; r < runs; ++r) {
    auto g = vm::testing::GuestProcess::Start(shim, guest, pages, nullptr, 4, vm::PageState::kZero, busy_poll_us);
    if (!g.ok()) {
      std::fprintf(stderr, "fault_bench: %s\n", g.status().ToString().c_str());
      return 1;
    }
    auto line = (*g)->Command("touch");
    std::smatch m;
    if (!line.ok() || !std::regex_search(*line, m, kLine)) {
      std::fprintf(stderr, "fault_bench: bad answer from shm_guest\n");
      return 1;
    }
    const auto& st = (*g)->faults().stats();
    if (st.first_touch.load() != pages) {
      std::fprintf(stderr, "fault_bench: expected %llu faults, served %llu\n", (unsigned long long)pages,
                   (unsigned long long)st.first_touch.load());
      return 1;
    }
    double total_s = std::stod(m[2]) / 1e9;
    results.push_back({static_cast<double>(pages) / total_s, std::stod(m[3]) / 1e3, std::stod(m[4]) / 1e3,
                       st.first_touch_latency.PercentileUs(50), st.first_touch_latency.PercentileUs(99)});
    floors.push_back(KernelFloor(pages));
    bare_poll.push_back(bench::BareUffdFaultsPerSecond(pages, window));
    bare_sleep.push_back(bench::BareUffdFaultsPerSecond(pages, std::chrono::microseconds(0)));
    if (bare_poll.back() == 0 || bare_sleep.back() == 0) return 1;
    std::printf("run %d: %.0f faults/s, access p50 %.1f us, p99 %.1f us; floor (no uffd) %.0f pages/s;"
                " bare uffd handler %.0f faults/s busy-polling, %.0f sleeping;"
                " busy-poll windows hit/missed %llu/%llu\n",
                r + 1, results.back().faults_per_s, results.back().p50_us, results.back().p99_us, floors.back(),
                bare_poll.back(), bare_sleep.back(),
                (unsigned long long)st.busy_poll_hits.load(), (unsigned long long)st.busy_poll_misses.load());
  }
  std::sort(results.begin(), results.end(), [](const Run& a, const Run& b) { return a.faults_per_s < b.faults_per_s; });
  const double lo = results.front().faults_per_s, hi = results.back().faults_per_s;
  const Run& med = results[results.size() / 2];
  auto median = [](std::vector<double>& v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double floor_med = median(floors), bare_poll_med = median(bare_poll), bare_sleep_med = median(bare_sleep);
  std::printf("\nfirst-touch fault service (%llu pages, median of %d runs)\n", (unsigned long long)pages, runs);
  std::printf("  faults/s          %10.0f   (range %.0f-%.0f; target >= 200000)\n", med.faults_per_s, lo, hi);
  std::printf("  floor, no uffd    %10.0f   pages/s (range %.0f-%.0f): the kernel's own first touch\n", floor_med,
              floors.front(), floors.back());
  std::printf("  floor, bare uffd  %10.0f   faults/s busy-polling %lld us (range %.0f-%.0f); %.0f sleeping (range %.0f-%.0f)\n",
              bare_poll_med, static_cast<long long>(window.count()), bare_poll.front(), bare_poll.back(),
              bare_sleep_med, bare_sleep.front(), bare_sleep.back());
  std::printf("  agiled / bare     %10.0f%%  of the busy-polling bare handler\n", 100 * med.faults_per_s / bare_poll_med);
  std::printf("  access p50        %10.1f us (target <= 10)\n", med.p50_us);
  std::printf("  access p99        %10.1f us\n", med.p99_us);
  std::printf("  server-side p50   %10.1f us (from fault read to resolve; 1 us buckets)\n", med.server_p50_us);
  if (!json_path.empty()) {
    nlohmann::json j = {{"benchmark", "fault_first_touch"}, {"pages", pages},        {"runs", runs},
                        {"faults_per_s", med.faults_per_s}, {"faults_per_s_min", lo}, {"faults_per_s_max", hi},
                        {"floor_pages_per_s", floor_med},
                        {"floor_bare_uffd_busy_poll_faults_per_s", bare_poll_med},
                        {"floor_bare_uffd_sleeping_faults_per_s", bare_sleep_med}, {"busy_poll_us", window.count()}, {"p50_us", med.p50_us}, {"p99_us", med.p99_us},
                        {"server_p50_us", med.server_p50_us}, {"server_p99_us", med.server_p99_us},
                        {"target_faults_per_s", 200000},    {"target_p50_us", 10}};
    std::ofstream(json_path) << j.dump(2) << "\n";
  }
  return 0;
}
