#include "service/service.h"

#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "agile/version.h"

namespace agile::service {

const char* Version() { return AGILE_VERSION; }

std::string VersionLine(const std::string& program) { return program + " " + Version() + "\n"; }

bool StderrIsJournal() {
  const char* js = std::getenv("JOURNAL_STREAM");
  if (!js || !*js) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(js, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st {};
  if (::fstat(2, &st) != 0) return false;
  return static_cast<unsigned long long>(st.st_dev) == dev && static_cast<unsigned long long>(st.st_ino) == ino;
}

int SyslogPriority(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::critical: return 2;
    case spdlog::level::err: return 3;
    case spdlog::level::warn: return 4;
    case spdlog::level::info: return 6;
    default: return 7;  // debug, trace
  }
}

namespace {

// %* in a pattern: "<N>", the message's syslog priority.
class PriorityFlag : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    char b[4] = {'<', static_cast<char>('0' + SyslogPriority(msg.level)), '>', 0};
    dest.append(b, b + 3);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<PriorityFlag>(); }
};

}  // namespace

void SetupLogging(const std::string& program, spdlog::level::level_enum level) {
  auto logger = std::make_shared<spdlog::logger>(program, std::make_shared<spdlog::sinks::stderr_sink_mt>());
  auto f = std::make_unique<spdlog::pattern_formatter>();
  if (StderrIsJournal()) {
    f->add_flag<PriorityFlag>('*').set_pattern("%*%v");
  } else {
    f->set_pattern("%Y-%m-%d %H:%M:%S.%e %l " + program + ": %v");
  }
  logger->set_formatter(std::move(f));
  logger->set_level(level);
  logger->flush_on(spdlog::level::trace);  // a daemon's log is read while it runs
  spdlog::set_default_logger(logger);
  spdlog::set_level(level);
}

Notifier::Notifier() {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0) watchdog_ = std::chrono::microseconds(usec);
}

void Notifier::Ready(const std::string& status) {
  sd_notifyf(0, "READY=1\nSTATUS=%s", status.c_str());
  last_ping_ = std::chrono::steady_clock::now();
}

void Notifier::Status(const std::string& status) { sd_notifyf(0, "STATUS=%s", status.c_str()); }

void Notifier::Stopping(const std::string& status) { sd_notifyf(0, "STOPPING=1\nSTATUS=%s", status.c_str()); }

void Notifier::Tick() {
  if (!watchdog_enabled()) return;
  auto now = std::chrono::steady_clock::now();
  if (now - last_ping_ < watchdog_ / 2) return;
  sd_notify(0, "WATCHDOG=1");
  last_ping_ = now;
}

}  // namespace agile::service
