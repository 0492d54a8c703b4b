#include "agiled_fixture.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "base/io.h"
#include "base/socket.h"

#include <fstream>
#include <iterator>

namespace agile::testing {
namespace fs = std::filesystem;
using nlohmann::json;

std::string AgiledBinary() { return AGILE_BIN_DIR "/agiled"; }
std::string AgilectlBinary() { return AGILE_BIN_DIR "/agilectl"; }
std::string MemdBinary() { return AGILE_BIN_DIR "/agile-memd"; }
std::string ShimPath() { return AGILE_SHIM_PATH; }
std::string GuestDir() { return AGILE_GUEST_DIR; }

// The pid keeps two suites (two worktrees, or ctest -j) from sharing state
// dirs, RAM files or memd data.
std::string UniqueTestName(const std::string& id) {
  return "agile-it-" + std::to_string(::getpid()) + "-" + id;
}

std::string AgiledProcess::shm_dir() const { return shm_dir_; }

Result<std::unique_ptr<AgiledProcess>> AgiledProcess::Start(const std::string& id,
                                                            const std::vector<std::string>& extra_args,
                                                            const std::vector<std::string>& prefix) {
  auto a = std::make_unique<AgiledProcess>();
  a->dir_ = "/tmp/" + UniqueTestName(id);
  fs::remove_all(a->dir_);
  fs::create_directories(a->dir_);
  a->sock_ = a->dir_ + "/agiled.sock";
  a->argv_ = prefix;
  for (const auto& x : {AgiledBinary(), std::string("--state-dir"), a->dir_, std::string("--guest-dir"), GuestDir(),
                        std::string("--log-level"), std::string("info")})
    a->argv_.push_back(x);
  for (const auto& x : extra_args) a->argv_.push_back(x);
  AGILE_RETURN_IF_ERROR(a->Launch());
  return a;
}

Status AgiledProcess::Launch() {
  SpawnOptions o;
  o.argv = argv_;
  o.stderr_fd = 2;
  o.new_session = false;
  AGILE_ASSIGN_OR_RETURN(proc_, Spawn(o));
  bool up = WaitFor(30, [&] { return fs::exists(sock_) && Call("host.info").ok(); });
  if (!up) return Unavailable("agiled did not come up (" + proc_.ExitDescription() + ")");
  // Named after the host's id: the state dir's name, or under TLS the certificate's.
  AGILE_ASSIGN_OR_RETURN(json info, Call("host.info"));
  shm_dir_ = info.value("shm_root", std::string());
  return Status::Ok();
}

void AgiledProcess::Kill() {
  (void)proc_.Signal(SIGKILL);
  proc_.Wait(10000);
}

Status AgiledProcess::Relaunch() { return Launch(); }

// QEMUs outlive a killed agiled by design (their shims wait to be
// re-adopted), so a test that killed one and never restarted it leaves them
// behind: find them by the QMP socket under this instance's state dir, which
// is on every QEMU command line agiled builds, and kill them.
static void KillQemusUnder(const std::string& dir) {
  const std::string needle = "unix:" + dir + "/";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream f(e.path() / "cmdline", std::ios::binary);
    std::string cmdline((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (cmdline.find(needle) == std::string::npos) continue;
    pid_t pid = std::stoi(name);
    if (pid != getpid()) ::kill(pid, SIGKILL);
  }
}

AgiledProcess::~AgiledProcess() {
  if (proc_.running()) {
    (void)proc_.Signal(SIGTERM);
    if (!proc_.Wait(30000)) {
      (void)proc_.Signal(SIGKILL);
      proc_.Wait(5000);
    }
  }
  KillQemusUnder(dir_);
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

json Stat(AgiledProcess& d, const std::string& vm) {
  auto s = d.Call("vm.stat", {{"name", vm}});
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? *s : json::object();
}

bool GuestReporting(AgiledProcess& d, const std::string& vm) {
  auto s = d.Call("vm.stat", {{"name", vm}});
  return s.ok() && (*s)["guest"].contains("errors") && (*s)["guest"].value("gen", 0) > 0;
}

Result<json> AgiledProcess::Call(const std::string& op, const json& args) {
  AGILE_ASSIGN_OR_RETURN(auto c, control::ControlClient::Connect("unix:" + sock_));
  return c.Call(op, args);
}

Result<std::unique_ptr<MemdProcess>> MemdProcess::Start(const std::string& data_dir, uint16_t port,
                                                        const std::vector<std::string>& extra_args) {
  auto m = std::make_unique<MemdProcess>();
  m->extra_args_ = extra_args;
  m->data_dir_ = data_dir;
  m->port_ = port;
  AGILE_RETURN_IF_ERROR(m->Launch());
  return m;
}

Status MemdProcess::Launch() {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return ErrnoStatus("pipe");
  UniqueFd r(out[0]), w(out[1]);
  SpawnOptions o;
  o.argv = {MemdBinary(), "--listen", "127.0.0.1:" + std::to_string(port_), "--capacity", "4G", "--log-level", "warn"};
  if (!data_dir_.empty()) {
    o.argv.push_back("--data-dir");
    o.argv.push_back(data_dir_);
  }
  for (const auto& x : extra_args_) o.argv.push_back(x);
  o.stdout_fd = w.get();
  o.stderr_fd = 2;
  o.new_session = false;
  AGILE_ASSIGN_OR_RETURN(proc_, Spawn(o));
  w.Reset();
  LineReader reader(r.get());
  auto line = reader.Next();
  if (!line.ok()) return Unavailable("agile-memd did not start (" + proc_.ExitDescription() + ")");
  auto colon = line->rfind(':');
  if (line->find("listening on") == std::string::npos || colon == std::string::npos)
    return Internal("unexpected agile-memd output: " + *line);
  port_ = static_cast<uint16_t>(std::stoi(line->substr(colon + 1)));
  return Status::Ok();
}

void MemdProcess::Kill() {
  if (proc_.running()) {
    (void)proc_.Signal(SIGKILL);
    proc_.Wait(5000);
  }
}

Status MemdProcess::Restart() {
  Kill();
  return Launch();
}

MemdProcess::~MemdProcess() { Kill(); }

uint16_t FreeTcpPort() {
  auto fd = TcpListen(HostPort{"127.0.0.1", 0}, 1);
  return fd.ok() ? BoundPort(fd->get()).value() : 0;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool WaitFor(double timeout_s, const std::function<bool()>& fn) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int>(timeout_s * 1000));
  for (;;) {
    if (fn()) return true;
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

CliResult Agilectl(AgiledProcess& d, const std::vector<std::string>& args) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return {};
  UniqueFd r(out[0]), w(out[1]);
  SpawnOptions o;
  o.argv = {AgilectlBinary(), "-H", "unix:" + d.socket(), "--json"};
  o.argv.insert(o.argv.end(), args.begin(), args.end());
  o.stdout_fd = w.get();
  o.stderr_fd = 2;
  o.new_session = false;
  auto p = Spawn(o);
  if (!p.ok()) return {};
  w.Reset();
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = ::read(r.get(), buf, sizeof(buf))) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  CliResult res;
  if (p->Wait(60000) && WIFEXITED(p->raw_status())) res.exit = WEXITSTATUS(p->raw_status());
  res.out = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (res.out.is_discarded()) res.out = text;
  return res;
}

json VmArgs(const std::string& name, uint64_t mib, const std::string& workload,
            const std::map<std::string, std::string>& wargs) {
  return {{"name", name}, {"memory_bytes", mib << 20}, {"workload", workload}, {"workload_args", wargs}};
}

}  // namespace agile::testing
