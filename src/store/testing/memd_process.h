// The agile-memd binary as a child process for the store's own tests: started
// on an ephemeral loopback port, its address read from the one line it prints
// when it listens. The end-to-end tests (durability, command line) kill,
// stop and restart it for real.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

namespace agile::memd::testing {

class MemdProcess {
 public:
  explicit MemdProcess(const std::vector<std::string>& extra) {
    int out[2];
    if (::pipe(out) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      std::vector<std::string> args = {AGILE_MEMD_BIN, "--listen", "127.0.0.1:0", "--log-level", "warn"};
      args.insert(args.end(), extra.begin(), extra.end());
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    stdout_ = ::fdopen(out[0], "r");
    char line[256] = {0};
    if (std::fgets(line, sizeof(line), stdout_) != nullptr) line_ = line;
    const std::string prefix = "agile-memd: listening on ";
    if (line_.rfind(prefix, 0) == 0) addr_ = line_.substr(prefix.size(), line_.find('\n') - prefix.size());
  }
  ~MemdProcess() {
    if (pid_ > 0) Stop();
    if (stdout_) std::fclose(stdout_);
  }
  MemdProcess(const MemdProcess&) = delete;
  MemdProcess& operator=(const MemdProcess&) = delete;

  // Sends `sig` and reaps the process; returns its wait status.
  int Signal(int sig) {
    ::kill(pid_, sig);
    return Wait();
  }
  int Stop() { return Signal(SIGTERM); }
  int Wait() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }
  // "127.0.0.1:PORT", empty when it did not start listening.
  const std::string& addr() const { return addr_; }
  // The first line it printed (the listening line, or whatever it said instead).
  const std::string& line() const { return line_; }

 private:
  pid_t pid_ = -1;
  FILE* stdout_ = nullptr;
  std::string line_, addr_;
};

}  // namespace agile::memd::testing
