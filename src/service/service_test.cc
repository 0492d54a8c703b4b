#include "service/service.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include <spdlog/spdlog.h>

namespace agile::service {
namespace {

TEST(ServiceTest, VersionIsNotEmpty) {
  EXPECT_STRNE(Version(), "");
  EXPECT_EQ(VersionLine("agiled"), std::string("agiled ") + Version() + "\n");
}

TEST(ServiceTest, SyslogPriorities) {
  EXPECT_EQ(SyslogPriority(spdlog::level::critical), 2);
  EXPECT_EQ(SyslogPriority(spdlog::level::err), 3);
  EXPECT_EQ(SyslogPriority(spdlog::level::warn), 4);
  EXPECT_EQ(SyslogPriority(spdlog::level::info), 6);
  EXPECT_EQ(SyslogPriority(spdlog::level::debug), 7);
}

// Runs fn with stderr going to a file; returns what was written.
std::string CaptureStderr(const std::function<void()>& fn, bool as_journal) {
  char path[] = "/tmp/agile-service-test-XXXXXX";
  int fd = ::mkstemp(path);
  int saved = ::dup(2);
  ::dup2(fd, 2);
  struct stat st {};
  ::fstat(2, &st);
  if (as_journal)
    ::setenv("JOURNAL_STREAM", (std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino)).c_str(), 1);
  else
    ::unsetenv("JOURNAL_STREAM");
  fn();
  ::dup2(saved, 2);
  ::close(saved);
  ::close(fd);
  ::unsetenv("JOURNAL_STREAM");
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  ::unlink(path);
  return ss.str();
}

TEST(ServiceTest, JournalLinesCarryPriorityAndNoTimestamp) {
  std::string out = CaptureStderr(
      [] {
        EXPECT_TRUE(StderrIsJournal());
        SetupLogging("agiled", spdlog::level::info);
        spdlog::error("disk on fire");
        spdlog::info("ready");
        spdlog::debug("not shown");
      },
      true);
  EXPECT_EQ(out, "<3>disk on fire\n<6>ready\n");
}

TEST(ServiceTest, TerminalLinesCarryTimestampAndProgram) {
  std::string out = CaptureStderr(
      [] {
        EXPECT_FALSE(StderrIsJournal());
        SetupLogging("agile-memd", spdlog::level::info);
        spdlog::warn("slow");
      },
      false);
  // "2026-12-01 14:00:00.123 warning agile-memd: slow\n"
  ASSERT_GE(out.size(), 24u);
  EXPECT_EQ(out[4], '-');
  EXPECT_EQ(out.substr(23), " warning agile-memd: slow\n");
}

TEST(ServiceTest, JournalStreamOfAnotherFileIsNotOurs) {
  ::setenv("JOURNAL_STREAM", "1:1", 1);
  EXPECT_FALSE(StderrIsJournal());
  ::unsetenv("JOURNAL_STREAM");
}

// A NOTIFY_SOCKET of our own receives READY, STATUS and WATCHDOG datagrams.
TEST(ServiceTest, NotifiesReadyStatusAndWatchdog) {
  std::string path = "/tmp/agile-notify-" + std::to_string(::getpid());
  int s = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(s, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof(a.sun_path), "%s", path.c_str());
  ::unlink(path.c_str());
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
  ::setenv("WATCHDOG_USEC", "20000", 1);  // 20 ms: a ping every 10 ms
  auto recv = [&] {
    char b[256];
    ssize_t n = ::recv(s, b, sizeof(b), MSG_DONTWAIT);
    return n > 0 ? std::string(b, n) : std::string();
  };
  Notifier n;
  EXPECT_TRUE(n.watchdog_enabled());
  n.Ready("serving");
  EXPECT_EQ(recv(), "READY=1\nSTATUS=serving");
  n.Tick();  // just became ready: too early
  EXPECT_EQ(recv(), "");
  std::this_thread::sleep_for(std::chrono::milliseconds(15));
  n.Tick();
  EXPECT_EQ(recv(), "WATCHDOG=1");
  n.Status("2 VMs");
  EXPECT_EQ(recv(), "STATUS=2 VMs");
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");
  ::close(s);
  ::unlink(path.c_str());
}

TEST(ServiceTest, WithoutSystemdEverythingIsANoOp) {
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");
  Notifier n;
  EXPECT_FALSE(n.watchdog_enabled());
  n.Ready("x");
  n.Tick();
}

}  // namespace
}  // namespace agile::service
