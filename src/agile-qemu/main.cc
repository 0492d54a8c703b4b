// agile-qemu: the <emulator> of a libvirt domain whose memory agiled manages
// (docs/libvirt.md). libvirt runs it for capability probes (-help, -version,
// QMP with -machine none) and to start a domain. Probes are exec'd straight
// into the real QEMU. A domain start is registered with agiled (vm.attach:
// our pid, which stays QEMU's across exec, the RAM size, libvirt's log files)
// and then exec'd into the real QEMU with the shim preloaded, guest RAM on
// agiled's file and a QMP socket of agiled's own; libvirt keeps its monitor,
// its pid and its pty. Any failure before the exec ends the start with the
// reason on stderr, which libvirt shows: a domain never runs unmanaged.
//
// Environment (libvirt clears QEMU's; set these with <qemu:env> in the domain):
//   AGILE_HOST  agiled's control socket (default unix:/run/agile/agiled.sock)
//   AGILE_QEMU  the real QEMU (default /usr/bin/qemu-system-x86_64)
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "control/control_client.h"
#include "qemu/libvirt_argv.h"

namespace {

using namespace agile;

[[noreturn]] void Fail(const std::string& msg) {
  std::fprintf(stderr, "agile-qemu: %s\n", msg.c_str());
  std::exit(1);
}

[[noreturn]] void Exec(const std::string& qemu, std::vector<std::string> args) {
  args[0] = qemu;
  std::vector<char*> v;
  for (auto& a : args) v.push_back(a.data());
  v.push_back(nullptr);
  ::execv(qemu.c_str(), v.data());
  std::fprintf(stderr, "agile-qemu: cannot run %s: %s (set AGILE_QEMU)\n", qemu.c_str(), std::strerror(errno));
  std::exit(127);
}

std::string Env(const char* key, const char* def) {
  const char* v = std::getenv(key);
  return v != nullptr && *v != '\0' ? v : def;
}

// What an inherited descriptor is open on: libvirt's own log files.
std::string FdTarget(int fd) {
  char link[64], target[4096];
  std::snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  ssize_t n = ::readlink(link, target, sizeof(target) - 1);
  if (n <= 0 || target[0] != '/') return {};
  target[n] = '\0';
  return target;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  const std::string qemu = Env("AGILE_QEMU", "/usr/bin/qemu-system-x86_64");
  if (!qemu::IsDomainStart(args)) Exec(qemu, args);

  auto vm = qemu::ParseLibvirtArgv(args);
  if (!vm.ok()) Fail(vm.status().message());
  std::string serial_log = vm->serial_log_fd >= 0 ? FdTarget(vm->serial_log_fd) : vm->serial_log;
  std::string qemu_log = FdTarget(STDERR_FILENO);
  if (qemu_log.rfind("/dev/", 0) == 0) qemu_log.clear();  // a terminal or /dev/null: nothing to read back

  const std::string host = Env("AGILE_HOST", "unix:/run/agile/agiled.sock");
  nlohmann::json reply;
  {
    auto client = control::ControlClient::Connect(host);
    if (!client.ok())
      Fail("cannot reach agiled at " + host + " (" + client.status().ToString() +
           "); domain " + vm->name + " is not started (set AGILE_HOST with <qemu:env>, docs/libvirt.md)");
    auto r = client->Call("vm.attach", {{"name", vm->name},
                                        {"memory_bytes", vm->memory_bytes},
                                        {"vcpus", vm->vcpus},
                                        {"pid", static_cast<uint64_t>(::getpid())},
                                        {"serial_log", serial_log},
                                        {"qemu_log", qemu_log}});
    if (!r.ok()) Fail("agiled at " + host + " refused domain " + vm->name + ": " + r.status().ToString());
    reply = std::move(r).value();
  }  // the control connection closes here, before QEMU runs

  std::string preload = reply.value("shim_path", "");
  if (const char* old = std::getenv("LD_PRELOAD"); old != nullptr && *old != '\0') preload += std::string(":") + old;
  ::setenv("LD_PRELOAD", preload.c_str(), 1);
  ::setenv("AGILE_RAM_PATH", reply.value("ram_path", "").c_str(), 1);
  ::setenv("AGILE_SHIM_SOCK", reply.value("shim_socket", "").c_str(), 1);
  Exec(qemu, qemu::AgileArgv(args, *vm, reply.value("ram_path", ""), reply.value("qmp_socket", "")));
}
