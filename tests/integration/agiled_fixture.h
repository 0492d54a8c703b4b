// Integration-test helpers: a real agiled process on a private state dir, and
// polling helpers over its control API. Paths come from CMake definitions.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "control/control_client.h"
#include "base/process.h"

namespace agile::testing {

class AgiledProcess {
 public:
  // Starts build/bin/agiled with --state-dir /tmp/agile-it-<id> and waits for its socket.
  // prefix: a command agiled runs under (e.g. {"ip", "netns", "exec", NS}).
  static Result<std::unique_ptr<AgiledProcess>> Start(const std::string& id,
                                                      const std::vector<std::string>& extra_args = {},
                                                      const std::vector<std::string>& prefix = {});
  ~AgiledProcess();
  Result<nlohmann::json> Call(const std::string& op, const nlohmann::json& args = nlohmann::json::object());
  const std::string& socket() const { return sock_; }
  const std::string& state_dir() const { return dir_; }
  // Where agiled keeps this instance's guest RAM files (host.info's shm_root).
  std::string shm_dir() const;
  Process& process() { return proc_; }
  // kill -9 of agiled, as a crash would: its VMs' QEMUs keep running.
  void Kill();
  // A new agiled on the same state dir and flags (after Kill or an exit).
  Status Relaunch();

 private:
  Status Launch();
  std::string dir_, sock_, shm_dir_;
  std::vector<std::string> argv_;
  Process proc_;
};

// A real agile-memd on 127.0.0.1. Port 0 picks a free port the first time;
// Restart() comes back on the same port and data dir.
class MemdProcess {
 public:
  static Result<std::unique_ptr<MemdProcess>> Start(const std::string& data_dir = "", uint16_t port = 0,
                                                    const std::vector<std::string>& extra_args = {});
  ~MemdProcess();
  void Kill();
  Status Restart();
  std::string addr() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  Status Launch();
  std::string data_dir_;
  uint16_t port_ = 0;
  std::vector<std::string> extra_args_;
  Process proc_;
};

// Polls fn every 500 ms until it returns true or timeout_s passes.
bool WaitFor(double timeout_s, const std::function<bool()>& fn);

// vm.stat of `vm` (an empty object, and a test failure, when the call fails).
nlohmann::json Stat(AgiledProcess& d, const std::string& vm);
// The VM's workload has printed a status line with errors= and a gen > 0.
bool GuestReporting(AgiledProcess& d, const std::string& vm);

// A VM start request.
nlohmann::json VmArgs(const std::string& name, uint64_t mib, const std::string& workload,
                      const std::map<std::string, std::string>& wargs);

// A TCP port on 127.0.0.1 that was free a moment ago.
uint16_t FreeTcpPort();
// Reads a whole file (guest RAM files in /dev/shm).
std::string ReadFile(const std::string& path);

// `agilectl -H unix:SOCKET --json ARGS...` against d, as an operator runs it:
// its exit status and what it printed on stdout (JSON; null if none).
struct CliResult {
  int exit = -1;
  nlohmann::json out;
};
CliResult Agilectl(AgiledProcess& d, const std::vector<std::string>& args);

std::string AgiledBinary();
std::string AgilectlBinary();
std::string MemdBinary();
std::string ShimPath();
std::string GuestDir();
// A name no other running test suite uses: "agile-it-PID-ID".
std::string UniqueTestName(const std::string& id);

}  // namespace agile::testing
