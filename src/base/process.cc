#include "base/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <map>

extern char** environ;

namespace agile {

Result<Process> Process::Adopt(pid_t pid) {
  int pfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pfd < 0) return ErrnoStatus("pidfd_open " + std::to_string(pid));
  Process p(pid, UniqueFd(pfd));
  p.adopted_ = true;
  return p;
}

bool Process::Poll() {
  if (exited_ || pid_ <= 0) return exited_;
  if (adopted_) {
    // Not our child: waitpid cannot see it, but its pidfd turns readable
    // when it exits.
    pollfd p{pidfd_.get(), POLLIN, 0};
    if (::poll(&p, 1, 0) > 0) exited_ = true;
    return exited_;
  }
  int st;
  pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    exited_ = true;
    status_ = st;
  }
  return exited_;
}

bool Process::Wait(int timeout_ms) {
  if (Poll()) return true;
  pollfd p{pidfd_.get(), POLLIN, 0};
  int pr;
  do {
    pr = ::poll(&p, 1, timeout_ms);
  } while (pr < 0 && errno == EINTR);
  return Poll();
}

Status Process::Signal(int sig) {
  if (exited_) return Status::Ok();
  if (::syscall(SYS_pidfd_send_signal, pidfd_.get(), sig, nullptr, 0) != 0 && errno != ESRCH)
    return ErrnoStatus("pidfd_send_signal");
  return Status::Ok();
}

std::string Process::ExitDescription() const {
  if (!exited_) return "still running";
  if (adopted_) return "exited (started by an earlier agiled: its exit status is unknown here)";
  if (WIFEXITED(status_)) return "exited with code " + std::to_string(WEXITSTATUS(status_));
  if (WIFSIGNALED(status_)) return std::string("killed by signal ") + strsignal(WTERMSIG(status_));
  return "ended (status " + std::to_string(status_) + ")";
}

Result<Process> Spawn(const SpawnOptions& opts) {
  if (opts.argv.empty()) return InvalidArgument("spawn: empty argv");
  // Build argv/envp before fork: the child may only call async-signal-safe code.
  std::vector<char*> argv;
  for (const auto& a : opts.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::map<std::string, std::string> envmap;
  for (char** e = environ; *e; ++e) {
    std::string kv(*e);
    auto eq = kv.find('=');
    if (eq != std::string::npos) envmap[kv.substr(0, eq)] = kv;
  }
  for (const auto& kv : opts.env) envmap[kv.substr(0, kv.find('='))] = kv;
  std::vector<std::string> envs;
  for (auto& [k, v] : envmap) envs.push_back(v);
  std::vector<char*> envp;
  for (auto& s : envs) envp.push_back(const_cast<char*>(s.c_str()));
  envp.push_back(nullptr);

  UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  int in = opts.stdin_fd >= 0 ? opts.stdin_fd : devnull.get();
  int out = opts.stdout_fd >= 0 ? opts.stdout_fd : devnull.get();
  int err = opts.stderr_fd >= 0 ? opts.stderr_fd : devnull.get();

  // The exec gate (SpawnOptions::before_exec): one byte on the socket lets
  // the child exec; end of file (refused, or this process gone) ends it. A
  // socket, not a pipe: a child gone early must not SIGPIPE its spawner.
  int gate[2] = {-1, -1};
  if (opts.before_exec && ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, gate) != 0)
    return ErrnoStatus("socketpair for the exec gate");
  UniqueFd gate_r(gate[0]), gate_w(gate[1]);

  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return ErrnoStatus("fork");
  if (pid == 0) {
    if (gate_w) {
      ::close(gate_w.get());
      // This process's death ends the wait too: a sibling forked meanwhile
      // holds a copy of the gate's other end until its own exec, and may be
      // waiting at its own gate, so end of file alone could never come.
      // (The forking thread waits in Spawn until the gate opens, so only the
      // whole process's death fires this.)
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(126);
      char go = 0;
      ssize_t n;
      do {
        n = ::read(gate_r.get(), &go, 1);
      } while (n < 0 && errno == EINTR);
      if (n != 1) ::_exit(126);
      ::prctl(PR_SET_PDEATHSIG, 0);  // QEMU outlives agiled by design
    }
    if (opts.new_session) ::setsid();
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    ::execve(argv[0], argv.data(), envp.data());
    const char msg[] = "spawn: execve failed\n";
    (void)!::write(2, msg, sizeof(msg) - 1);
    ::_exit(127);
  }
  int pfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pfd < 0) {
    Status st = ErrnoStatus("pidfd_open");
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return st;
  }
  ::fcntl(pfd, F_SETFD, FD_CLOEXEC);
  Process child(pid, UniqueFd(pfd));
  if (opts.before_exec) {
    gate_r.Reset();
    Status s = opts.before_exec(pid);
    if (!s.ok()) {
      gate_w.Reset();  // end of file: the child exits without exec
      child.Wait(5000);
      return s;
    }
    const char go = 1;
    if (::send(gate_w.get(), &go, 1, MSG_NOSIGNAL) != 1) {
      Status st = ErrnoStatus("open the exec gate");
      gate_w.Reset();
      (void)child.Signal(SIGKILL);
      child.Wait(5000);
      return st;
    }
  }
  return child;
}

}  // namespace agile
