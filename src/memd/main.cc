// agile-memd: the per-VM swap store server. Parses flags, opens the store,
// serves until SIGTERM or SIGINT, then closes connections and syncs.
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "base/size.h"
#include "base/socket.h"
#include "metrics/metrics.h"
#include "service/service.h"
#include "store/memd_server.h"
#include "store/page_store.h"

namespace {

int Fail(const agile::Status& st) {
  spdlog::critical("{}", st.ToString());
  return 1;
}

// --metrics-listen: the store's namespaces, pages and bytes; requests, pages
// and errors by kind; request latency by op.
void CollectMetrics(agile::metrics::Scrape* s, agile::memd::PageStore* store, const agile::memd::MemdServer* server) {
  using agile::memd::MsgType;
  using agile::memd::ServerCounters;
  auto st = store->Stats();
  s->Gauge("agile_memd_namespaces", "VM namespaces in the store", {}, static_cast<double>(st.vms.size()));
  s->Gauge("agile_memd_pages", "Pages stored", {}, static_cast<double>(st.pages));
  s->Gauge("agile_memd_stored_bytes", "Page data stored", {}, static_cast<double>(st.pages) * 4096);
  s->Gauge("agile_memd_capacity_bytes", "--capacity", {}, static_cast<double>(st.capacity_pages) * 4096);
  for (const auto& v : st.vms)
    s->Gauge("agile_memd_namespace_pages", "Pages stored per VM namespace", {{"namespace", v.vm}, {"owner", v.owner}},
             static_cast<double>(v.pages));
  const ServerCounters& c = server->counters();
  std::vector<double> bounds_s;
  for (double us : ServerCounters::kLatencyBoundsUs) bounds_s.push_back(us / 1e6);
  for (uint16_t t = 1; t < c.requests.size(); ++t) {
    const std::string op = agile::memd::MsgTypeName(static_cast<MsgType>(t));
    s->Counter("agile_memd_requests_total", "Requests handled, by op", {{"op", op}},
               static_cast<double>(c.requests[t].load()));
    std::vector<uint64_t> counts;
    for (const auto& b : c.latency[t].buckets) counts.push_back(b.load(std::memory_order_relaxed));
    s->Histogram("agile_memd_request_duration_seconds", "Time to handle a request (not the network), by op",
                 {{"op", op}}, bounds_s, counts, static_cast<double>(c.latency[t].sum_ns.load()) / 1e9);
  }
  const std::pair<const char*, uint64_t> pages[] = {{"put", c.pages_put.load()},
                                                    {"got", c.pages_got.load()},
                                                    {"absent", c.pages_absent.load()},
                                                    {"deleted", c.pages_deleted.load()}};
  for (const auto& [op, n] : pages)
    s->Counter("agile_memd_pages_total", "Pages by op (absent: asked for but not stored)", {{"op", op}},
               static_cast<double>(n));
  s->Counter("agile_memd_received_bytes_total", "Page data received (PUT)", {}, static_cast<double>(c.pages_put.load()) * 4096);
  s->Counter("agile_memd_sent_bytes_total", "Page data sent (GET)", {}, static_cast<double>(c.pages_got.load()) * 4096);
  const std::pair<const char*, uint64_t> errors[] = {{"permission_denied", c.permission_denied.load()},
                                                     {"store_full", c.store_full.load()},
                                                     {"protocol", c.protocol_errors.load()},
                                                     {"other", c.errors.load() - std::min(c.errors.load(),
                                                                c.permission_denied.load() + c.store_full.load())}};
  for (const auto& [kind, n] : errors)
    s->Counter("agile_memd_errors_total", "Error responses and protocol errors, by kind", {{"kind", kind}},
               static_cast<double>(n));
  s->Counter("agile_memd_connections_total", "Connections accepted", {}, static_cast<double>(c.connections.load()));
  s->Gauge("agile_memd_connections", "Connections open", {}, static_cast<double>(c.connections_open.load()));
  s->Counter("agile_memd_connections_refused_total", "Connections closed at accept: --max-connections were open", {},
             static_cast<double>(c.connections_refused.load()));
}

}  // namespace

int main(int argc, char** argv) {
  using namespace agile;
  CLI::App app{
      "agile-memd: network swap store for agile live migration.\n"
      "Holds the cold pages of VMs, keyed by (vm, page index). Each VM's pages belong to one host,\n"
      "proven by a token that CLAIM returns and TRANSFER hands over at migration."};
  std::string listen;
  std::string capacity = "1G";
  std::string data_dir;
  std::string fsync = "periodic";
  int fsync_interval_ms = 1000;
  int busy_poll_us = 50;
  std::string log_level = "info";
  std::string tls_dir;
  bool insecure = false;
  memd::MemdServerOptions server_opts;
  app.set_version_flag("--version", std::string("agile-memd ") + service::Version());
  app.set_config("--config", "/etc/agile/agile-memd.conf",
                 "TOML file of flag = value lines, same names as the flags (a missing default file is fine,\n"
                 "a missing given one is an error)");
  app.add_option("--listen", listen, "address to serve on, HOST:PORT (port 0 picks a free port)")->required();
  app.add_option("--capacity", capacity, "most page data to hold, e.g. 512M, 4G (default 1G)");
  app.add_option("--data-dir", data_dir,
                 "keep pages in files here so they survive a restart (default: memory only)");
  app.add_option("--fsync", fsync,
                 "with --data-dir: 'periodic' syncs every --fsync-interval-ms (acknowledged pages survive an\n"
                 "agile-memd crash at once, a power loss after the next sync); 'always' syncs before every reply")
      ->check(CLI::IsMember({"periodic", "always"}));
  app.add_option("--fsync-interval-ms", fsync_interval_ms, "period of syncs in 'periodic' mode (default 1000)")
      ->check(CLI::Range(10, 3600 * 1000));
  app.add_option("--busy-poll-us", busy_poll_us,
                 "after each answer, poll a connection this long before sleeping: cuts refault latency\n"
                 "where waking a thread is slow (VMs), at up to this much CPU per request; 0 = off (default 50)")
      ->check(CLI::Range(0, 10000));
  std::string metrics_listen;
  app.add_option("--metrics-listen", metrics_listen,
                 "serve Prometheus metrics on http://HOST:PORT/metrics (store, requests, latency)");
  app.add_option("--tls-dir", tls_dir,
                 "require mutual TLS with the credentials in DIR (ca-cert.pem, server-cert.pem, server-key.pem,\n"
                 "client-cert.pem, client-key.pem; scripts/agile-pki; env AGILE_TLS_DIR): a client is then the\n"
                 "host its certificate names");
  app.add_option("--max-connections", server_opts.max_connections,
                 "close connections accepted while this many are open (one thread each; default 256)")
      ->check(CLI::Range(1, 65536));
  app.add_flag("--insecure", insecure,
               "allow --listen off loopback without --tls-dir: clients are whoever they say (a warning per connection)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error (default info)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  app.footer("Exit status: 0 after SIGTERM or SIGINT (pages synced), 1 when it cannot start, 2 on a bad command\n"
             "line or config file. Under systemd (Type=notify): READY=1 once listening, STATUS=, WATCHDOG=1.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }

  // Logs go to stderr (under journald with syslog priorities and no
  // timestamps): stdout carries only the "listening on" line that scripts and
  // tests wait for.
  service::SetupLogging("agile-memd", spdlog::level::from_str(log_level));
  service::Notifier notifier;

  auto cap = ParseSize(capacity);
  if (!cap.ok()) return Fail(cap.status().Annotate("--capacity"));
  auto addr = ParseHostPort(listen);
  if (!addr.ok()) return Fail(addr.status().Annotate("--listen"));
  tls_dir = tls::DirFromFlagOrEnv(tls_dir);
  if (!tls_dir.empty()) {
    auto creds = tls::Credentials::Load(tls_dir);
    if (!creds.ok()) return Fail(creds.status().Annotate("--tls-dir"));
    server_opts.tls = *creds;
  }
  if (Status st = tls::CheckListenPolicy("--listen", *addr, server_opts.tls != nullptr, insecure); !st.ok())
    return Fail(st);
  server_opts.warn_insecure = !server_opts.tls && insecure;

  // Block the stop signals before any thread starts, so all threads inherit
  // the mask and only sigwait() below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);  // sends use MSG_NOSIGNAL; this covers anything else

  memd::PageStore::Options opts;
  opts.capacity_bytes = *cap;
  opts.data_dir = data_dir;
  opts.sync_each_write = fsync == "always";
  opts.sync_interval = std::chrono::milliseconds(fsync_interval_ms);
  auto store = memd::PageStore::Open(opts);
  if (!store.ok()) return Fail(store.status().Annotate("open store"));
  server_opts.busy_poll = std::chrono::microseconds(busy_poll_us);
  auto server = memd::MemdServer::Start(store->get(), *addr, server_opts);
  if (!server.ok()) return Fail(server.status().Annotate("start server"));

  spdlog::info("capacity {}, {}", FormatSize(opts.capacity_bytes),
               data_dir.empty() ? std::string("memory only (pages are lost on exit)")
                                : "data in " + data_dir + ", fsync " + fsync);
  if (server_opts.tls) spdlog::info("mutual TLS required (credentials from {})", tls_dir);
  std::printf("agile-memd: listening on %s\n", (*server)->address().ToString().c_str());
  std::fflush(stdout);

  std::unique_ptr<metrics::Endpoint> metrics_endpoint;
  if (!metrics_listen.empty()) {
    auto e = metrics::Endpoint::Start(metrics_listen, [&](metrics::Scrape* s) {
      CollectMetrics(s, store->get(), server->get());
    });
    if (!e.ok()) return Fail(e.status().Annotate("--metrics-listen"));
    metrics_endpoint = std::move(e).value();
    spdlog::info("metrics on http://{}/metrics", metrics_listen);
  }

  notifier.Ready("serving on " + (*server)->address().ToString());

  // Waits for a stop signal, pinging systemd's watchdog meanwhile.
  int sig = 0;
  const timespec tick{0, 250 * 1000 * 1000};
  while ((sig = sigtimedwait(&stop_signals, nullptr, &tick)) <= 0) notifier.Tick();
  spdlog::info("received {}, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  notifier.Stopping("syncing and stopping");
  metrics_endpoint.reset();
  (*server)->Stop();
  server->reset();
  store->reset();  // final sync
  spdlog::info("stopped cleanly");
  return 0;
}
