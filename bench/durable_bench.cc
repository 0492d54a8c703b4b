// durable_bench: agile-memd PUT throughput when every acknowledged PUT is
// on disk (--data-dir, group commit), beside its floors measured in the same
// run on the same disk:
//   1. raw fdatasync: 4 KiB pwrite + fdatasync in a loop (latency, syncs/s);
//   2. the same PUT load without a data directory (memory only);
//   3. the same PUT load with --data-dir --fsync group (what is measured);
//   4. raw appends with one fdatasync per 8192 pages: what the disk does
//      with commits as big as a pipelining store can make them.
// The load: --sessions connections, each streaming 256-page PUTs through the
// real client (pipelined) over loopback TCP to an in-process server.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "store/memd_client.h"
#include "store/memd_server.h"
#include "store/page_store.h"

namespace {

using namespace agile;
using namespace agile::memd;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct Fsync {
  double p50_us = 0, mean_us = 0, per_s = 0;
};

// 4 KiB write + fdatasync, `n` times, on a file in dir: the disk's floor.
Fsync RawFdatasync(const std::string& dir, int n) {
  std::string path = dir + "/fsync-probe";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  std::vector<uint8_t> page(kPageSize, 0x5a);
  std::vector<double> us;
  auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    auto a = Clock::now();
    if (::pwrite(fd, page.data(), page.size(), static_cast<off_t>(i % 256) * kPageSize) < 0 || ::fdatasync(fd) != 0)
      std::perror("fsync probe");
    us.push_back(Seconds(Clock::now() - a) * 1e6);
  }
  double total = Seconds(Clock::now() - t0);
  ::close(fd);
  ::unlink(path.c_str());
  std::sort(us.begin(), us.end());
  Fsync f;
  f.p50_us = us[us.size() / 2];
  f.mean_us = total * 1e6 / n;
  f.per_s = n / total;
  return f;
}

// The disk's bandwidth floor for the same work: fresh 4 KiB pages appended
// in batches of `batch` pages, one fdatasync per batch (what a group commit
// does, minus the journal and the network), `total` pages in all.
double RawAppendPagesPerS(const std::string& dir, uint64_t batch, uint64_t total) {
  std::string path = dir + "/append-probe";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  std::vector<uint8_t> buf(batch * kPageSize, 0x6b);
  auto t0 = Clock::now();
  for (uint64_t done = 0; done < total; done += batch) {
    if (::pwrite(fd, buf.data(), buf.size(), static_cast<off_t>(done * kPageSize)) < 0 || ::fdatasync(fd) != 0)
      std::perror("append probe");
  }
  double secs = Seconds(Clock::now() - t0);
  ::close(fd);
  ::unlink(path.c_str());
  return static_cast<double>(total) / secs;
}

struct PutRun {
  double pages_per_s = 0;
  uint64_t pages = 0;
  uint64_t commits = 0;
};

// `sessions` clients PUT `pages_each` pages each (new pages, 256 per batch).
PutRun PutLoad(const std::string& data_dir, int sessions, uint64_t pages_each) {
  PageStore::Options o;
  o.capacity_bytes = (pages_each * sessions + 4096) * kPageSize;
  o.data_dir = data_dir;
  auto store = PageStore::Open(o);
  if (!store.ok()) {
    std::fprintf(stderr, "durable_bench: open store: %s\n", store.status().ToString().c_str());
    std::exit(1);
  }
  auto server = MemdServer::Start(store->get(), HostPort{"127.0.0.1", 0});
  if (!server.ok()) std::exit(1);
  std::string addr = (*server)->address().ToString();
  std::vector<uint8_t> page(kPageSize);
  for (size_t i = 0; i < kPageSize; ++i) page[i] = static_cast<uint8_t>(i * 7);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  auto t0 = Clock::now();
  for (int s = 0; s < sessions; ++s)
    threads.emplace_back([&, s] {
      auto c = MemdClient::Connect(addr, "bench-host");
      if (!c.ok()) {
        failures++;
        return;
      }
      std::string vm = "vm-" + std::to_string(s);
      auto t = (*c)->Claim(vm);
      if (!t.ok()) {
        failures++;
        return;
      }
      // 16 batches per call: the client pipelines them.
      constexpr uint64_t kCall = 16 * kMaxBatchPages;
      std::vector<PageRef> refs(kCall);
      for (uint64_t first = 0; first < pages_each; first += kCall) {
        for (uint64_t k = 0; k < kCall; ++k) refs[k] = PageRef{first + k, page.data()};
        if (!(*c)->Put(vm, *t, refs).ok()) failures++;
      }
    });
  for (auto& t : threads) t.join();
  double secs = Seconds(Clock::now() - t0);
  PutRun r;
  r.pages = pages_each * sessions;
  r.pages_per_s = r.pages / secs;
  r.commits = (*store)->commits();
  if (failures) std::fprintf(stderr, "durable_bench: %d failures\n", failures.load());
  (*server)->Stop();
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"durable_bench: agile-memd PUT throughput with durable acknowledgements (group commit) vs floors"};
  std::string dir = "/var/tmp";
  int sessions = 2;
  uint64_t pages = 131072;
  int fsyncs = 500;
  int rounds = 3;
  std::string json_path;
  app.add_option("--dir", dir, "a directory on the disk to measure (default /var/tmp)");
  app.add_option("--sessions", sessions, "concurrent client connections (default 2)");
  app.add_option("--pages", pages, "pages each session PUTs per run (default 131072 = 512 MiB)");
  app.add_option("--fsyncs", fsyncs, "raw fdatasync probes (default 500)");
  app.add_option("--rounds", rounds, "runs of each PUT load; the median is reported (default 3)");
  app.add_option("--json", json_path, "also write the figures as JSON here");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  double load_before[3] = {0, 0, 0};
  ::getloadavg(load_before, 3);
  std::string work = dir + "/durable-bench-" + std::to_string(::getpid());
  std::filesystem::create_directories(work);
  Fsync f = RawFdatasync(work, fsyncs);
  std::vector<PutRun> mem, disk;
  std::vector<double> raw, raw_big;
  // Interleaved, so a change of the machine's load hits every figure alike.
  for (int r = 0; r < rounds; ++r) {
    raw.push_back(RawAppendPagesPerS(work, 512, pages));
    raw_big.push_back(RawAppendPagesPerS(work, 8192, pages));
    mem.push_back(PutLoad("", sessions, pages));
    std::string d = work + "/data-" + std::to_string(r);
    disk.push_back(PutLoad(d, sessions, pages));
    std::filesystem::remove_all(d);
  }
  std::filesystem::remove_all(work);
  double load_after[3] = {0, 0, 0};
  ::getloadavg(load_after, 3);
  auto by_rate = [](std::vector<PutRun> v) {
    std::sort(v.begin(), v.end(), [](const PutRun& a, const PutRun& b) { return a.pages_per_s < b.pages_per_s; });
    return v;
  };
  std::vector<PutRun> ms = by_rate(mem), ds = by_rate(disk);
  PutRun m = ms[ms.size() / 2], d = ds[ds.size() / 2];
  std::sort(raw.begin(), raw.end());
  std::sort(raw_big.begin(), raw_big.end());
  double raw_rate = raw[raw.size() / 2], big_rate = raw_big[raw_big.size() / 2];
  std::printf("load average %.1f before, %.1f after (1 min; %ld CPUs)\n", load_before[0], load_after[0],
              ::sysconf(_SC_NPROCESSORS_ONLN));
  std::printf("medians of %d rounds [min - max]\n", rounds);
  std::printf("disk %s: raw 4 KiB pwrite+fdatasync  p50 %.0f us, mean %.0f us, %.0f syncs/s\n", dir.c_str(), f.p50_us,
              f.mean_us, f.per_s);
  std::printf("disk: fresh pages appended, fdatasync per 512    %10.0f pages/s [%.0f - %.0f]  (the floor for durable PUTs)\n",
              raw_rate, raw.front(), raw.back());
  std::printf("disk: fresh pages appended, fdatasync per 8192   %10.0f pages/s [%.0f - %.0f]  (the disk's ceiling for big commits)\n",
              big_rate, raw_big.front(), raw_big.back());
  std::printf("PUT, memory only (no --data-dir)    %10.0f pages/s [%.0f - %.0f]  (%d sessions, %llu pages)\n",
              m.pages_per_s, ms.front().pages_per_s, ms.back().pages_per_s, sessions,
              static_cast<unsigned long long>(m.pages));
  std::printf("PUT, --data-dir, durable acks (group commit) %10.0f pages/s [%.0f - %.0f]  (%llu group commits, %.0f pages each)\n",
              d.pages_per_s, ds.front().pages_per_s, ds.back().pages_per_s, static_cast<unsigned long long>(d.commits),
              d.commits ? static_cast<double>(d.pages) / d.commits : 0.0);
  std::printf("durable / memory only: %.0f%%; durable / disk floor (512): %.0f%%\n", 100 * d.pages_per_s / m.pages_per_s,
              100 * d.pages_per_s / raw_rate);
  std::printf("target >= 300000 pages/s durable: %s\n", d.pages_per_s >= 300000 ? "met" : "NOT met");
  if (!json_path.empty()) {
    nlohmann::json j = {{"dir", dir},
                        {"sessions", sessions},
                        {"rounds", rounds},
                        {"loadavg_before", load_before[0]},
                        {"loadavg_after", load_after[0]},
                        {"fdatasync_p50_us", f.p50_us},
                        {"fdatasync_per_s", f.per_s},
                        {"raw_append_pages_per_s", raw_rate},
                        {"raw_append_8192_pages_per_s", big_rate},
                        {"put_memory_pages_per_s", m.pages_per_s},
                        {"put_memory_min", ms.front().pages_per_s},
                        {"put_memory_max", ms.back().pages_per_s},
                        {"put_durable_pages_per_s", d.pages_per_s},
                        {"put_durable_min", ds.front().pages_per_s},
                        {"put_durable_max", ds.back().pages_per_s},
                        {"group_commits", d.commits},
                        {"target_met", d.pages_per_s >= 300000}};
    std::FILE* out = std::fopen(json_path.c_str(), "w");
    if (out) {
      std::fputs(j.dump(2).c_str(), out);
      std::fclose(out);
    }
  }
  return 0;
}
