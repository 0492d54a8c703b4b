// Offload and refault through a real agile-memd over loopback TCP, with
// agiled's real code path: a test process (shm_guest, the QEMU stand-in with
// the real shim preloaded) fills a RAM file; the Evictor offloads all of it
// (drop PTEs, read out, PUT, punch holes, in pipelined batches); then the
// process reads every page back, each a refault served by the FaultServer
// from memd (UFFDIO_COPY).
// Page contents are verified afterwards. --store URL runs the same against
// another swap store (a Redis Cluster: bench/redis_store_bench) instead of
// the agile-memd this starts. The refault's floor, measured in the same run:
// a bare userfaultfd handler's round trip (bare_uffd_floor.h) plus a raw
// loopback TCP request / 4 KiB reply (tcp_pingpong_floor.h), each with the
// busy-poll window of the side it stands for.
//
//   offload_bench [--mib 256] [--prefetch 1] [--store URL] [--json FILE]
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>

#include "bare_uffd_floor.h"
#include "base/io.h"
#include "base/process.h"
#include "offload/evictor.h"
#include "offload/store_url.h"
#include "offload/victim_policy.h"
#include "store/memd_client.h"
#include "tcp_pingpong_floor.h"
#include "vm/fault_server.h"
#include "vm/testing/guest_process.h"

using namespace agile;

namespace {

Result<Process> StartMemd(uint16_t* port, int busy_poll_us) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return ErrnoStatus("pipe");
  UniqueFd r(out[0]), w(out[1]);
  SpawnOptions o;
  o.argv = {AGILE_MEMD_PATH, "--listen", "127.0.0.1:0", "--capacity", "4G", "--log-level", "warn"};
  if (busy_poll_us >= 0) {
    o.argv.push_back("--busy-poll-us");
    o.argv.push_back(std::to_string(busy_poll_us));
  }
  o.stdout_fd = w.get();
  o.stderr_fd = 2;
  AGILE_ASSIGN_OR_RETURN(Process p, Spawn(o));
  w.Reset();
  LineReader lr(r.get());
  AGILE_ASSIGN_OR_RETURN(std::string line, lr.Next());
  *port = static_cast<uint16_t>(std::stoi(line.substr(line.rfind(':') + 1)));
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"offload_bench - offload throughput and refault latency through agile-memd on loopback"};
  uint64_t mib = 256;
  uint32_t prefetch = 1;
  std::string json_path, store_url;
  app.add_option("--store", store_url, "Swap store URL (agiled's --store); default: start an agile-memd");
  app.add_option("--mib", mib, "Guest memory to offload and read back")->capture_default_str();
  app.add_option("--prefetch", prefetch, "Refault window (1 = only the faulting page)")->capture_default_str();
  app.add_option("--json", json_path, "Write results as JSON here");
  int busy_poll_us = -1, memd_busy_poll_us = -1;
  app.add_option("--busy-poll-us", busy_poll_us, "Fault thread's busy-poll window (default: FaultServer's)");
  app.add_option("--memd-busy-poll-us", memd_busy_poll_us, "agile-memd's --busy-poll-us (default: its own)");
  CLI11_PARSE(app, argc, argv);
  const uint64_t pages = mib << 8;

  uint16_t port = 0;
  std::optional<Process> memd;
  if (store_url.empty()) {
    auto m = StartMemd(&port, memd_busy_poll_us);
    if (!m.ok()) {
      std::fprintf(stderr, "offload_bench: agile-memd: %s\n", m.status().ToString().c_str());
      return 1;
    }
    memd = std::move(m).value();
    store_url = "memd://127.0.0.1:" + std::to_string(port);
  }
  auto made = offload::MakeSwapStore(store_url, "bench-host", "bench-vm-" + std::to_string(::getpid()), nullptr);
  if (!made.ok()) {
    std::fprintf(stderr, "offload_bench: %s\n", made.status().ToString().c_str());
    return 1;
  }
  offload::SwapStore& store = **made;
  if (Status s = store.Claim(); !s.ok()) {
    std::fprintf(stderr, "offload_bench: %s\n", s.ToString().c_str());
    return 1;
  }
  auto g = vm::testing::GuestProcess::Start(AGILE_SHIM_PATH, AGILE_SHM_GUEST_PATH, pages, &store, prefetch,
                                            vm::PageState::kZero, busy_poll_us);
  if (!g.ok()) {
    std::fprintf(stderr, "offload_bench: %s\n", g.status().ToString().c_str());
    return 1;
  }
  auto& guest = **g;
  if (*guest.Command("write 5") != "ok") return 1;

  // agiled's own entry point (EvictTo, as `vm offload --resident 0` runs it):
  // the pipeline gets up to 64 MiB of victims per call. No fault has been
  // observed, so the fallback policy picks pages in index order.
  offload::Evictor evictor(&guest.memory(), &store);
  offload::LastFaultPolicy policy(&guest.memory());
  uint64_t t0 = vm::NowNs();
  auto evicted = evictor.EvictTo(0, &policy);
  if (!evicted.ok()) {
    std::fprintf(stderr, "offload_bench: evict: %s\n", evicted.status().ToString().c_str());
    return 1;
  }
  const offload::EvictReport& rep = *evicted;
  if (rep.resident_after != 0) {
    std::fprintf(stderr, "offload_bench: %llu pages still resident after the offload\n",
                 (unsigned long long)rep.resident_after);
    return 1;
  }
  double evict_s = static_cast<double>(vm::NowNs() - t0) / 1e9;
  double gbps = static_cast<double>(rep.bytes_sent) / evict_s / 1e9;

  static const std::regex kLine(R"(ok pages=(\d+) total_ns=(\d+) p50_ns=(\d+) p99_ns=(\d+))");
  auto line = guest.Command("touch");
  std::smatch m;
  if (!line.ok() || !std::regex_search(*line, m, kLine)) return 1;
  double touch_s = std::stod(m[2]) / 1e9;
  double p50 = std::stod(m[3]) / 1e3, p99 = std::stod(m[4]) / 1e3;
  const auto& st = guest.faults().stats();
  bool intact = *guest.Command("verify 5") == "ok";
  (void)store.Release();
  if (memd) {
    (void)memd->Signal(SIGTERM);
    memd->Wait(5000);
  }

  // Floors, after the run so they do not share the CPU with it.
  const auto uffd_window =
      busy_poll_us >= 0 ? std::chrono::microseconds(busy_poll_us) : vm::FaultServer::kDefaultBusyPoll;
  const double bare_uffd_rate = bench::BareUffdFaultsPerSecond(65536, uffd_window);
  const double bare_uffd_us = bare_uffd_rate > 0 ? 1e6 / bare_uffd_rate : 0;
  const bench::RoundTrips tcp = bench::TcpPingPong(20000, 4096, memd::MemdClientOptions{}.busy_poll);
  const double floor_p50 = bare_uffd_us + tcp.p50_us;

  std::printf("offload + refault through %s (%llu MiB, prefetch %u)\n", store.addr().c_str(),
              (unsigned long long)mib, prefetch);
  std::printf("  offload throughput   %8.2f GB/s  (target >= 1 GB/s)   %llu pages in %.2f s\n", gbps,
              (unsigned long long)rep.pages_offloaded, evict_s);
  std::printf("  refaults             %8llu  (+%llu prefetched) in %.2f s\n", (unsigned long long)st.refault.load(),
              (unsigned long long)st.prefetched.load(), touch_s);
  std::printf("  refault p50 (guest)  %8.1f us    (target <= 20 us, issue 14)\n", p50);
  std::printf("  refault p99 (guest)  %8.1f us    (target <= 100 us, issue 14)\n", p99);
  std::printf("  floor p50            %8.1f us    = bare uffd round trip %.1f us (1 / %.0f faults/s) + TCP loopback"
              " 24 B / 4 KiB ping-pong p50 %.1f us (p99 %.1f)\n",
              floor_p50, bare_uffd_us, bare_uffd_rate, tcp.p50_us, tcp.p99_us);
  std::printf("  refault p50/p99 (agiled, fault read to resolve) %.0f / %.0f us\n",
              st.refault_latency.PercentileUs(50), st.refault_latency.PercentileUs(99));
  std::printf("  fault thread busy-poll windows hit/missed: %llu / %llu\n",
              (unsigned long long)st.busy_poll_hits.load(), (unsigned long long)st.busy_poll_misses.load());
  std::printf("  data after round trip: %s\n", intact ? "intact" : "CORRUPT");
  if (!json_path.empty()) {
    nlohmann::json j = {{"benchmark", "offload_refault"}, {"store", store.addr()}, {"mib", mib}, {"prefetch", prefetch},
                        {"offload_gb_per_s", gbps},       {"offload_seconds", evict_s},
                        {"refaults", st.refault.load()},  {"prefetched", st.prefetched.load()},
                        {"refault_p50_us", p50},          {"refault_p99_us", p99},
                        {"server_refault_p50_us", st.refault_latency.PercentileUs(50)},
                        {"server_refault_p99_us", st.refault_latency.PercentileUs(99)},
                        {"floor_bare_uffd_us", bare_uffd_us},
                        {"floor_tcp_pingpong_4k_p50_us", tcp.p50_us},
                        {"floor_tcp_pingpong_4k_p99_us", tcp.p99_us},
                        {"floor_refault_p50_us", floor_p50},
                        {"intact", intact}};
    std::ofstream(json_path) << j.dump(2) << "\n";
  }
  return intact ? 0 : 1;
}
