// agiled: one per host. Owns the guest memory of the VMs it runs and serves
// the control API (agilectl) on STATE_DIR/agiled.sock.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <filesystem>
#include <iostream>

#include "agiled/api.h"
#include "agiled/metrics.h"
#include "agiled/reload.h"
#include "control/control_server.h"
#include "host/vm_manager.h"
#include "migrate/receiver.h"
#include "offload/store_url.h"
#include "base/size.h"
#include "base/socket.h"
#include "service/service.h"

namespace fs = std::filesystem;
using namespace agile;

namespace {

std::string ExeDir() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? "." : p.parent_path().string();
}

// The guest image beside the binary: build/guest in a build tree,
// PREFIX/share/agile/guest once installed.
std::string DefaultGuestDir() {
  std::string build_tree = ExeDir() + "/../guest";
  std::string installed = ExeDir() + "/../share/agile/guest";
  return fs::exists(build_tree) || !fs::exists(installed) ? build_tree : installed;
}

// PREFIX/lib/libagile-shim.so in both a build tree and an install; Debian's
// multiarch libdir as a fallback for installs with CMAKE_INSTALL_LIBDIR set so.
std::string DefaultShimPath() {
  std::string lib = ExeDir() + "/../lib/libagile-shim.so";
  std::string agile_lib = ExeDir() + "/../lib/agile/libagile-shim.so";
  return fs::exists(lib) || !fs::exists(agile_lib) ? lib : agile_lib;
}

int Fail(const std::string& msg) {
  std::cerr << "agiled: " << msg << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"agiled - the agile host daemon: runs QEMU VMs whose guest memory it owns, and serves the "
               "control API used by agilectl."};
  host::HostConfig cfg;
  cfg.state_dir = "/run/agile";
  std::string listen, log_level = "info", guest_dir = DefaultGuestDir();
  cfg.shim_path = DefaultShimPath();
  bool daemonize = false, keep_vms_on_exit = false;
  app.set_version_flag("--version", std::string("agiled ") + service::Version());
  // Every flag may also be set in the config file under its long name
  // (state-dir = "/run/agile"); flags on the command line win.
  app.set_config("--config", "/etc/agile/agiled.conf",
                 "TOML file of flag = value lines (a missing default file is fine, a missing given one is an error)");
  app.add_option("--state-dir", cfg.state_dir, "Folder for the control socket, logs and per-VM files")
      ->capture_default_str();
  app.add_option("--id", cfg.id, "Name of this agiled, unique on the machine (default: the state dir's name)");
  app.add_option("--listen", listen, "Also serve the control API on TCP HOST:PORT (for peers and remote agilectl)");
  std::string tls_dir, allow;
  app.add_option("--tls-dir", tls_dir,
                 "Mutual TLS on every TCP link (control, migration, agile-memd) with the credentials in DIR "
                 "(ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem, client-key.pem; scripts/agile-pki; "
                 "env AGILE_TLS_DIR). This host's id is then its certificate's name");
  app.add_option("--allow", allow,
                 "With --tls-dir: comma-separated certificate names allowed to use the TCP port (control and "
                 "incoming migrations); default: any certificate the CA signed");
  app.add_flag("--insecure", cfg.insecure,
               "Allow --listen off loopback without --tls-dir: no authentication at all (a warning is logged for "
               "every connection)");
  app.add_option("--qemu", cfg.qemu_binary, "QEMU binary")->capture_default_str();
  app.add_option("--qemu-sandbox", cfg.qemu_sandbox, "QEMU's seccomp -sandbox (docs/security.md)")->capture_default_str();
  app.add_option("--qemu-runas", cfg.qemu_run_as, "Unprivileged user QEMU drops to after start-up (-runas)");
  app.add_option("--shim", cfg.shim_path, "libagile-shim.so to preload into QEMU")->capture_default_str();
  app.add_option("--guest-dir", guest_dir, "Folder with the guest vmlinuz and initrd.img")->capture_default_str();
  std::string memd_flag, store_flag;
  app.add_option("--store", store_flag,
                 "Swap store for cold pages: memd://HOST:PORT (agile-memd) or "
                 "redis-cluster://HOST:PORT[,HOST:PORT...][?user=U&password-file=F&replicas=N&wait-ms=M] "
                 "(docs/redis-store.md)");
  app.add_option("--memd", memd_flag, "Same as --store memd://HOST:PORT")->excludes("--store");
  app.add_option("--prefetch", cfg.prefetch_pages, "Pages fetched per refault (the faulting one and those after it)")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  std::string host_budget;
  host::PolicyOptions popts;
  app.add_option("--host-budget", host_budget,
                 "Memory for all VMs' resident guest RAM, e.g. 2G: above it (or under PSI pressure) cold pages are "
                 "offloaded in advance to the --store, keeping each VM near its working set + margin");
  app.add_option("--psi-threshold", popts.psi_threshold_pct,
                 "PSI memory 'some avg10' (%) that also counts as pressure")
      ->capture_default_str();
  app.add_option("--policy-interval-ms", popts.interval_ms, "How often the offload policy looks")->capture_default_str();
  app.add_option("--tracking-cpu", cfg.tracking_cpu_pct, "Working-set tracking budget per VM, % of one core")
      ->capture_default_str();
  std::string metrics_listen;
  app.add_option("--metrics-listen", metrics_listen,
                 "Serve Prometheus metrics on http://HOST:PORT/metrics (VMs, faults, migrations, pressure)");
  // Every network wait is bounded; docs/timeouts.md has the table (what
  // waits, the default, what happens at expiry).
  Timeouts& t = cfg.timeouts;
  const auto ms = CLI::Range(100, 3600 * 1000);
  app.add_option("--memd-connect-timeout-ms", t.memd_connect_ms, "agile-memd: connect and HELLO of one dial")
      ->capture_default_str()->check(ms);
  app.add_option("--memd-timeout-ms", t.memd_request_ms,
                 "agile-memd: a request seeing no byte move for this long drops the connection (faulting vCPUs retry, "
                 "the VM shows degraded)")
      ->capture_default_str()->check(ms);
  app.add_option("--migrate-io-timeout-ms", t.migrate_io_ms,
                 "Migration link: a read or write moving no byte for this long fails the migration (before the "
                 "commit point the source resumes); also TCP_USER_TIMEOUT")
      ->capture_default_str()->check(ms);
  app.add_option("--migrate-peer-timeout-ms", t.migrate_peer_ms,
                 "Migration: wait for the peer's HELLO_ACK (it starts QEMU), SWITCHOVER_ACK, DONE_ACK; the "
                 "destination's limit on a silent source")
      ->capture_default_str()->check(ms);
  app.add_option("--migrate-recover-window-ms", t.migrate_recover_ms,
                 "Post-copy recovery: how long both sides keep a migration whose link broke after switchover "
                 "(vCPUs on pages still at the source wait) for `agilectl migrate --recover` or the source's own "
                 "reconnects; at expiry the migration fails and nothing is freed on either side")
      ->capture_default_str()->check(CLI::Range(1000, 24 * 3600 * 1000));
  app.add_option("--device-state-timeout-ms", t.device_state_ms, "Migration: QEMU's device-state transfer")
      ->capture_default_str()->check(ms);
  app.add_option("--qmp-timeout-ms", t.qmp_ms, "One QMP command to QEMU")->capture_default_str()->check(ms);
  app.add_option("--keepalive-idle-s", t.keepalive_idle_s, "TCP keepalive: first probe after this idle time")
      ->capture_default_str()->check(CLI::Range(1, 3600));
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")->capture_default_str();
  app.add_flag("--keep-vms-on-exit", keep_vms_on_exit,
               "On SIGTERM/SIGINT exit without stopping VMs: they keep running and the next agiled with this "
               "--state-dir re-adopts them (systemctl restart, upgrades). `agilectl host shutdown` still stops them");
  app.add_flag("--daemon", daemonize,
               "Run in the background once ready; log to STATE_DIR/agiled.log (not under systemd: the unit "
               "runs agiled in the foreground and systemd is told when it is ready)");
  app.footer("Exit status: 0 after a clean stop (SIGTERM, SIGINT, agilectl host shutdown), 1 when it cannot "
             "start, 2 on a bad command line or config file.\n"
             "Restarts: agiled may be killed (even kill -9) or restarted at any time: the VMs keep running, "
             "faulting vCPUs wait, and the next agiled with the same --state-dir re-adopts every VM (a VM whose "
             "QEMU ended meanwhile is listed as 'lost'). SIGHUP re-reads the config file for log-level, "
             "host-budget, psi-threshold and policy-interval-ms and never stops a VM.\n"
             "Under systemd (Type=notify) agiled reports READY=1 once its control socket listens, STATUS= "
             "lines, and WATCHDOG=1 pings when WatchdogSec= is set; its log lines then carry syslog "
             "priorities (<3>, <6>, ...) and no timestamps.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }

  auto level = spdlog::level::from_str(log_level);
  if (level == spdlog::level::off && log_level != "off") return Fail("unknown --log-level '" + log_level + "'");
  service::SetupLogging("agiled", level);
  service::Notifier notifier;
  if (geteuid() != 0) return Fail("must run as root (userfaultfd on another process's memory, /dev/shm, cgroups)");

  std::error_code ec;
  cfg.state_dir = fs::absolute(cfg.state_dir).lexically_normal().string();
  if (!host_budget.empty()) {
    auto b = ParseSize(host_budget);
    if (!b.ok()) return Fail("--host-budget: " + b.status().message());
    popts.host_budget = *b;
  }
  if (!memd_flag.empty() && !ParseHostPort(memd_flag).ok())
    return Fail("--memd: expected HOST:PORT, got '" + memd_flag + "'");
  if (!memd_flag.empty() || !store_flag.empty()) {
    auto url = offload::ParseStoreUrl(!store_flag.empty() ? store_flag : memd_flag);
    if (!url.ok()) return Fail(url.status().message());
    cfg.memd_addr = url->canonical;
  }
  if (!host_budget.empty() && cfg.memd_addr.empty())
    return Fail("--host-budget needs --store or --memd (where cold pages go)");
  if (cfg.state_dir.size() > 80) return Fail("--state-dir path too long for unix sockets (max 80 chars)");
  fs::create_directories(cfg.state_dir + "/vms", ec);
  if (ec) return Fail("cannot create " + cfg.state_dir + ": " + ec.message());
  tls_dir = tls::DirFromFlagOrEnv(tls_dir);
  if (!tls_dir.empty()) {
    auto creds = tls::Credentials::Load(tls_dir);
    if (!creds.ok()) return Fail("--tls-dir: " + creds.status().ToString());
    cfg.tls = *creds;
    // One identity per host: what its certificate says, to peers and to agile-memd.
    if (!cfg.id.empty() && cfg.id != cfg.tls->identity())
      return Fail("--id '" + cfg.id + "' differs from the name in " + tls_dir + "/server-cert.pem ('" +
                  cfg.tls->identity() + "')");
    cfg.id = cfg.tls->identity();
  }
  cfg.allow = tls::SplitList(allow);
  if (!cfg.allow.empty() && !cfg.tls) return Fail("--allow needs --tls-dir (names come from certificates)");
  if (cfg.id.empty()) cfg.id = fs::path(cfg.state_dir).filename().string();
  cfg.shm_root = "/dev/shm/agile/" + cfg.id;
  cfg.kernel = guest_dir + "/vmlinuz";
  cfg.initrd = guest_dir + "/initrd.img";
  for (const auto& f : {cfg.qemu_binary, cfg.shim_path, cfg.kernel, cfg.initrd})
    if (!fs::exists(f)) return Fail("missing " + f + " (build with `make`, or pass --qemu/--shim/--guest-dir)");
  cfg.shim_path = fs::canonical(cfg.shim_path).string();
  cfg.kernel = fs::canonical(cfg.kernel).string();
  cfg.initrd = fs::canonical(cfg.initrd).string();

  // One agiled per id: the lock lives as long as the process.
  fs::create_directories(cfg.shm_root, ec);
  if (ec) return Fail("cannot create " + cfg.shm_root + ": " + ec.message());
  int lock = ::open((cfg.shm_root + "/.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock < 0 || ::flock(lock, LOCK_EX | LOCK_NB) != 0)
    return Fail("another agiled already runs with id '" + cfg.id + "' (use --id or another --state-dir)");

  std::string sock_path = cfg.state_dir + "/agiled.sock";
  auto unix_listen = UnixListen(sock_path);
  if (!unix_listen.ok()) return Fail(unix_listen.status().ToString());
  UniqueFd tcp_listen;
  if (!listen.empty()) {
    auto hp = ParseHostPort(listen);
    if (!hp.ok()) return Fail("--listen: " + hp.status().message());
    if (Status st = tls::CheckListenPolicy("--listen", *hp, cfg.tls != nullptr, cfg.insecure); !st.ok())
      return Fail(st.message());
    auto l = TcpListen(*hp);
    if (!l.ok()) return Fail(l.status().ToString());
    tcp_listen = std::move(l).value();
  }

  if (!metrics_listen.empty() && !ParseHostPort(metrics_listen).ok())
    return Fail("--metrics-listen: expected HOST:PORT, got '" + metrics_listen + "'");

  if (daemonize) {
    if (::daemon(0, 0) != 0) return Fail("daemon(): " + std::string(strerror(errno)));
    auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(cfg.state_dir + "/agiled.log");
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("agiled", file));
    spdlog::set_level(level);
    spdlog::flush_every(std::chrono::seconds(1));
  }

  // Signals are taken synchronously by the main thread; block them in every
  // thread before any is created. SIGPIPE: a vanished client is an error value.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  std::atomic<bool> shutdown{false};
  host::VmManager vms(cfg);
  // VMs a previous agiled of this state dir left running (a crash, a restart,
  // an upgrade): adopted before we serve, so no request races an adoption.
  size_t adopted = vms.AdoptAll();
  size_t listed = vms.List().size();
  if (listed > 0)
    spdlog::info("agiled {}: re-adopted {} VM(s) left running, {} lost", cfg.id, adopted, listed - adopted);
  // Leftover RAM files of no VM we adopted: nothing can use them now.
  for (auto& e : fs::directory_iterator(cfg.shm_root, ec))
    if (e.is_directory() && !vms.Get(e.path().filename().string()).ok()) fs::remove_all(e.path(), ec);
  host::PressurePolicy policy(&vms, popts);
  agiled::Api api(&vms, &policy, [&] { shutdown = true; });
  // Paused post-copy migrations arriving here, by VM; and arrivals dropped
  // before SWITCHOVER, kept in the state dir (a restart must not forget them).
  migrate::RecoveryBoard recovery(cfg.state_dir + "/recovery");
  if (size_t dropped = recovery.LoadDropped([&](const std::string& name) {
        auto vm = vms.Get(name);
        return vm.ok() && (*vm)->state() != "lost";
      }))
    spdlog::info("agiled {}: remembers {} migration(s) whose copy here was dropped before SWITCHOVER", cfg.id, dropped);
  std::string migrate_host = "0.0.0.0";
  if (!listen.empty()) migrate_host = ParseHostPort(listen)->host;
  auto migration_peer = [&](const control::Caller& caller) {
    migrate::MigrationPeer peer;
    peer.identity = caller.identity;
    // Without TLS the listener is loopback (or --insecure, whose peers are nobody in particular).
    peer.may_pass_qemu_args = !caller.identity.empty() || caller.local || !cfg.insecure;
    peer.store_addr = offload::StoreIdentity(cfg.memd_addr);
    if (cfg.tls) peer.tls_dir = cfg.tls->dir();
    peer.timeouts = cfg.timeouts;
    peer.recovery = &recovery;
    return peer;
  };
  // Post-copy migrations the previous agiled was in the middle of, past
  // their commit point (docs/migration.md, "Post-copy recovery"): each side
  // takes its part up again before we serve, so a RESUME finds its receiver.
  struct Joined {  // every exit path, early ones included, ends and joins them
    migrate::RecoveryBoard* board;
    std::vector<std::thread> threads;
    ~Joined() {
      board->Close();  // ends their waits for a RESUME
      for (auto& t : threads) t.join();
    }
  } resumed_incoming{&recovery, {}};
  for (auto& vm : vms.List()) {
    const auto& rec = vm->pending_migration();
    if (!rec) continue;
    if (rec->role == migrate::MigrationRecord::Role::kDestination) {
      resumed_incoming.threads.push_back(
          migrate::ResumeIncomingAfterRestart(vm, *rec, &vms, migration_peer(control::Caller{false, ""})));
    } else if (rec->recover) {
      Status st = api.ResumeMigration(vm, *rec);
      if (!st.ok()) spdlog::error("vm {}: its post-copy to {} not resumed: {}", rec->vm, rec->peer_addr, st.ToString());
    }
  }
  control::ControlServer server(
      [&](const std::string& op, const nlohmann::json& args, const control::Progress& progress,
          const control::Caller& caller) { return api.Handle(op, args, progress, caller); },
      [&](UniqueFd conn, const control::Caller& caller) {
        migrate::ReceiveMigration(std::move(conn), &vms, migrate_host, migration_peer(caller));
      });
  control::ListenerOptions local_opts;
  local_opts.local = true;
  server.Serve(std::move(unix_listen).value(), local_opts);
  if (tcp_listen) {
    control::ListenerOptions tcp_opts;
    tcp_opts.tls = cfg.tls;
    tcp_opts.allow = cfg.allow;
    tcp_opts.warn_insecure = !cfg.tls && cfg.insecure;
    tcp_opts.tcp_user_timeout_ms = cfg.timeouts.migrate_io_ms;
    tcp_opts.keepalive_idle_s = cfg.timeouts.keepalive_idle_s;
    tcp_opts.keepalive_interval_s = cfg.timeouts.keepalive_interval_s;
    server.Serve(std::move(tcp_listen), tcp_opts);
  }
  if (!cfg.memd_addr.empty()) policy.Start();  // offloading needs a store
  std::unique_ptr<metrics::Endpoint> metrics_endpoint;
  if (!metrics_listen.empty()) {
    auto e = metrics::Endpoint::Start(metrics_listen, [&](metrics::Scrape* s) {
      agiled::CollectHostMetrics(s, &vms, &policy);
      api.CollectMetrics(s);
    });
    if (!e.ok()) return Fail(e.status().ToString());
    metrics_endpoint = std::move(e).value();
    spdlog::info("metrics on http://{}/metrics", metrics_listen);
  }
  std::string serving = "control socket " + sock_path +
                        (listen.empty() ? "" : ", tcp " + listen + (cfg.tls ? " (mutual TLS)" : " (plain)"));
  spdlog::info("agiled {} {} ready: {}", cfg.id, service::Version(), serving);
  if (!daemonize) std::cout << "agiled: ready id=" << cfg.id << " socket=" << sock_path << std::endl;
  notifier.Ready("serving " + serving + ", 0 VMs");

  // The main loop vouches for the process to systemd's watchdog and keeps the
  // STATUS line current.
  timespec tick{0, 200 * 1000 * 1000};
  size_t shown_vms = 0;
  while (!shutdown) {
    int sig = sigtimedwait(&set, nullptr, &tick);
    if (sig == SIGHUP) {
      // Reload what can be reloaded; never touches a VM.
      auto r = agiled::ReadReloadable(argc, argv, agiled::Reloadable{});
      if (!r.ok()) {
        spdlog::error("agiled {}: SIGHUP: configuration not reloaded: {}", cfg.id, r.status().ToString());
      } else if (r->host_budget > 0 && cfg.memd_addr.empty()) {
        spdlog::error("agiled {}: SIGHUP: host-budget needs --memd; configuration not reloaded", cfg.id);
      } else {
        auto lvl = spdlog::level::from_str(r->log_level);
        if (lvl == spdlog::level::off && r->log_level != "off") {
          spdlog::error("agiled {}: SIGHUP: unknown log-level '{}'; kept", cfg.id, r->log_level);
        } else {
          spdlog::set_level(lvl);
        }
        policy.Reconfigure(r->host_budget, r->psi_threshold_pct, r->policy_interval_ms);
        spdlog::info("agiled {}: SIGHUP: reloaded log-level={} host-budget={} psi-threshold={} "
                     "policy-interval-ms={} (other settings need a restart, which keeps VMs running)",
                     cfg.id, r->log_level, r->host_budget ? FormatSize(r->host_budget) : "none",
                     r->psi_threshold_pct, r->policy_interval_ms);
      }
      continue;
    }
    if (sig > 0 && keep_vms_on_exit) {
      // The same path as a crash, on purpose: one recovery path, exercised by
      // every restart. Nothing is torn down; the shims reconnect to the next
      // agiled of this state dir.
      size_t n = vms.List().size();
      spdlog::info("agiled {}: {} received, exiting and leaving {} VM(s) running for the next agiled", cfg.id,
                   strsignal(sig), n);
      notifier.Stopping("leaving " + std::to_string(n) + " VMs running");
      spdlog::shutdown();
      ::_exit(0);
    }
    if (sig > 0) {
      spdlog::info("agiled {}: {} received, stopping VMs", cfg.id, strsignal(sig));
      break;
    }
    notifier.Tick();
    size_t n = vms.List().size();
    if (n != shown_vms) {
      notifier.Status("serving " + serving + ", " + std::to_string(n) + (n == 1 ? " VM" : " VMs"));
      shown_vms = n;
    }
  }
  notifier.Stopping("stopping " + std::to_string(vms.List().size()) + " VMs");
  metrics_endpoint.reset();
  // Migrations first: a caller following one (and a post-copy waiting for
  // its lost link, at either end) would otherwise hold the server open.
  api.CancelAll();
  recovery.Close();
  for (auto& t : resumed_incoming.threads) t.join();  // Close ended their waits
  resumed_incoming.threads.clear();
  server.Shutdown();
  policy.Stop();
  vms.StopAll();
  // The socket goes last: `agilectl host shutdown` returns when it is gone, and
  // by then a new agiled of the same id may start.
  fs::remove_all(cfg.shm_root, ec);
  fs::remove(sock_path, ec);
  spdlog::info("agiled {}: stopped", cfg.id);
  return 0;
}
