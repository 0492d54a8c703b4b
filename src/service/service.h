// The service-manager side of agiled and agile-memd: readiness and watchdog
// notifications (sd_notify; no-ops when not started by systemd), logging that
// suits where stderr goes, and the version every program prints.
// Thread-safety: Notifier and SetupLogging are called from the main thread.
#pragma once

#include <spdlog/common.h>

#include <chrono>
#include <string>

namespace agile::service {

// `git describe --always --dirty` of the build, or the project version when
// built outside a git checkout (generated header, see cmake/version.cmake).
const char* Version();
// "NAME VERSION\n" for --version.
std::string VersionLine(const std::string& program);

// True when stderr is a journald stream (JOURNAL_STREAM names stderr's
// device:inode, as systemd sets it for StandardError=journal).
bool StderrIsJournal();

// Logs to stderr. Under journald: "<N>message" with the syslog priority N of
// the level (journald parses it) and no timestamp or program name (the journal
// adds both). Otherwise: "YYYY-mm-dd HH:MM:SS.mmm level program: message".
void SetupLogging(const std::string& program, spdlog::level::level_enum level);

// Syslog priority (<0>..<7>) of an spdlog level: critical 2, error 3, warn 4,
// info 6, debug and trace 7.
int SyslogPriority(spdlog::level::level_enum level);

// sd_notify for one daemon: READY=1 once it serves, STATUS= lines, and
// WATCHDOG=1 at half the WatchdogSec the manager asked for (WATCHDOG_USEC).
class Notifier {
 public:
  Notifier();
  void Ready(const std::string& status);
  void Status(const std::string& status);
  void Stopping(const std::string& status);
  // Call often (every few hundred ms) from the loop whose liveness it vouches
  // for; pings only when half the watchdog period has passed.
  void Tick();
  bool watchdog_enabled() const { return watchdog_.count() > 0; }

 private:
  std::chrono::microseconds watchdog_{0};
  std::chrono::steady_clock::time_point last_ping_{};
};

}  // namespace agile::service
