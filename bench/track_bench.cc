// Working-set tracking through agiled's real paths: a test process
// (track_guest, the QEMU stand-in, with the real shim preloaded and our fault
// server) maps a RAM file; we measure
//   (a) PAGEMAP_SCAN cost per GiB, with nothing and with everything written,
//       and the in-kernel WP_ASYNC fault a write to a re-protected page takes,
//   (b) drop-PTE cost per GiB (mapped and already-dropped) and what the MINOR
//       faults that follow cost: guest-visible latency, handler CPU,
//   (c) throughput of the process sweeping a hot set at full speed, tracking
//       off vs on at the given budget: phases alternate off/on/.../off and each
//       on phase is compared with the mean of the off phases around it. The
//       sweeping thread's run-queue wait is taken out of its time, so CPU load
//       from other processes on the machine does not read as tracking cost;
//       time stalled in faults and spent in the kernel for them still does.
//       On a shared machine the throughput ratio stays noisy (caches, memory
//       bandwidth), so the thread's own account is reported too: time stalled
//       in faults (it never sleeps otherwise) plus extra kernel time, over wall.
//   (d) the WSS estimate against the known hot set at the end of each on phase.
//
//   track_bench [--pages N] [--hot-pages H] [--write-pct W] [--seconds S]
//               [--rounds R] [--budget PCT] [--json FILE]
#include <pthread.h>
#include <time.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "track/access_tracker.h"
#include "track/write_scanner.h"
#include "vm/testing/guest_process.h"

using namespace agile;

namespace {

uint64_t MonoNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "track_bench: %s\n", what.c_str());
  std::exit(1);
}

template <typename T>
T Check(Result<T> r, const char* what) {
  if (!r.ok()) Die(std::string(what) + ": " + r.status().ToString());
  return std::move(r).value();
}

void Check(const Status& s, const char* what) {
  if (!s.ok()) Die(std::string(what) + ": " + s.ToString());
}

// Sits between the fault server and the tracker: learns the fault thread's
// CPU clock (for the handler cost of a fault before any tracker exists) and
// forwards to the tracker once there is one.
class ClockObserver : public vm::AccessObserver {
 public:
  void OnAccess(uint64_t idx) override {
    if (!known_.load(std::memory_order_acquire) && pthread_getcpuclockid(pthread_self(), &clock_) == 0)
      known_.store(true, std::memory_order_release);
    if (vm::AccessObserver* t = target_.load(std::memory_order_acquire)) t->OnAccess(idx);
  }
  uint64_t CpuNs() const {
    timespec ts{};
    if (!known_.load(std::memory_order_acquire) || clock_gettime(clock_, &ts) != 0) return 0;
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
  }
  std::atomic<vm::AccessObserver*> target_{nullptr};

 private:
  std::atomic<bool> known_{false};
  clockid_t clock_{};
};

std::string Cmd(vm::testing::GuestProcess& g, const std::string& c) {
  std::string r = Check(g.Command(c), "guest command");
  if (r.rfind("ok", 0) != 0) Die("guest answered '" + r + "' to '" + c + "'");
  return r;
}

std::string Range(uint64_t first, uint64_t n) { return std::to_string(first) + " " + std::to_string(n); }

// Accesses per second of a hot phase, from the guest's "stop" answer: over
// wall time, and over the time the thread was not waiting for a CPU.
// own: time stalled (blocked) and in the kernel, as fractions of wall time.
struct Phase {
  double wall, own, stalled, sys;
};
Phase Throughput(const std::string& stop) {
  static const std::regex kLine(R"(ok accesses=(\d+) ns=(\d+) run_ns=(\d+) wait_ns=(\d+) sys_ms=(\d+))");
  std::smatch m;
  if (!std::regex_search(stop, m, kLine)) Die("bad stop answer: " + stop);
  double n = std::stod(m[1]), ns = std::stod(m[2]), run = std::stod(m[3]), wait = std::stod(m[4]);
  double sys = std::stod(m[5]) * 1e6;
  return {n / (ns / 1e9), n / ((ns - std::min(wait, ns * 0.99)) / 1e9), std::max(0.0, ns - run - wait) / ns,
          sys / ns};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"track_bench - working-set tracking cost and accuracy through agiled's real fault path"};
  uint64_t pages = 262144;  // 1 GiB
  uint64_t hot = 4096;      // 16 MiB
  uint32_t write_pct = 0;   // reads only: every hot page pays a fault per coverage, the worst case
  double seconds = 12;
  int rounds = 5;
  double budget = track::TrackerOptions{}.cpu_budget_pct;
  std::string json_path, shim = AGILE_SHIM_PATH, guest = AGILE_TRACK_GUEST_PATH;
  app.add_option("--pages", pages, "Guest RAM in pages")->capture_default_str();
  app.add_option("--hot-pages", hot, "Hot set swept at full speed, in pages")->capture_default_str();
  app.add_option("--write-pct", write_pct, "Percent of hot-set accesses that store")->capture_default_str();
  app.add_option("--seconds", seconds, "Length of each throughput phase")->capture_default_str();
  app.add_option("--rounds", rounds, "On phases, each between two off phases (medians are reported)")->capture_default_str();
  app.add_option("--budget", budget, "Tracker CPU budget, percent of one core")->capture_default_str();
  app.add_option("--json", json_path, "Write results as JSON here");
  CLI11_PARSE(app, argc, argv);
  if (hot == 0 || hot > pages / 2 || rounds < 1 || write_pct > 100) Die("need 0 < hot-pages <= pages/2, rounds >= 1");
  const double gib = static_cast<double>(pages) / 262144.0;
  const auto phase_ms = static_cast<uint64_t>(seconds * 1000);

  auto g = Check(vm::testing::GuestProcess::Start(shim, guest, pages), "start guest");
  ClockObserver observer;
  // No fault can happen before our first command, so setting it now is safe.
  g->faults().set_access_observer(&observer);
  Cmd(*g, "fill 1 " + Range(0, pages));

  // (a) PAGEMAP_SCAN
  auto scanner = Check(track::WriteScanner::Open(g->memory().mapping()), "open scanner");
  std::vector<uint64_t> written;
  Check(scanner.Scan(&written), "baseline scan");
  std::vector<double> scan_idle, scan_all, wp_fault;
  for (int i = 0; i < 5; ++i) {
    written.clear();
    uint64_t t = MonoNs();
    Check(scanner.Scan(&written), "scan");
    scan_idle.push_back(static_cast<double>(MonoNs() - t) / 1e6);
  }
  for (int i = 0; i < 3; ++i) {
    // One store per page, first to protected pages (each takes a WP_ASYNC
    // fault), then again to the now-writable pages.
    uint64_t t = MonoNs();
    Cmd(*g, "write " + Range(0, pages));
    uint64_t protected_ns = MonoNs() - t;
    t = MonoNs();
    Cmd(*g, "write " + Range(0, pages));
    uint64_t plain_ns = MonoNs() - t;
    wp_fault.push_back(static_cast<double>(protected_ns - std::min(protected_ns, plain_ns)) / 1e3 /
                       static_cast<double>(pages));
    written.clear();
    t = MonoNs();
    Check(scanner.Scan(&written), "scan");
    scan_all.push_back(static_cast<double>(MonoNs() - t) / 1e6);
    if (written.size() != pages) Die("scan after writing every page reported " + std::to_string(written.size()));
  }

  // (b) drop PTEs, and the MINOR faults that follow
  std::vector<double> drop_mapped, drop_empty, fault_p50, fault_cpu, fault_wall;
  static const std::regex kTime(R"(ok pages=(\d+) total_ns=(\d+) p50_ns=(\d+) p99_ns=(\d+))");
  for (int i = 0; i < 3; ++i) {
    uint64_t ns = 0;
    Check(g->memory().DropPtes(0, pages, &ns), "drop");
    drop_mapped.push_back(static_cast<double>(ns) / 1e6);
    Check(g->memory().DropPtes(0, pages, &ns), "drop");
    drop_empty.push_back(static_cast<double>(ns) / 1e6);
    uint64_t cpu0 = observer.CpuNs(), m0 = g->faults().stats().minor.load();
    std::string line = Cmd(*g, "time " + Range(0, pages));
    uint64_t cpu1 = observer.CpuNs(), m1 = g->faults().stats().minor.load();
    std::smatch m;
    if (!std::regex_search(line, m, kTime) || m1 - m0 != pages) Die("unexpected fault count or answer: " + line);
    fault_p50.push_back(std::stod(m[3]) / 1e3);
    fault_wall.push_back(std::stod(m[2]) / 1e3 / static_cast<double>(pages));
    fault_cpu.push_back(static_cast<double>(cpu1 - cpu0) / 1e3 / static_cast<double>(pages));
  }

  // (c) and (d): the tracker owns write tracking from here.
  track::TrackerOptions opts;
  opts.cpu_budget_pct = budget;
  auto tracker = Check(track::AccessTracker::Create(&g->memory(),
                                                    &g->faults().stats(), opts),
                       "create tracker");
  observer.target_.store(tracker.get(), std::memory_order_release);
  const uint64_t hot_first = pages / 4;
  const std::string hot_cmd = "hot " + Range(hot_first, hot) + " " + std::to_string(write_pct);

  // Warm up until every page was covered twice, then one more phase, so the
  // fill's first touches are outside the WSS window (the phase length).
  std::printf("warming up the tracker (two full coverage cycles)...\n");
  Cmd(*g, hot_cmd);
  tracker->Start();
  uint64_t warm_t0 = MonoNs();
  for (;;) {
    track::TrackerStats st = tracker->stats();
    if (st.ticks >= 2 * st.slices + 2) break;
    if (MonoNs() - warm_t0 > 600ULL * 1000000000ULL) Die("tracker did not complete two coverage cycles in 600 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(phase_ms));
  tracker->Stop();
  Cmd(*g, "stop");
  const double warm_s = static_cast<double>(MonoNs() - warm_t0) / 1e9;

  std::vector<Phase> off;
  std::vector<double> on_own, on_wall, ratio_own, ratio_wall, stall_pct, wss_err, est_cpu;
  uint64_t last_wss = 0;
  track::TrackerStats st;
  auto off_phase = [&] {
    Cmd(*g, "read " + Range(hot_first, hot));  // map back what the last on phase dropped, untimed
    Cmd(*g, hot_cmd);
    std::this_thread::sleep_for(std::chrono::milliseconds(phase_ms));
    off.push_back(Throughput(Cmd(*g, "stop")));
  };
  off_phase();
  for (int r = 0; r < rounds; ++r) {
    tracker->Start();
    Cmd(*g, hot_cmd);
    std::this_thread::sleep_for(std::chrono::milliseconds(phase_ms));
    last_wss = tracker->WssPages(seconds);
    Phase p = Throughput(Cmd(*g, "stop"));
    tracker->Stop();
    st = tracker->stats();
    off_phase();
    const Phase& before = off[off.size() - 2];
    const Phase& after = off.back();
    on_own.push_back(p.own);
    on_wall.push_back(p.wall);
    ratio_own.push_back(p.own / ((before.own + after.own) / 2));
    ratio_wall.push_back(p.wall / ((before.wall + after.wall) / 2));
    // Stalls plus the kernel time beyond what the off phases spent there.
    stall_pct.push_back(100.0 * (p.stalled + std::max(0.0, p.sys - (before.sys + after.sys) / 2)));
    wss_err.push_back(100.0 * (static_cast<double>(last_wss) - static_cast<double>(hot)) / static_cast<double>(hot));
    est_cpu.push_back(st.est_cpu_pct);
    std::printf("round %d: off %.1f | on %.1f | off %.1f M/s (wall %.1f | %.1f | %.1f), stalled %.2f%%, "
                "wss %llu (%+.1f%%), period %.0f ms x %u slices, est cpu %.2f%%\n",
                r + 1, before.own / 1e6, p.own / 1e6, after.own / 1e6, before.wall / 1e6, p.wall / 1e6,
                after.wall / 1e6, stall_pct.back(), (unsigned long long)last_wss, wss_err.back(), st.period_ms,
                st.slices, st.est_cpu_pct);
  }
  std::vector<double> off_own;
  for (const Phase& p : off) off_own.push_back(p.own);
  Cmd(*g, "verify 1 " + Range(0, pages));

  const double loss_pct = 100.0 * (1.0 - Median(ratio_own));
  const double loss_wall_pct = 100.0 * (1.0 - Median(ratio_wall));
  double max_abs_err = 0;
  for (double e : wss_err) max_abs_err = std::max(max_abs_err, std::fabs(e));
  std::printf("\nworking-set tracking (%llu MiB guest, %llu MiB hot set, %u%% writes, budget %.1f%%)\n",
              (unsigned long long)(pages / 256), (unsigned long long)(hot / 256), write_pct, budget);
  std::printf("  (a) PAGEMAP_SCAN, nothing written   %8.2f ms/GiB\n", Median(scan_idle) / gib);
  std::printf("      PAGEMAP_SCAN, all written       %8.2f ms/GiB\n", Median(scan_all) / gib);
  std::printf("      WP_ASYNC write fault (in kernel)%8.2f us\n", Median(wp_fault));
  std::printf("  (b) drop PTEs, all mapped           %8.2f ms/GiB (madvise in the VM process)\n",
              Median(drop_mapped) / gib);
  std::printf("      drop PTEs, none mapped          %8.3f ms/GiB\n", Median(drop_empty) / gib);
  std::printf("      MINOR fault, guest-visible p50  %8.2f us (back to back: %.2f us per fault)\n", Median(fault_p50),
              Median(fault_wall));
  std::printf("      MINOR fault, handler CPU        %8.2f us\n", Median(fault_cpu));
  std::printf("  (c) throughput off / on             %6.1f / %.1f M accesses/s (run-queue wait excluded)\n",
              Median(off_own) / 1e6, Median(on_own) / 1e6);
  std::printf("      throughput lost                 %8.2f %%  (target <= 3; wall clock: %.2f %%)\n", loss_pct,
              loss_wall_pct);
  std::printf("      time stalled in faults + kernel %8.2f %%  (the sweeping thread's own account)\n",
              Median(stall_pct));
  std::printf("      tracker's own estimate          %8.2f %%  (period %.0f ms, %u slices, fault charged %.1f us)\n",
              Median(est_cpu), st.period_ms, st.slices, st.fault_cost_us);
  std::printf("  (d) WSS estimate error              %+8.2f %% median, %.2f %% max |err| (window %.0f s)\n",
              Median(wss_err), max_abs_err, seconds);
  std::printf("      warm-up                         %8.1f s\n", warm_s);

  if (!json_path.empty()) {
    nlohmann::json j = {{"benchmark", "track"},
                        {"pages", pages},
                        {"hot_pages", hot},
                        {"write_pct", write_pct},
                        {"budget_pct", budget},
                        {"seconds", seconds},
                        {"rounds", rounds},
                        {"scan_idle_ms_per_gib", Median(scan_idle) / gib},
                        {"scan_all_written_ms_per_gib", Median(scan_all) / gib},
                        {"wp_async_fault_us", Median(wp_fault)},
                        {"drop_mapped_ms_per_gib", Median(drop_mapped) / gib},
                        {"drop_unmapped_ms_per_gib", Median(drop_empty) / gib},
                        {"minor_fault_guest_p50_us", Median(fault_p50)},
                        {"minor_fault_back_to_back_us", Median(fault_wall)},
                        {"minor_fault_handler_cpu_us", Median(fault_cpu)},
                        {"throughput_off", Median(off_own)},
                        {"throughput_on", Median(on_own)},
                        {"throughput_loss_pct", loss_pct},
                        {"throughput_loss_wall_pct", loss_wall_pct},
                        {"fault_stall_pct", Median(stall_pct)},
                        {"target_loss_pct", 3},
                        {"tracker_est_cpu_pct", Median(est_cpu)},
                        {"period_ms", st.period_ms},
                        {"slices", st.slices},
                        {"fault_charged_us", st.fault_cost_us},
                        {"wss_pages_last", last_wss},
                        {"wss_error_pct_median", Median(wss_err)},
                        {"wss_error_pct_max_abs", max_abs_err},
                        {"warmup_s", warm_s}};
    std::ofstream(json_path) << j.dump(2) << "\n";
  }
  return 0;
}
