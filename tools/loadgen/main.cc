// agile-loadgen: a closed-loop GET/SET load against one redis server that
// records throughput and latency every --interval-ms as CSV
// (t_ms,ops,ops_per_s,p50_us,p99_us,errors).
//
// Built to watch a server being live-migrated: a stalled or unreachable
// server shows up as intervals with zero ops (never a crash), connections
// that break are re-established (bounded back-off), and the run ends at
// --duration whatever the server does. A JSON summary goes to stdout.
#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/time.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <iostream>
#include <thread>
#include <vector>

#include "loadgen.h"

using namespace agile::loadgen;
using Clock = std::chrono::steady_clock;

namespace {

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop = true; }

struct Config {
  std::string server, out, key_prefix = "key:";
  int connections = 4, pipeline = 1, get_pct = 90, interval_ms = 100;
  uint64_t keys = 100000, value_bytes = 100, seed = 1;
  double duration_s = 10;
  int connect_timeout_ms = 500, io_timeout_ms = 2000, reconnect_ms = 100;
};

struct Totals {
  std::atomic<uint64_t> ops{0}, errors{0}, reconnects{0}, connect_failures{0};
};

timeval Tv(int64_t ms) {
  ms = std::max<int64_t>(ms, 1);
  return timeval{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
}

int64_t MsUntil(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t - Clock::now()).count();
}

uint64_t NsSince(Clock::time_point t0) {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
}

void Worker(int id, const Config& cfg, const HostPort& hp, Clock::time_point t0, Clock::time_point deadline,
            IntervalAccounting* acc, Totals* totals) {
  OpMix mix(cfg.keys, cfg.get_pct, cfg.seed * 7919 + static_cast<uint64_t>(id), cfg.key_prefix);
  const std::string value = MakeValue(cfg.value_bytes, cfg.seed + static_cast<uint64_t>(id));
  redisContext* c = nullptr;
  bool connected_once = false;
  while (!g_stop && Clock::now() < deadline) {
    if (c == nullptr) {
      int64_t left = MsUntil(deadline);
      c = redisConnectWithTimeout(hp.host.c_str(), hp.port, Tv(std::min<int64_t>(cfg.connect_timeout_ms, left)));
      if (c == nullptr || c->err) {
        if (c) redisFree(c);
        c = nullptr;
        ++totals->connect_failures;
        ++totals->errors;
        acc->Record(NsSince(t0), 0, 0, 1);
        int64_t nap = std::min<int64_t>(cfg.reconnect_ms, MsUntil(deadline));
        if (nap > 0) std::this_thread::sleep_for(std::chrono::milliseconds(nap));
        continue;
      }
      if (connected_once) ++totals->reconnects;
      connected_once = true;
    }
    // Never block much past the end of the run.
    redisSetTimeout(c, Tv(std::min<int64_t>(cfg.io_timeout_ms, MsUntil(deadline) + 50)));
    for (int i = 0; i < cfg.pipeline; ++i) {
      auto op = mix.Next();
      if (op.get)
        redisAppendCommand(c, "GET %b", op.key.data(), op.key.size());
      else
        redisAppendCommand(c, "SET %b %b", op.key.data(), op.key.size(), value.data(), value.size());
    }
    auto sent = Clock::now();
    uint64_t ok = 0, failed = 0;
    bool broken = false;
    for (int i = 0; i < cfg.pipeline; ++i) {
      void* r = nullptr;
      if (redisGetReply(c, &r) != REDIS_OK || r == nullptr) {
        broken = true;
        break;
      }
      auto* reply = static_cast<redisReply*>(r);
      (reply->type == REDIS_REPLY_ERROR ? failed : ok)++;
      freeReplyObject(reply);
    }
    auto done = Clock::now();
    if (broken) {
      redisFree(c);
      c = nullptr;
      // A batch cut off by the end of the run is not an error of the server.
      if (done < deadline && !g_stop) failed += static_cast<uint64_t>(cfg.pipeline) - ok - failed;
    }
    uint64_t lat_us = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(done - sent).count());
    acc->Record(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(done - t0).count()), ok,
                lat_us, failed);
    totals->ops += ok;
    totals->errors += failed;
    if (broken && Clock::now() < deadline) {
      int64_t nap = std::min<int64_t>(cfg.reconnect_ms, MsUntil(deadline));
      if (nap > 0) std::this_thread::sleep_for(std::chrono::milliseconds(nap));
    }
  }
  if (c) redisFree(c);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"agile-loadgen: GET/SET load against redis, throughput and latency every interval as CSV "
               "(t_ms,ops,ops_per_s,p50_us,p99_us,errors). Keys are <key-prefix><i>, i uniform in [0, keys): "
               "the guest's redis.keys preload makes them. Summary JSON on stdout."};
  Config cfg;
  app.add_option("--server", cfg.server, "redis HOST:PORT")->required();
  app.add_option("--connections", cfg.connections, "Connections, one thread each")->check(CLI::Range(1, 1024))->capture_default_str();
  app.add_option("--pipeline", cfg.pipeline, "Commands in flight per connection")->check(CLI::Range(1, 10000))->capture_default_str();
  app.add_option("--keys", cfg.keys, "Key space size")->check(CLI::Range(uint64_t{1}, uint64_t{1} << 40))->capture_default_str();
  app.add_option("--value-bytes", cfg.value_bytes, "SET value size")->check(CLI::Range(uint64_t{1}, uint64_t{512} << 20))->capture_default_str();
  app.add_option("--get-pct", cfg.get_pct, "Percentage of GETs (rest are SETs)")->check(CLI::Range(0, 100))->capture_default_str();
  app.add_option("--duration", cfg.duration_s, "Run time, seconds")->check(CLI::Range(0.1, 86400.0))->capture_default_str();
  app.add_option("--interval-ms", cfg.interval_ms, "CSV row every this many ms")->check(CLI::Range(1, 3600000))->capture_default_str();
  app.add_option("--out", cfg.out, "CSV file ('-' = stdout)")->required();
  app.add_option("--seed", cfg.seed, "RNG seed")->capture_default_str();
  app.add_option("--key-prefix", cfg.key_prefix, "Key prefix")->capture_default_str();
  app.add_option("--connect-timeout-ms", cfg.connect_timeout_ms, "Connect timeout")->check(CLI::Range(1, 600000))->capture_default_str();
  app.add_option("--io-timeout-ms", cfg.io_timeout_ms, "A reply slower than this drops the connection (reconnect)")
      ->check(CLI::Range(1, 600000))->capture_default_str();
  app.add_option("--reconnect-ms", cfg.reconnect_ms, "Pause before reconnecting")->check(CLI::Range(0, 60000))->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  std::string err;
  auto hp = ParseHostPort(cfg.server, &err);
  if (!hp) {
    std::cerr << "agile-loadgen: --server: " << err << "\n";
    return 2;
  }
  std::ofstream file;
  std::ostream* out = &std::cout;
  if (cfg.out != "-") {
    file.open(cfg.out, std::ios::out | std::ios::trunc);
    if (!file) {
      std::cerr << "agile-loadgen: cannot write " << cfg.out << "\n";
      return 2;
    }
    out = &file;
  }
  // A server that goes away must be an error value, not a SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  const uint64_t interval_ns = static_cast<uint64_t>(cfg.interval_ms) * 1000000;
  IntervalAccounting acc(interval_ns, std::min<uint64_t>(interval_ns / 2, 50000000));
  CsvWriter csv(*out);
  Totals totals;
  uint64_t rows = 0, zero_rows = 0, max_zero_run = 0, zero_run = 0;
  auto write = [&](const std::vector<IntervalRow>& rs) {
    for (const auto& r : rs) {
      csv.Write(r);
      ++rows;
      if (r.ops == 0) {
        ++zero_rows;
        max_zero_run = std::max(max_zero_run, ++zero_run);
      } else {
        zero_run = 0;
      }
    }
  };

  const auto t0 = Clock::now();
  const auto duration = std::chrono::nanoseconds(static_cast<int64_t>(cfg.duration_s * 1e9));
  const auto deadline = t0 + duration;
  std::vector<std::thread> workers;
  for (int i = 0; i < cfg.connections; ++i)
    workers.emplace_back(Worker, i, std::cref(cfg), std::cref(*hp), t0, deadline, &acc, &totals);

  auto next = t0 + std::chrono::nanoseconds(interval_ns);
  while (!g_stop && Clock::now() < deadline) {
    std::this_thread::sleep_until(std::min(next, deadline));
    write(acc.Flush(NsSince(t0)));
    next += std::chrono::nanoseconds(interval_ns);
  }
  for (auto& w : workers) w.join();
  uint64_t end_ns = g_stop ? std::min<uint64_t>(NsSince(t0), static_cast<uint64_t>(duration.count()))
                           : static_cast<uint64_t>(duration.count());
  write(acc.Finish(end_ns));

  double secs = static_cast<double>(end_ns) / 1e9;
  nlohmann::json summary = {
      {"server", cfg.server},
      {"duration_s", secs},
      {"connections", cfg.connections},
      {"pipeline", cfg.pipeline},
      {"get_pct", cfg.get_pct},
      {"ops", totals.ops.load()},
      {"ops_per_s", secs > 0 ? static_cast<double>(totals.ops.load()) / secs : 0.0},
      {"errors", totals.errors.load()},
      {"reconnects", totals.reconnects.load()},
      {"connect_failures", totals.connect_failures.load()},
      {"intervals", rows},
      {"zero_intervals", zero_rows},
      {"longest_zero_run_ms", max_zero_run * static_cast<uint64_t>(cfg.interval_ms)},
      {"p50_us", acc.Total().Percentile(0.50)},
      {"p99_us", acc.Total().Percentile(0.99)},
      {"late_records", acc.late_records()},
      {"interrupted", g_stop.load()},
      {"csv", cfg.out},
  };
  (cfg.out == "-" ? std::cerr : std::cout) << summary.dump() << std::endl;
  return 0;
}
