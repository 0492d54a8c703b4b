// agilectl: the command line for agiled. The global flags (--json, -H) go
// anywhere on the line; exit statuses are in exit_codes.h.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <thread>

#include "agile/version.h"
#include "agilectl/exit_codes.h"
#include "control/control_client.h"
#include "base/size.h"
#include "base/socket.h"
#include "qemu/launch.h"

using namespace agile;
using agile::agilectl::Failure;
using agile::agilectl::Origin;
using nlohmann::json;

namespace {

struct Globals {
  std::string host;
  bool json_out = false;
  std::string tls_dir;                          // --tls-dir, or $AGILE_TLS_DIR
  std::shared_ptr<const tls::Credentials> tls;  // loaded from it for a TCP host
};

// Says what failed on stderr (and, with --json, as JSON on stdout); returns the exit status.
int Report(const Globals& g, const Failure& f) {
  int rc = agilectl::ExitCode(f);
  std::cerr << "agilectl: " << f.status.message() << " [" << agilectl::FailureJson(f)["error"]["code"].get<std::string>()
            << ", exit " << rc << "]\n";
  if (g.json_out) std::cout << agilectl::FailureJson(f).dump(2) << "\n";
  return rc;
}

int Usage(const Globals& g, const Status& s) { return Report(g, {Origin::kUsage, s, "", nullptr}); }

// A VM spec file (--spec): the JSON of VmSpec (docs/vms.md), where, as on
// the command line, "memory" may be a size ("1G"), a disk a --disk string and
// a NIC a --nic string, and a relative disk path is taken from the current
// directory.
Result<json> ReadSpecFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound("cannot read " + path);
  json j = json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument(path + " is not a JSON object");
  if (j.contains("memory")) {
    if (!j["memory"].is_string()) return InvalidArgument("\"memory\" must be a size string such as \"1G\"");
    AGILE_ASSIGN_OR_RETURN(uint64_t bytes, ParseSize(j["memory"].get<std::string>()));
    j["memory_bytes"] = bytes;
    j.erase("memory");
  }
  if (j.contains("cpus")) {
    j["vcpus"] = j["cpus"];
    j.erase("cpus");
  }
  if (j.contains("disks") && j["disks"].is_array()) {
    for (auto& d : j["disks"]) {
      if (d.is_string()) {
        AGILE_ASSIGN_OR_RETURN(qemu::DiskSpec ds, qemu::ParseDiskOption(d.get<std::string>()));
        d = ds.ToJson();
      }
      if (d.is_object() && d.contains("path") && d["path"].is_string()) {
        std::string p = d["path"];
        if (!p.empty() && p[0] != '/') d["path"] = std::filesystem::absolute(p).lexically_normal().string();
      }
    }
  }
  if (j.contains("nics") && j["nics"].is_array()) {
    for (auto& n : j["nics"]) {
      if (!n.is_string()) continue;
      AGILE_ASSIGN_OR_RETURN(qemu::NicSpec ns, qemu::ParseNicOption(n.get<std::string>()));
      n = ns.ToJson();
    }
  }
  return j;
}

// One request to agiled. On failure, *failure says whether agiled could not be
// reached or answered with an error (and, for migrations, the last progress).
Result<json> Call(const Globals& g, const std::string& op, const json& args, Failure* failure,
                  const std::function<void(const json&)>& progress = nullptr) {
  auto c = control::ControlClient::Connect(g.host, g.tls);
  if (!c.ok()) {
    *failure = {Origin::kConnection, c.status(), op, nullptr};
    return c.status();
  }
  json last_progress;
  auto r = c->Call(op, args, [&](const json& p) {
    last_progress = p;
    if (progress) progress(p);
  });
  if (!r.ok()) {
    *failure = {c->answered() ? Origin::kAgiled : Origin::kConnection, r.status(), op, last_progress};
    if (c->error().is_object() && c->error().contains("report")) failure->report = c->error()["report"];
  }
  return r;
}

// Until agiled at `host` no longer serves: its unix socket file is gone
// (agiled removes it last), or a TCP endpoint refuses connections.
Status WaitUntilGone(const std::string& host, const std::shared_ptr<const tls::Credentials>& creds,
                     std::chrono::seconds timeout) {
  std::string path = host.rfind("unix:", 0) == 0 ? host.substr(5) : (host.rfind('/', 0) == 0 ? host : "");
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!path.empty() ? ::access(path.c_str(), F_OK) != 0 : !control::ControlClient::Connect(host, creds).ok())
      return Status::Ok();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Internal("agiled at " + host + " did not stop within " + std::to_string(timeout.count()) + " s");
}

// The examples `agilectl --help` ends with. tests/docs_examples_test.sh runs
// each "  agilectl ..." line below as written (against a test agiled), so keep
// them runnable and in an order that works.
constexpr const char* kExamples =
    "Examples (global flags such as --json and -H go anywhere on the line):\n"
    "  agilectl vm start vm1 --memory 256M --workload memverify --workload-args \"size_mib=64 rate=100\"\n"
    "  agilectl vm list\n"
    "  agilectl vm stat vm1 --json\n"
    "  agilectl --json vm console vm1 --lines 5\n"
    "  agilectl vm policy vm1 --exempt -H unix:/run/agile/agiled.sock\n"
    "  agilectl top --iterations 2 --interval 0.5\n"
    "  agilectl top --json --interval 0.5\n"
    "  agilectl -H unix:/run/agile/agiled.sock vm stop vm1\n"
    "  agilectl host info --json\n";

void PrintWss(const json& w) {
  const json& wss = w.contains("wss_bytes") ? w["wss_bytes"] : json();
  std::printf("vm %s: working set %s", w.value("name", "").c_str(),
              wss.is_number() ? FormatSize(wss.get<uint64_t>()).c_str() : "not known yet");
  const json windows = w.value("windows_bytes", json::object());  // a local: items() refers to it
  for (auto& [win, bytes] : windows.items())  // null: window not covered yet
    std::printf("  [%s: %s]", win.c_str(), bytes.is_number() ? FormatSize(bytes.get<uint64_t>()).c_str() : "not yet");
  std::printf("  resident %s", FormatSize(w.value("resident_bytes", 0ull)).c_str());
  if (w.contains("tracker"))
    std::printf("  (tracking %.2f%% CPU, period %.0f ms)", w["tracker"].value("est_cpu_pct", 0.0),
                w["tracker"].value("period_ms", 0.0));
  std::printf("\n");
  std::fflush(stdout);
}

// A report's field by its QEMU-style name, or its 0.x alias (an older agiled).
double Num(const json& r, const char* name, const char* alias = nullptr) {
  if (r.contains(name) && r[name].is_number()) return r[name].get<double>();
  if (alias && r.contains(alias) && r[alias].is_number()) return r[alias].get<double>();
  return 0;
}
double Ram(const json& r, const char* name, const char* alias = nullptr) {
  if (r.contains("ram") && r["ram"].contains(name) && r["ram"][name].is_number()) return r["ram"][name].get<double>();
  return alias ? Num(r, alias) : 0;
}

void PrintReport(const json& r) {
  std::string status = r.value("status", r.value("ok", false) ? "completed" : "failed");
  std::printf("migration of %s to %s (%s): %s\n", r.value("vm", "").c_str(), r.value("destination", "").c_str(),
              r.value("mode", "").c_str(), status.c_str());
  if (!r.value("error", "").empty()) std::printf("  error           %s\n", r.value("error", "").c_str());
  std::printf("  total time      %10.0f ms   (%s)\n", Num(r, "total-time", "total_time_ms"),
              status == "completed" ? "until the source holds nothing of the VM" : "until it ended");
  std::printf("  setup time      %10.0f ms   (until the destination accepted)\n", Num(r, "setup-time"));
  std::printf("  switchover      %10.0f ms   (until the VM runs at the destination)\n", Num(r, "switchover-time", "switchover_ms"));
  std::printf("  downtime        %10.1f ms\n", Num(r, "downtime", "downtime_ms"));
  std::printf("  transferred     %10s   (%.0f Mbit/s)\n", FormatSize(static_cast<uint64_t>(Ram(r, "transferred", "bytes_sent"))).c_str(),
              Ram(r, "mbps"));
  std::printf("  rounds          %10.0f%s\n", Ram(r, "dirty-sync-count", "rounds"),
              r.value("converged", true) ? "" : "   (did not converge)");
  std::printf("  pages precopied %10.0f, postcopied %.0f (on demand %.0f), left in store %.0f, zero %.0f\n",
              Num(r, "pages-precopied", "pages_precopied"), Num(r, "pages-postcopied", "pages_postcopied"),
              Num(r, "pages-demand", "pages_demand"), Num(r, "pages-from-store", "pages_from_store"),
              Num(r, "pages-zero", "pages_zero"));
}

// One line for a running migration's progress (the bar, vm stat, top).
std::string ProgressLine(const json& p) {
  char b[256];
  double remaining_ms = Num(p, "remaining-time");
  std::string eta = remaining_ms > 0 ? std::to_string(static_cast<int>(std::ceil(remaining_ms / 1000))) + "s" : "-";
  std::snprintf(b, sizeof(b), "%-15s %-13s sent %9s  %7.0f Mbit/s  remaining %9s  eta %5s  round %-3.0f %6.1fs",
                p.value("status", "").c_str(), p.value("phase", "").c_str(),
                FormatSize(static_cast<uint64_t>(Ram(p, "transferred", "bytes_sent"))).c_str(), Ram(p, "mbps"),
                FormatSize(static_cast<uint64_t>(Ram(p, "remaining"))).c_str(), eta.c_str(),
                Ram(p, "dirty-sync-count", "round"), Num(p, "total-time", "elapsed_ms") / 1000);
  std::string line = b;
  if (p.value("status", "") == "postcopy-paused" && p.contains("recovery") && p["recovery"].is_object())
    line += "  LINK LOST: " + std::to_string(p["recovery"].value("attempts", 0)) +
            " reconnects so far (agilectl migrate --recover " + p.value("vm", std::string("NAME")) + ")";
  return line;
}

std::string U(const json& j, const char* a, const char* b = nullptr) {
  const json* p = &j;
  if (!p->contains(a)) return "-";
  p = &(*p)[a];
  if (b) {
    if (!p->contains(b)) return "-";
    p = &(*p)[b];
  }
  return p->is_string() ? p->get<std::string>() : p->dump();
}

void PrintStat(const json& s) {
  uint64_t total = s.contains("pages") ? s["pages"].value("total", 0ull) : 0;
  auto pages = [&](const char* k) {
    uint64_t n = s.contains("pages") ? s["pages"].value(k, 0ull) : 0;
    char b[96];
    std::snprintf(b, sizeof(b), "%8llu pages  %10s  %5.1f%%", static_cast<unsigned long long>(n),
                  FormatSize(n * 4096).c_str(), total ? 100.0 * static_cast<double>(n) / static_cast<double>(total) : 0.0);
    return std::string(b);
  };
  std::cout << "vm " << U(s, "name") << ": " << U(s, "state") << ", " << FormatSize(s.value("memory_bytes", 0ull))
            << ", workload " << U(s, "workload") << ", pid " << U(s, "pid") << "\n";
  if (s.value("stock", false)) {
    std::cout << "  memory    stock VM: anonymous guest RAM, not owned by agiled (no page statistics)\n";
  } else {
    std::cout << "  resident  " << pages("resident") << "\n"
              << "  zero      " << pages("zero") << "\n"
              << "  offloaded " << pages("offloaded") << "\n";
  }
  if (s.value("damaged", false))
    std::cout << "  DAMAGED   " << U(s, "lost_pages") << " offloaded page(s) lost by the swap store ("
              << U(s, "damage_reason") << "); a vCPU touching one waits, it never gets zeros\n";
  if (s.contains("faults"))
    std::cout << "  faults    first-touch " << U(s, "faults", "first_touch") << " (p50 "
              << U(s, "faults", "first_touch_p50_us") << " us, p99 " << U(s, "faults", "first_touch_p99_us")
              << " us), minor " << U(s, "faults", "minor") << ", refault " << U(s, "faults", "refault") << " (p50 "
              << U(s, "faults", "refault_p50_us") << " us, p99 " << U(s, "faults", "refault_p99_us") << " us)\n";
  if (s.contains("offload"))
    std::cout << "  offload   " << FormatSize(s["offload"].value("bytes_offloaded", 0ull)) << " sent to "
              << U(s, "offload", "store") << ", " << U(s, "offload", "pages_zero_dropped")
              << " zero pages dropped, policy " << U(s, "offload", "policy") << "\n";
  if (s.contains("wss_bytes") && s["wss_bytes"].is_number())
    std::cout << "  wss       " << FormatSize(s.value("wss_bytes", 0ull)) << " accessed recently (agilectl wss for windows)\n";
  if (s.contains("policy") && s["policy"].contains("target_bytes"))
    std::cout << "  policy    " << U(s, "policy", "mode") << ", target " << FormatSize(s["policy"].value("target_bytes", 0ull))
              << " under pressure\n";
  if (s.contains("host")) std::cout << "  host      RAM file " << FormatSize(s["host"].value("ram_file_bytes", 0ull)) << "\n";
  if (s.contains("guest") && s["guest"].contains("line")) std::cout << "  guest     " << U(s, "guest", "line") << "\n";
  if (s.contains("exit")) std::cout << "  exit      " << U(s, "exit") << "\n";
  if (s.contains("migration") && s["migration"].is_object())
    std::cout << "  migration " << (s["migration"].contains("destination") ? "to " + U(s, "migration", "destination") + ": " : "")
              << ProgressLine(s["migration"]) << "\n";
}

// --- agilectl top -----------------------------------------------------------

struct Sample {
  std::chrono::steady_clock::time_point at;
  json host;                    // host.info
  std::map<std::string, json> vms;  // vm.stat by name
};

Result<Sample> TakeSample(const Globals& g, Failure* failure) {
  auto c = control::ControlClient::Connect(g.host);
  if (!c.ok()) {
    *failure = {Origin::kConnection, c.status(), "host.info", nullptr};
    return c.status();
  }
  auto fail = [&](const std::string& op, const Status& st) {
    *failure = {c->answered() ? Origin::kAgiled : Origin::kConnection, st, op, nullptr};
    return st;
  };
  Sample s;
  s.at = std::chrono::steady_clock::now();
  auto h = c->Call("host.info");
  if (!h.ok()) return fail("host.info", h.status());
  s.host = *h;
  auto l = c->Call("vm.list");
  if (!l.ok()) return fail("vm.list", l.status());
  for (const auto& v : *l) {
    std::string name = v.value("name", "");
    auto st = c->Call("vm.stat", {{"name", name}});
    if (st.ok()) s.vms[name] = *st;
    else if (st.status().code() != Code::kNotFound) return fail("vm.stat", st.status());  // gone meanwhile: skip
  }
  return s;
}

// Per VM: sizes from the newer sample, rates from the difference of the two.
json TopView(const Sample& a, const Sample& b) {
  double dt = std::chrono::duration<double>(b.at - a.at).count();
  auto counter = [](const json& st, const char* obj, const char* key) {
    return st.contains(obj) && st[obj].is_object() ? st[obj].value(key, 0.0) : 0.0;
  };
  auto rate = [&](double now, double before) { return dt > 0 && now >= before ? (now - before) / dt : 0.0; };
  json vms = json::array();
  uint64_t resident = 0;
  for (const auto& [name, st] : b.vms) {
    auto it = a.vms.find(name);
    const json& old = it != a.vms.end() ? it->second : st;
    auto faults = [&](const json& x) {
      return counter(x, "faults", "first_touch") + counter(x, "faults", "minor") + counter(x, "faults", "refault");
    };
    json v = {{"name", name},
              {"state", st.value("state", "")},
              {"memory_bytes", st.value("memory_bytes", 0ull)},
              {"resident_bytes", static_cast<uint64_t>(counter(st, "pages", "resident")) * 4096},
              {"offloaded_bytes", static_cast<uint64_t>(counter(st, "pages", "offloaded")) * 4096},
              {"wss_bytes", st.contains("wss_bytes") ? st["wss_bytes"] : json()},
              {"faults_per_s", rate(faults(st), faults(old))},
              {"first_touch_per_s", rate(counter(st, "faults", "first_touch"), counter(old, "faults", "first_touch"))},
              {"refaults_per_s", rate(counter(st, "faults", "refault"), counter(old, "faults", "refault"))},
              {"offload_bytes_per_s",
               rate(counter(st, "offload", "bytes_offloaded"), counter(old, "offload", "bytes_offloaded"))},
              {"refault_p99_us", st.contains("faults") ? st["faults"].value("refault_p99_us", json()) : json()}};
    if (st.contains("migration")) v["migration"] = st["migration"];
    resident += v.value("resident_bytes", 0ull);
    vms.push_back(v);
  }
  return {{"host", b.host.value("pressure", json::object())},
          {"host_id", b.host.value("id", "")},
          {"interval_s", dt},
          {"vm_resident_bytes", resident},
          {"vms", vms}};
}

void PrintTop(const json& t, bool clear) {
  if (clear) std::printf("\033[H\033[2J");
  const json& h = t["host"];
  std::printf("agiled %s  %zu VMs  PSI some avg10 %.1f%%%s  VMs resident %s",
              t.value("host_id", "").c_str(), t["vms"].size(), h.value("psi_some_avg10", 0.0),
              h.value("under_pressure", false) ? " (under pressure)" : "",
              FormatSize(t.value("vm_resident_bytes", 0ull)).c_str());
  if (h.value("host_budget_bytes", 0ull) > 0)
    std::printf(" / budget %s", FormatSize(h.value("host_budget_bytes", 0ull)).c_str());
  std::printf("  (every %.1f s)\n\n", t.value("interval_s", 0.0));
  std::printf("%-16s %-8s %9s %9s %9s %9s %9s %9s %10s  %s\n", "NAME", "STATE", "MEMORY", "RESIDENT", "OFFLOADED",
              "WSS", "FAULTS/s", "REFLT/s", "OFFLOAD/s", "MIGRATION");
  for (const auto& v : t["vms"]) {
    std::string mig = v.contains("migration") ? ProgressLine(v["migration"]) : "";
    std::printf("%-16s %-8s %9s %9s %9s %9s %9.0f %9.0f %10s  %s\n", v.value("name", "").c_str(),
                v.value("state", "").c_str(), FormatSize(v.value("memory_bytes", 0ull)).c_str(),
                FormatSize(v.value("resident_bytes", 0ull)).c_str(), FormatSize(v.value("offloaded_bytes", 0ull)).c_str(),
                v["wss_bytes"].is_number() ? FormatSize(v["wss_bytes"].get<uint64_t>()).c_str() : "-",
                v.value("faults_per_s", 0.0), v.value("refaults_per_s", 0.0),
                FormatSize(static_cast<uint64_t>(v.value("offload_bytes_per_s", 0.0))).c_str(), mig.c_str());
  }
  std::fflush(stdout);
}

// ^C during `agilectl migrate`: cancel the migration (as virsh migrate does),
// then keep waiting for its report. A second ^C ends agilectl at once.
int g_sigint_pipe[2] = {-1, -1};
void OnSigint(int) {
  char c = 1;
  (void)!::write(g_sigint_pipe[1], &c, 1);
}

void CancelOnSigint(const Globals& g, const std::string& name) {
  if (::pipe2(g_sigint_pipe, O_CLOEXEC) != 0) return;
  struct sigaction sa {};
  sa.sa_handler = OnSigint;
  sa.sa_flags = SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  std::thread([host = g.host, name] {
    char c;
    while (::read(g_sigint_pipe[0], &c, 1) < 0 && errno == EINTR) {
    }
    std::fprintf(stderr, "\nagilectl: cancelling the migration of %s (^C again to stop waiting)\n", name.c_str());
    auto cl = control::ControlClient::Connect(host);
    auto r = cl.ok() ? cl->Call("vm.migrate_cancel", {{"name", name}}) : Result<json>(cl.status());
    if (!r.ok()) std::fprintf(stderr, "agilectl: cancel: %s\n", r.status().message().c_str());
  }).detach();
}

}  // namespace

int Run(int argc, char** argv);

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const nlohmann::json::exception& e) {
    // An answer of a shape this agilectl does not know (e.g. a newer agiled).
    std::cerr << "agilectl: cannot show agiled's answer: " << e.what() << " [internal, exit 1]\n";
    return agilectl::kExitFailure;
  }
}

int Run(int argc, char** argv) {
  CLI::App app{"agilectl - control agiled: VMs whose memory agile owns."};
  app.require_subcommand(1);
  // Options of the top level are also taken after any subcommand:
  // `agilectl vm stat vm1 --json` == `agilectl --json vm stat vm1`.
  app.fallthrough();
  Globals g;
  const char* env_host = std::getenv("AGILE_HOST");
  g.host = env_host ? env_host : "unix:/run/agile/agiled.sock";
  app.add_option("-H,--host", g.host, "agiled to talk to: unix:PATH or HOST:PORT (env AGILE_HOST)")->capture_default_str();
  app.add_option("--tls-dir", g.tls_dir,
                 "Mutual TLS to a HOST:PORT agiled with these credentials (scripts/agile-pki; env AGILE_TLS_DIR)");
  app.add_flag("--json", g.json_out,
               "Print machine-readable JSON: the result, or {\"status\":\"failed\",\"exit_code\":N,\"error\":{...}}");
  app.set_version_flag("--version", std::string("agilectl ") + AGILE_VERSION);
  app.footer(std::string(kExamples) + "\nExit status:\n" + agilectl::ExitTable());

  auto* vm = app.add_subcommand("vm", "Manage VMs");
  vm->require_subcommand(1);

  std::string name, memory = "512M", workload = "memverify", wargs;
  std::vector<std::string> qemu_args;
  int vcpus = 1, lines = 40;

  auto* start = vm->add_subcommand("start", "Boot a VM whose guest RAM agiled owns");
  start->add_option("name", name, "VM name ([A-Za-z0-9_.-], unique on the host; required unless --spec names it)");
  start->add_option("--memory", memory, "Guest RAM, e.g. 512M, 1G")->capture_default_str();
  start->add_option("--cpus,--vcpus", vcpus, "Virtual CPUs (-smp)")->capture_default_str();
  start->add_option("--workload", workload,
                    "Guest program: memverify, memtouch, redis, diskverify (--boot disk) or none")
      ->capture_default_str();
  start->add_option("--workload-args", wargs,
                    "\"key=value ...\" for the workload. memverify: size_mib rate verify_rate seed; "
                    "memtouch: size_mib hot_mib write_pct pattern(uniform|zipf) phase_s seed; "
                    "redis: ip prefix gw port keys value_bytes maxmemory_mib");
  start->add_option("--qemu-arg", qemu_args, "Extra QEMU argument (repeatable), appended verbatim")->allow_extra_args(false);
  std::vector<std::string> disks, nics;
  std::string accel = "tcg", boot, firmware = "bios", spec_file;
  start->add_option("--disk", disks,
                    "Disk image (repeatable; the first boots): PATH[,format=qcow2|raw][,cache=writeback|none|"
                    "writethrough|directsync|unsafe][,bus=virtio-blk|virtio-scsi]")
      ->allow_extra_args(false);
  start->add_option("--nic", nics, "virtio-net NIC (repeatable): user | tap=IF | bridge=BR")->allow_extra_args(false);
  start->add_option("--accel", accel, "tcg, kvm, or auto (KVM when /dev/kvm opens, else TCG)")->capture_default_str();
  start->add_option("--boot", boot, "kernel (agiled's lab kernel+initramfs) or disk (firmware boots the first --disk); "
                                    "default: disk when a --disk is given");
  start->add_option("--firmware", firmware, "bios (SeaBIOS) or ovmf (UEFI; --boot disk)")->capture_default_str();
  start->add_option("--spec", spec_file,
                    "VM spec file (JSON, the fields of docs/vms.md); NAME and flags given on the line override it");
  bool stock = false;
  start->add_flag("--stock", stock,
                  "A stock VM: anonymous RAM not owned by agiled, as operators run VMs today (for the qemu-* "
                  "migration baselines)");

  auto* list = vm->add_subcommand("list", "List VMs on the host");
  auto* stat = vm->add_subcommand("stat", "Live status and page statistics of a VM");
  stat->add_option("name", name, "VM name")->required();
  auto* console = vm->add_subcommand("console", "Recent serial console output of a VM");
  console->add_option("name", name, "VM name")->required();
  console->add_option("--lines", lines, "How many lines")->capture_default_str();
  std::string resident;
  auto* offload = vm->add_subcommand("offload", "Move cold pages of a running VM to the swap store");
  offload->add_option("name", name, "VM name")->required();
  offload->add_option("--resident", resident, "Keep at most this much guest RAM resident, e.g. 128M")->required();
  auto* pause = vm->add_subcommand("pause", "Pause a VM's vCPUs (QMP stop)");
  pause->add_option("name", name, "VM name")->required();
  auto* resume = vm->add_subcommand("resume", "Resume a paused VM (QMP cont)");
  resume->add_option("name", name, "VM name")->required();
  bool force_resume = false;
  resume->add_flag("--force", force_resume,
                   "Resume a VM fenced by a migration that reached its commit point without a swap-store lease "
                   "to ask (precopy, postcopy, no --memd): only once you know it does not run at the destination. "
                   "Never overrides the lease");
  auto* stop = vm->add_subcommand("stop", "Stop a VM and free its memory");
  stop->add_option("name", name, "VM name")->required();

  auto* wss = app.add_subcommand("wss", "Working-set size of a VM (pages accessed within each window)");
  bool watch = false;
  wss->add_option("name", name, "VM name")->required();
  wss->add_flag("--watch", watch, "Print again every 2 s until interrupted");

  auto* pol = vm->add_subcommand("policy", "Show or set a VM's advance-offload policy");
  pol->add_option("name", name, "VM name")->required();
  std::string pin;
  bool pol_auto = false, pol_exempt = false;
  auto* pin_opt = pol->add_option("--pin", pin, "Keep at most this much resident, regardless of pressure");
  auto* auto_opt = pol->add_flag("--auto", pol_auto, "Working set + margin, when the host is under pressure (default)");
  auto* exempt_opt = pol->add_flag("--exempt", pol_exempt, "Never offload this VM in advance");
  pin_opt->excludes(auto_opt)->excludes(exempt_opt);
  auto_opt->excludes(exempt_opt);

  auto* mig = app.add_subcommand("migrate", "Live-migrate a VM to another agiled, with live progress and a report");
  std::string to, mode = "agile", bandwidth;
  uint64_t max_downtime = 300;
  uint32_t max_rounds = 30;
  bool cancel = false, no_tail = false, detach = false, copy_storage = false, recover = false;
  mig->add_option("name", name, "VM name");
  mig->add_option("--to", to, "Destination agiled HOST:PORT (its --listen address)");
  mig->add_option("--mode", mode,
                  "agile: pre-copy the working set, cold pages stay in the swap store | precopy | postcopy | "
                  "qemu-precopy | qemu-postcopy | qemu-precopy-tuned (auto-converge, multifd) | "
                  "qemu-hybrid (post-copy after the first pre-copy pass): QEMU's own, for stock VMs")
      ->capture_default_str()
      ->check(CLI::IsMember({"agile", "precopy", "postcopy", "qemu-precopy", "qemu-postcopy", "qemu-precopy-tuned",
                             "qemu-hybrid"}));
  mig->add_option("--max-downtime", max_downtime, "Pre-copy downtime target in ms")->capture_default_str();
  mig->add_option("--bandwidth", bandwidth, "Cap on the page stream, e.g. 1gbit, 500mbit, 100M (bytes/s)");
  mig->add_option("--max-rounds", max_rounds, "Pre-copy rounds before stopping the VM regardless")->capture_default_str();
  mig->add_flag("--no-tail", no_tail,
                "agile: when pre-copy cannot meet --max-downtime, stop the VM for the dirty rest instead of "
                "post-copying it from the source (nothing then depends on the source after switchover)");
  mig->add_flag("--copy-storage", copy_storage,
                "Mirror the VM's disks to the destination (QEMU blockdev-mirror to its NBD export) instead of "
                "expecting it to open the same images; agile, precopy and postcopy modes");
  mig->add_flag("--cancel", cancel, "Cancel the running migration of NAME before its commit point (the VM stays here); refused after it "
                "(post-copy running or paused: the VM runs at the destination)");
  mig->add_flag("--recover", recover,
                "At the source: reconnect NAME's post-copy (or agile tail) whose link broke after switchover "
                "(status postcopy-paused) and resume where it stopped; with --to, to the destination's new "
                "address. The source also retries on its own with backoff within --migrate-recover-window-ms");
  mig->add_flag("--detach", detach,
                "Return once the migration has started; it runs on in agiled (agilectl migrate status NAME). "
                "Without it, ^C cancels the migration");
  mig->require_subcommand(0, 1);
  auto* mig_status = mig->add_subcommand(
      "status", "Progress of NAME's running migration, or the report of its last one (from any shell)");
  bool mig_watch = false;
  mig_status->add_option("name", name, "VM name")->required();
  mig_status->add_flag("--watch", mig_watch,
                       "Follow the migration until it ends, then print its report (exit status as agilectl migrate)");

  auto* top = app.add_subcommand("top", "Live view of the host's VMs: memory, working set, fault rates, pressure, "
                                        "migrations (like virt-top)");
  double top_interval = 2;
  int top_iterations = 0;
  top->add_option("--interval", top_interval, "Seconds between refreshes")->capture_default_str()->check(
      CLI::Range(0.1, 3600.0));
  top->add_option("--iterations", top_iterations, "Refresh this many times, then exit (0: until interrupted)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);

  auto* host = app.add_subcommand("host", "The agiled itself");
  host->require_subcommand(1);
  auto* info = host->add_subcommand("info", "Identity and paths of the agiled");
  auto* shutdown = host->add_subcommand(
      "shutdown", "Stop all VMs and the agiled; returns once it has stopped (its control socket is gone)");

  // A subcommand's --help says that the global options work there too.
  std::function<void(CLI::App*)> note_globals = [&](CLI::App* a) {
    for (CLI::App* sub : a->get_subcommands([](CLI::App*) { return true; })) {
      sub->footer("Global options, anywhere on the line: -H,--host unix:PATH|HOST:PORT (env AGILE_HOST), --json,\n"
                  "--tls-dir DIR (env AGILE_TLS_DIR).\n"
                  "Exit status: see agilectl --help.");
      note_globals(sub);
    }
  };
  note_globals(&app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (app.exit(e) == 0) return 0;  // --help, --version (already printed)
    // CLI11 has printed what is wrong; the JSON answer needs --json, which may not have been parsed.
    for (int i = 1; i < argc; ++i)
      if (std::strcmp(argv[i], "--json") == 0) g.json_out = true;
    if (g.json_out)
      std::cout << agilectl::FailureJson({Origin::kUsage, InvalidArgument(e.what()), "", nullptr}).dump(2) << "\n";
    return agilectl::kExitUsage;
  }
  // Credentials matter only for a TCP host; a unix socket is local and plain.
  g.tls_dir = tls::DirFromFlagOrEnv(g.tls_dir);
  bool tcp_host = g.host.rfind("unix:", 0) != 0 && g.host.rfind('/', 0) != 0;
  if (!g.tls_dir.empty() && tcp_host) {
    auto creds = tls::Credentials::Load(g.tls_dir);
    if (!creds.ok()) return Usage(g, creds.status().Annotate("--tls-dir"));
    g.tls = *creds;
  }

  std::string op;
  json args = json::object();
  if (start->parsed()) {
    auto mem = ParseSize(memory);
    if (!mem.ok()) return Usage(g, mem.status().Annotate("--memory"));
    auto wa = qemu::ParseWorkloadArgs(wargs);
    if (!wa.ok()) return Usage(g, wa.status());
    json base = json::object();
    if (!spec_file.empty()) {
      auto f = ReadSpecFile(spec_file);
      if (!f.ok()) return Usage(g, f.status().Annotate("--spec"));
      base = *f;
    }
    // A flag given on the line wins over the file; the file wins over a
    // flag's default.
    auto given = [&](const char* flag) { return start->count(flag) > 0; };
    if (!name.empty()) base["name"] = name;
    if (!base.contains("name")) return Usage(g, InvalidArgument("vm start needs a NAME (or a \"name\" in --spec)"));
    if (given("--memory") || !base.contains("memory_bytes")) base["memory_bytes"] = *mem;
    if (given("--cpus") || !base.contains("vcpus")) base["vcpus"] = vcpus;
    if (given("--workload") || !base.contains("workload")) base["workload"] = workload;
    if (given("--workload-args") || !base.contains("workload_args")) base["workload_args"] = *wa;
    if (given("--qemu-arg")) base["qemu_args"] = qemu_args;
    if (stock) base["stock"] = true;
    if (given("--accel") || !base.contains("accel")) base["accel"] = accel;
    if (given("--firmware") || !base.contains("firmware")) base["firmware"] = firmware;
    if (!boot.empty()) base["boot"] = boot;
    if (given("--disk")) {
      base["disks"] = json::array();
      for (const auto& d : disks) {
        auto ds = qemu::ParseDiskOption(d);
        if (!ds.ok()) return Usage(g, ds.status().Annotate("--disk"));
        base["disks"].push_back(ds->ToJson());
      }
    }
    if (given("--nic")) {
      base["nics"] = json::array();
      for (const auto& n : nics) {
        auto ns = qemu::ParseNicOption(n);
        if (!ns.ok()) return Usage(g, ns.status().Annotate("--nic"));
        base["nics"].push_back(ns->ToJson());
      }
    }
    auto spec = qemu::VmSpec::FromJson(base);
    if (!spec.ok()) return Usage(g, spec.status());
    Status v = spec->Validate();
    if (!v.ok()) return Usage(g, v);  // checked here too, so bad input never reaches a host
    op = "vm.start";
    args = spec->ToJson();
  } else if (list->parsed()) {
    op = "vm.list";
  } else if (stat->parsed()) {
    op = "vm.stat";
    args = {{"name", name}};
  } else if (console->parsed()) {
    op = "vm.console";
    args = {{"name", name}, {"lines", lines}};
  } else if (offload->parsed()) {
    auto r = ParseSize(resident);
    if (!r.ok()) return Usage(g, r.status().Annotate("--resident"));
    op = "vm.offload";
    args = {{"name", name}, {"resident_bytes", *r}};
  } else if (pause->parsed() || resume->parsed()) {
    op = pause->parsed() ? "vm.pause" : "vm.resume";
    args = {{"name", name}};
    if (force_resume) args["force"] = true;
  } else if (stop->parsed()) {
    op = "vm.stop";
    args = {{"name", name}};
  } else if (wss->parsed()) {
    op = "vm.wss";
    args = {{"name", name}};
  } else if (pol->parsed()) {
    op = "vm.policy";
    args = {{"name", name}};
    if (!pin.empty()) {
      auto b = ParseSize(pin);
      if (!b.ok()) return Usage(g, b.status().Annotate("--pin"));
      args["mode"] = "pin";
      args["pin_bytes"] = *b;
    } else if (pol_auto) {
      args["mode"] = "auto";
    } else if (pol_exempt) {
      args["mode"] = "exempt";
    }
  } else if (mig_status->parsed()) {
    op = "vm.migrate_status";
    args = {{"name", name}, {"watch", mig_watch}};
  } else if (mig->parsed()) {
    if (name.empty()) return Usage(g, InvalidArgument("migrate needs a VM name (or: migrate status NAME)"));
    if (cancel) {
      op = "vm.migrate_cancel";
      args = {{"name", name}};
    } else if (recover) {
      op = "vm.migrate_recover";
      args = {{"name", name}};
      if (!to.empty()) {
        if (!ParseHostPort(to).ok()) return Usage(g, InvalidArgument("--to: expected HOST:PORT, got '" + to + "'"));
        args["to"] = to;
      }
    } else {
      if (to.empty()) return Usage(g, InvalidArgument("migrate needs --to HOST:PORT (or --cancel, --recover)"));
      if (!ParseHostPort(to).ok()) return Usage(g, InvalidArgument("--to: expected HOST:PORT, got '" + to + "'"));
      uint64_t bw = 0;
      if (!bandwidth.empty()) {
        auto r = ParseRate(bandwidth);
        if (!r.ok()) return Usage(g, r.status().Annotate("--bandwidth"));
        bw = *r;
      }
      op = "vm.migrate";
      args = {{"name", name}, {"to", to}, {"mode", mode}, {"max_downtime_ms", max_downtime},
              {"bandwidth", bw},  {"max_rounds", max_rounds}, {"postcopy_tail", !no_tail}};
      if (detach) args["detach"] = true;
      if (copy_storage) args["copy_storage"] = true;
    }
  } else if (info->parsed()) {
    op = "host.info";
  } else if (shutdown->parsed()) {
    op = "host.shutdown";
  }

  // Live progress for migrations: a one-line bar on a terminal, nothing with --json.
  bool tty = ::isatty(2) && !g.json_out;
  auto on_progress = [&](const json& p) {
    if (!tty) return;
    std::fprintf(stderr, "\r\033[K%s", ProgressLine(p).c_str());
    std::fflush(stderr);
  };
  Failure failure{Origin::kAgiled, Status::Ok(), op, nullptr};
  if (top->parsed()) {
    auto interval = std::chrono::duration<double>(top_interval);
    auto prev = TakeSample(g, &failure);
    if (!prev.ok()) return Report(g, failure);
    for (int i = 0; top_iterations == 0 || i < top_iterations; ++i) {
      std::this_thread::sleep_for(interval);
      auto cur = TakeSample(g, &failure);
      if (!cur.ok()) return Report(g, failure);
      json view = TopView(*prev, *cur);
      if (g.json_out) {
        std::cout << view.dump(2) << "\n";
        return 0;
      }
      PrintTop(view, ::isatty(1));
      prev = std::move(cur);
    }
    return 0;
  }
  const bool migrating = op == "vm.migrate" || (op == "vm.migrate_status" && mig_watch);
  if (op == "vm.migrate" && !detach) CancelOnSigint(g, name);
  if (op == "vm.wss" && watch) {
    for (;;) {
      auto w = Call(g, op, args, &failure);
      if (!w.ok()) return Report(g, failure);
      if (g.json_out) std::cout << w->dump() << std::endl;
      else PrintWss(*w);
      std::this_thread::sleep_for(std::chrono::seconds(2));
    }
  }
  auto r = Call(g, op, args, &failure, on_progress);
  if (tty && migrating) std::fprintf(stderr, "\n");
  if (!r.ok()) {
    if (failure.report.is_object() && !g.json_out) PrintReport(failure.report);
    return Report(g, failure);
  }
  if (op == "host.shutdown") {
    // agiled answers first, then stops its VMs; wait for it to be gone, so
    // that the next command may start another agiled of the same id.
    Status gone = WaitUntilGone(g.host, g.tls, std::chrono::seconds(180));
    if (!gone.ok()) return Report(g, {Origin::kAgiled, gone, op, nullptr});
  }
  const json& res = *r;
  if (g.json_out) {
    std::cout << res.dump(2) << "\n";
    return 0;
  }
  if (op == "vm.start" || op == "vm.stat" || op == "vm.pause" || op == "vm.resume") {
    PrintStat(res);
  } else if (op == "vm.list") {
    std::printf("%-20s %-10s %10s %-10s %10s\n", "NAME", "STATE", "MEMORY", "WORKLOAD", "RESIDENT");
    for (const auto& v : res)
      std::printf("%-20s %-10s %10s %-10s %10s\n", v.value("name", "").c_str(), v.value("state", "").c_str(),
                  FormatSize(v.value("memory_bytes", 0ull)).c_str(), v.value("workload", "").c_str(),
                  FormatSize(v.value("resident_pages", 0ull) * 4096).c_str());
  } else if (op == "vm.console") {
    std::cout << res.value("text", "");
  } else if (op == "vm.migrate" && detach) {
    std::printf("migration of %s to %s started; it runs in agiled (agilectl migrate status %s --watch)\n", name.c_str(),
                to.c_str(), name.c_str());
  } else if (op == "vm.migrate" || (op == "vm.migrate_status" && !res.value("running", false))) {
    PrintReport(res);
  } else if (op == "vm.migrate_status" && res.value("direction", "") == "incoming") {
    std::printf("incoming migration of %s from %s: %s, %llu pages still at the source\n", name.c_str(),
                res.value("source", "").c_str(), res.value("status", "").c_str(),
                (unsigned long long)res.value("pages_remote", 0ull));
    if (res.value("status", "") == "postcopy-paused")
      std::printf("  PAUSED for recovery: %s\n  vCPUs touching those pages wait; recover it at the source: "
                  "agilectl migrate --recover %s\n",
                  res.value("error", "").c_str(), name.c_str());
  } else if (op == "vm.migrate_status") {
    std::printf("migration of %s to %s (%s): %s\n", name.c_str(), res.value("destination", "").c_str(),
                res.value("mode", "").c_str(), ProgressLine(res).c_str());
    if (res.value("status", "") == "postcopy-paused" && res.contains("recovery")) {
      const json& r = res["recovery"];
      std::printf("  PAUSED for recovery %.0f s of %.0f s: %s\n  %llu attempts, last: %s\n  %s\n",
                  r.value("since-ms", 0.0) / 1e3, r.value("window-ms", 0.0) / 1e3, r.value("cause", "").c_str(),
                  (unsigned long long)r.value("attempts", 0ull), r.value("last-error", "").c_str(),
                  r.value("hint", "").c_str());
    }
  } else if (op == "vm.migrate_recover") {
    std::printf("migration of %s: recovered, %s (%s)\n", name.c_str(), res.value("status", "").c_str(),
                res.value("phase", "").c_str());
  } else if (op == "vm.wss") {
    PrintWss(res);
  } else if (op == "vm.policy") {
    std::printf("vm %s: policy %s", name.c_str(), res.value("mode", "auto").c_str());
    if (res.contains("pin_bytes")) std::printf(" (pin %s)", FormatSize(res.value("pin_bytes", 0ull)).c_str());
    if (res.contains("target_bytes"))
      std::printf(", target %s, margin %s, refaults %.0f/s", FormatSize(res.value("target_bytes", 0ull)).c_str(),
                  FormatSize(res.value("margin_bytes", 0ull)).c_str(), res.value("refault_rate", 0.0));
    std::printf("\n");
  } else if (op == "vm.offload") {
    std::printf("vm %s: offloaded %llu pages (%s) and dropped %llu zero pages in %.2f s (%.0f MB/s); resident now %s\n",
                name.c_str(), (unsigned long long)res.value("pages_offloaded", 0ull),
                FormatSize(res.value("bytes_sent", 0ull)).c_str(), (unsigned long long)res.value("pages_zero", 0ull),
                res.value("seconds", 0.0), res.value("throughput_mb_s", 0.0),
                FormatSize(res.value("resident_bytes", 0ull)).c_str());
  } else if (op == "vm.stop") {
    std::cout << "vm " << name << " stopped\n";
  } else if (op == "host.shutdown") {
    std::cout << "agiled stopped\n";
  } else {
    std::cout << res.dump(2) << "\n";
  }
  return 0;
}
