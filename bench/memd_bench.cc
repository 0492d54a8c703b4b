// memd_bench: throughput of batched PUT/GET and round-trip latency of small
// GETs (a refault: 1 page, or 1 page plus a 7-page prefetch window) against
// agile-memd over loopback TCP. Starts its own server in-process unless
// --memd points at a running one.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/socket.h"
#include "store/memd_client.h"
#include "store/memd_server.h"
#include "store/page_store.h"
#include "wire/frame_stream.h"

namespace {

using namespace agile;
using namespace agile::memd;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct Latency {
  double p50_us = 0, p99_us = 0, mean_us = 0;
};

Latency Summarise(std::vector<double> us) {
  std::sort(us.begin(), us.end());
  Latency l;
  l.p50_us = us[us.size() / 2];
  l.p99_us = us[std::min(us.size() - 1, us.size() * 99 / 100)];
  double sum = 0;
  for (double v : us) sum += v;
  l.mean_us = sum / static_cast<double>(us.size());
  return l;
}

// The floor for a batched GET on this machine, measured beside it: the same
// bytes through a loopback TCP connection with no protocol and no store, a
// thread send()ing 1 MiB at a time from a warm buffer, the receiver
// recv()ing each 1 MiB straight into its place in `dst` (one copy in the
// kernel's send path, one out to the receiver: what any GET over TCP pays).
Result<double> LoopbackFloor(uint8_t* dst, uint64_t n_pages) {
  AGILE_ASSIGN_OR_RETURN(UniqueFd listen, TcpListen(HostPort{"127.0.0.1", 0}));
  AGILE_ASSIGN_OR_RETURN(uint16_t port, BoundPort(listen.get()));
  constexpr size_t kChunk = 1 << 20;
  const size_t total = n_pages * kPageSize;
  std::vector<uint8_t> src(kChunk, 0x5a);
  AGILE_ASSIGN_OR_RETURN(UniqueFd rx, TcpConnect(HostPort{"127.0.0.1", port}));
  AGILE_ASSIGN_OR_RETURN(UniqueFd tx, Accept(listen.get()));
  auto t0 = Clock::now();
  std::thread sender([&] {
    for (size_t done = 0; done < total;) {
      size_t n = std::min(kChunk, total - done);
      if (!wire::SendAll(tx.get(), src.data(), n).ok()) return;
      done += n;
    }
  });
  size_t got = 0;
  while (got < total) {
    ssize_t r = ::recv(rx.get(), dst + got, std::min(kChunk, total - got), MSG_WAITALL);
    if (r <= 0) {
      if (r < 0 && errno == EINTR) continue;
      break;
    }
    got += static_cast<size_t>(r);
  }
  sender.join();
  if (got != total) return Internal("loopback floor: stream ended early");
  return static_cast<double>(n_pages) / Seconds(Clock::now() - t0);
}

double ProcessCpuSeconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int Die(const std::string& what, const Status& st) {
  std::fprintf(stderr, "memd_bench: %s: %s\n", what.c_str(), st.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"memd_bench: agile-memd PUT/GET throughput and small-GET latency over loopback"};
  std::string memd_addr, json_path;
  uint64_t n_pages = 65536;
  int rounds = 5;
  int iters = 20000;
  int client_spin_us = 50, server_spin_us = 50;
  std::string tls_dir;
  bool compare_copy = false;
  app.add_option("--memd", memd_addr, "use a running agile-memd at HOST:PORT (default: start one in-process)");
  app.add_option("--json", json_path, "also write the results as JSON to this file");
  app.add_option("--pages", n_pages, "pages per throughput round (default 65536 = 256 MiB)")->check(CLI::Range(256, 1 << 22));
  app.add_option("--rounds", rounds, "throughput rounds; the median is reported (default 5)")->check(CLI::Range(1, 100));
  app.add_option("--latency-iters", iters, "GETs per latency measurement (default 20000)")->check(CLI::Range(100, 10000000));
  app.add_option("--client-busy-poll-us", client_spin_us, "client busy-poll before sleeping (default 50)");
  app.add_option("--server-busy-poll-us", server_spin_us, "in-process server busy-poll before sleeping (default 50)");
  app.add_option("--tls", tls_dir,
                 "mutual TLS with the credentials in DIR (scripts/agile-pki OUT memd-bench: DIR=OUT/memd-bench),\n"
                 "for the in-process server and the client");
  app.add_flag("--compare-copy", compare_copy,
               "also GET through a second in-process server that copies pages into its replies (the way\n"
               "before sending from the slots), round by round with the first; CPU per page for both");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  std::shared_ptr<const tls::Credentials> creds;
  if (!tls_dir.empty()) {
    auto c = tls::Credentials::Load(tls_dir);
    if (!c.ok()) return Die("--tls", c.status());
    creds = *c;
  }
  std::string host_id = creds ? creds->identity() : "memd-bench";

  std::unique_ptr<PageStore> store;
  std::unique_ptr<MemdServer> server, copy_server;
  if (memd_addr.empty()) {
    PageStore::Options o;
    o.capacity_bytes = (n_pages + 1024) * kPageSize;
    auto s = PageStore::Open(o);
    if (!s.ok()) return Die("open store", s.status());
    store = std::move(s).value();
    MemdServerOptions so;
    so.busy_poll = std::chrono::microseconds(server_spin_us);
    so.tls = creds;
    auto srv = MemdServer::Start(store.get(), HostPort{"127.0.0.1", 0}, so);
    if (!srv.ok()) return Die("start server", srv.status());
    server = std::move(srv).value();
    memd_addr = server->address().ToString();
    if (compare_copy) {
      so.copy_gets = true;
      auto cs = MemdServer::Start(store.get(), HostPort{"127.0.0.1", 0}, so);
      if (!cs.ok()) return Die("start copying server", cs.status());
      copy_server = std::move(cs).value();
    }
  } else if (compare_copy) {
    return Die("--compare-copy", InvalidArgument("needs the in-process server (no --memd)"));
  }
  MemdClientOptions co;
  co.busy_poll = std::chrono::microseconds(client_spin_us);
  co.tls = creds;
  auto client = MemdClient::Connect(memd_addr, host_id, co);
  if (!client.ok()) return Die("connect", client.status());
  MemdClient& c = **client;
  std::unique_ptr<MemdClient> copy_client;
  if (copy_server) {
    auto cc = MemdClient::Connect(copy_server->address().ToString(), host_id, co);
    if (!cc.ok()) return Die("connect to the copying server", cc.status());
    copy_client = std::move(cc).value();
  }
  std::string vm = "memd-bench-" + std::to_string(::getpid());
  auto token = c.Claim(vm);
  if (!token.ok()) return Die("claim", token.status());

  std::mt19937_64 rng(42);
  std::vector<uint8_t> data(n_pages * kPageSize);
  for (size_t i = 0; i < data.size(); i += 8) {
    uint64_t v = rng();
    std::memcpy(&data[i], &v, 8);
  }
  std::vector<PageRef> refs(n_pages);
  std::vector<uint64_t> indexes(n_pages);
  for (uint64_t i = 0; i < n_pages; ++i) {
    indexes[i] = i;
    refs[i] = PageRef{i, &data[i * kPageSize]};
  }
  std::vector<uint8_t> back(n_pages * kPageSize);
  std::vector<uint8_t*> out(n_pages);
  for (uint64_t i = 0; i < n_pages; ++i) out[i] = &back[i * kPageSize];
  std::vector<uint8_t> present(n_pages);

  std::vector<double> put_rates, get_rates, floor_rates, copy_rates, cpu_us, copy_cpu_us, floor_cpu_us;
  // CPU of this whole process (client and server threads) per page GOT: the
  // client's share is the same for both servers, so the difference is theirs.
  auto timed_get = [&](MemdClient& cl, std::vector<double>* rates, std::vector<double>* cpu) -> Status {
    double c0 = ProcessCpuSeconds();
    auto t0 = Clock::now();
    AGILE_RETURN_IF_ERROR(cl.Get(vm, *token, indexes, out, present));
    rates->push_back(static_cast<double>(n_pages) / Seconds(Clock::now() - t0));
    cpu->push_back((ProcessCpuSeconds() - c0) * 1e6 / static_cast<double>(n_pages));
    return Status::Ok();
  };
  for (int r = 0; r < rounds; ++r) {
    // Interleaved with the rounds, so a burst of other work hits both.
    double c0 = ProcessCpuSeconds();
    auto fl = LoopbackFloor(back.data(), n_pages);
    if (!fl.ok()) return Die("loopback floor", fl.status());
    floor_rates.push_back(*fl);
    floor_cpu_us.push_back((ProcessCpuSeconds() - c0) * 1e6 / static_cast<double>(n_pages));
    auto t0 = Clock::now();
    if (Status st = c.Put(vm, *token, refs); !st.ok()) return Die("put", st);
    put_rates.push_back(static_cast<double>(n_pages) / Seconds(Clock::now() - t0));
    // The two servers take turns going first.
    for (int k = 0; k < 2; ++k) {
      if ((k == r % 2) && copy_client) {
        if (Status st = timed_get(*copy_client, &copy_rates, &copy_cpu_us); !st.ok()) return Die("get (copying)", st);
        if (back != data) return Die("get (copying)", Internal("pages read back differ from pages written"));
        std::fill(back.begin(), back.end(), 0);
      } else if (k != r % 2) {
        if (Status st = timed_get(c, &get_rates, &cpu_us); !st.ok()) return Die("get", st);
        if (back != data) return Die("get", Internal("pages read back differ from pages written"));
      }
    }
  }
  if (back != data) {
    std::fprintf(stderr, "memd_bench: pages read back differ from pages written\n");
    return 1;
  }

  // Refault shapes: one page, and one page plus a 7-page prefetch window.
  auto measure = [&](size_t window) -> Result<Latency> {
    std::vector<uint64_t> idx(window);
    std::vector<uint8_t*> o(window);
    std::vector<uint8_t> buf(window * kPageSize), pres(window);
    for (size_t k = 0; k < window; ++k) o[k] = &buf[k * kPageSize];
    std::vector<double> us;
    us.reserve(static_cast<size_t>(iters));
    for (int i = -1000; i < iters; ++i) {  // the first 1000 warm up
      uint64_t first = rng() % (n_pages - window);
      for (size_t k = 0; k < window; ++k) idx[k] = first + k;
      auto t0 = Clock::now();
      AGILE_RETURN_IF_ERROR(c.Get(vm, *token, idx, o, pres));
      if (i >= 0) us.push_back(Seconds(Clock::now() - t0) * 1e6);
    }
    return Summarise(std::move(us));
  };
  auto get1 = measure(1);
  if (!get1.ok()) return Die("get 1 page", get1.status());
  auto get8 = measure(8);
  if (!get8.ok()) return Die("get 8 pages", get8.status());
  (void)c.Release(vm, *token);

  double put_rate = Median(put_rates), get_rate = Median(get_rates);
  auto pass = [](bool ok) { return ok ? "ok" : "MISSED"; };
  std::printf("memd_bench: %s, %llu pages (%.0f MiB) x %d rounds, %d latency samples\n",
              server ? "in-process server on loopback" : memd_addr.c_str(),
              static_cast<unsigned long long>(n_pages), static_cast<double>(n_pages * kPageSize) / (1 << 20),
              rounds, iters);
  std::printf("%-22s %14s %14s %10s  %s\n", "measure", "value", "", "target", "");
  std::printf("%-22s %11.0f p/s %10.0f MiB/s %10s  %s\n", "PUT batched", put_rate,
              put_rate * kPageSize / (1 << 20), ">=500K", pass(put_rate >= 500e3));
  std::printf("%-22s %11.0f p/s %10.0f MiB/s %10s  %s\n", "GET batched", get_rate,
              get_rate * kPageSize / (1 << 20), ">=500K", pass(get_rate >= 500e3));
  {
    auto [glo, ghi] = std::minmax_element(get_rates.begin(), get_rates.end());
    auto [flo, fhi] = std::minmax_element(floor_rates.begin(), floor_rates.end());
    std::printf("%-22s %11.0f p/s   GET rounds %.0f-%.0f K; floor rounds %.0f-%.0f K\n", "floor: TCP loopback",
                Median(floor_rates), *glo / 1e3, *ghi / 1e3, *flo / 1e3, *fhi / 1e3);
    std::printf("%-22s %11.2f us CPU per page GOT (process: client + server); floor %.2f us\n", "GET from slots",
                Median(cpu_us), Median(floor_cpu_us));
  }
  if (!copy_rates.empty()) {
    auto [lo, hi] = std::minmax_element(copy_rates.begin(), copy_rates.end());
    std::printf("%-22s %11.0f p/s   rounds %.0f-%.0f K; %.2f us CPU per page GOT\n", "GET copied (before)",
                Median(copy_rates), *lo / 1e3, *hi / 1e3, Median(copy_cpu_us));
  }
  std::printf("%-22s %9.1f us p50 %9.1f us p99 %7s  %s\n", "GET 1 page", get1->p50_us, get1->p99_us, "p50<=40",
              pass(get1->p50_us <= 40));
  std::printf("%-22s %9.1f us p50 %9.1f us p99 %7s  %s\n", "GET 8 pages", get8->p50_us, get8->p99_us, "p50<=40",
              pass(get8->p50_us <= 40));

  if (!json_path.empty()) {
    auto lat = [](const Latency& l) { return nlohmann::json{{"p50_us", l.p50_us}, {"p99_us", l.p99_us}, {"mean_us", l.mean_us}}; };
    nlohmann::json j = {
        {"bench", "memd_bench"},
        {"server", server ? "in-process" : memd_addr},
        {"tls", creds != nullptr},
        {"pages_per_round", n_pages},
        {"rounds", rounds},
        {"latency_samples", iters},
        {"put_pages_per_s", put_rate},
        {"get_pages_per_s", get_rate},
        {"put_pages_per_s_rounds", put_rates},
        {"get_pages_per_s_rounds", get_rates},
        {"floor_loopback_pages_per_s", Median(floor_rates)},
        {"get_cpu_us_per_page", Median(cpu_us)},
        {"get_copied_pages_per_s_rounds", copy_rates},
        {"get_copied_cpu_us_per_page", copy_rates.empty() ? 0.0 : Median(copy_cpu_us)},
        {"floor_loopback_pages_per_s_rounds", floor_rates},
        {"get_1_page", lat(*get1)},
        {"get_8_pages", lat(*get8)},
        {"targets", {{"pages_per_s", 500000}, {"refault_p50_us", 40}}},
    };
    std::ofstream f(json_path);
    f << j.dump(2) << "\n";
    if (!f) {
      std::fprintf(stderr, "memd_bench: cannot write %s\n", json_path.c_str());
      return 1;
    }
  }
  return 0;
}
