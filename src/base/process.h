// Child processes with a pidfd, so exits can be polled alongside sockets.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/status.h"

namespace agile {

struct SpawnOptions {
  std::vector<std::string> argv;
  std::vector<std::string> env;  // "KEY=VALUE" added to (or replacing in) our environment
  int stdin_fd = -1;             // -1: /dev/null
  int stdout_fd = -1;            // -1: /dev/null
  int stderr_fd = -1;            // -1: /dev/null
  bool new_session = true;       // so a terminal's ^C reaches agiled, not the VM
  // Runs in this process after the fork, before the child may exec: the
  // child waits at a gate until it returns Ok. If it fails, or this process
  // dies first, the child ends (code 126, or SIGKILL) without ever running
  // argv[0].
  // agiled records a QEMU's pid here, so no QEMU exists that a restarted
  // agiled has no record of.
  std::function<Status(pid_t)> before_exec;
};

class Process {
 public:
  Process() = default;
  Process(pid_t pid, UniqueFd pidfd) : pid_(pid), pidfd_(std::move(pidfd)) {}
  Process(Process&&) noexcept = default;
  Process& operator=(Process&&) noexcept = default;

  // A process this one did not start (a QEMU left running by an earlier
  // agiled): watched and signalled through a pidfd; its exit status is not
  // ours to collect, so ExitDescription() says it is unknown.
  static Result<Process> Adopt(pid_t pid);

  pid_t pid() const { return pid_; }
  int pidfd() const { return pidfd_.get(); }
  bool running() const { return pid_ > 0 && !exited_; }

  // Non-blocking: true if the child exited (status via exit_status()).
  bool Poll();
  // Waits up to timeout_ms; true if it exited.
  bool Wait(int timeout_ms);
  Status Signal(int sig);
  // "exited with code 3" / "killed by signal 9"
  std::string ExitDescription() const;
  int raw_status() const { return status_; }

 private:
  pid_t pid_ = -1;
  UniqueFd pidfd_;
  bool exited_ = false;
  bool adopted_ = false;
  int status_ = 0;
};

Result<Process> Spawn(const SpawnOptions& opts);

}  // namespace agile
