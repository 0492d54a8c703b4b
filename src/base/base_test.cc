#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/io.h"
#include "base/json_depth.h"
#include "base/process.h"
#include "base/size.h"
#include "base/socket.h"
#include "base/testing/scratch_dir.h"

namespace agile {
namespace {

TEST(SizeTest, ParsesSuffixes) {
  EXPECT_EQ(*ParseSize("4096"), 4096u);
  EXPECT_EQ(*ParseSize("512M"), 512ull << 20);
  EXPECT_EQ(*ParseSize("1G"), 1ull << 30);
  EXPECT_EQ(*ParseSize("1GiB"), 1ull << 30);
  EXPECT_EQ(*ParseSize("2k"), 2048u);
  EXPECT_EQ(*ParseSize("1.5G"), 3ull << 29);
}

TEST(SizeTest, RejectsGarbage) {
  EXPECT_FALSE(ParseSize("").ok());
  EXPECT_FALSE(ParseSize("-1G").ok());
  EXPECT_FALSE(ParseSize("12Q").ok());
  EXPECT_FALSE(ParseSize("G").ok());
  EXPECT_FALSE(ParseSize("99999999999T").ok());
}

TEST(SizeTest, ParsesRates) {
  EXPECT_EQ(*ParseRate("1gbit"), 125000000u);
  EXPECT_EQ(*ParseRate("800mbit"), 100000000u);
  EXPECT_EQ(*ParseRate("100M"), 100ull << 20);
  EXPECT_EQ(*ParseRate("1G/s"), 1ull << 30);
  EXPECT_FALSE(ParseRate("fast").ok());
  EXPECT_FALSE(ParseRate("xgbit").ok());
}

TEST(SocketTest, ParseHostPort) {
  auto hp = ParseHostPort("127.0.0.1:7000");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->host, "127.0.0.1");
  EXPECT_EQ(hp->port, 7000);
  EXPECT_FALSE(ParseHostPort("127.0.0.1").ok());
  EXPECT_FALSE(ParseHostPort("h:70000").ok());
  EXPECT_FALSE(ParseHostPort("h:x").ok());
}

TEST(SocketTest, PassesFdsWithData) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd pr(p[0]), pw(p[1]);
  const char msg[] = "hello";
  ASSERT_TRUE(SendWithFds(a.get(), msg, sizeof(msg), {pw.get()}).ok());
  char got[sizeof(msg)];
  std::vector<UniqueFd> fds;
  ASSERT_TRUE(RecvWithFds(b.get(), got, sizeof(got), &fds).ok());
  ASSERT_EQ(fds.size(), 1u);
  EXPECT_STREQ(got, "hello");
  ASSERT_TRUE(WriteFull(fds[0].get(), "x", 1).ok());
  char c;
  ASSERT_TRUE(ReadFull(pr.get(), &c, 1).ok());
  EXPECT_EQ(c, 'x');
}

TEST(IoTest, ReadFullReportsTruncation) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd r(p[0]), w(p[1]);
  ASSERT_TRUE(WriteFull(w.get(), "abc", 3).ok());
  w.Reset();
  char buf[8];
  Status st = ReadFull(r.get(), buf, 8);
  EXPECT_EQ(st.code(), Code::kCorruption);
  EXPECT_EQ(ReadFull(r.get(), buf, 1).code(), Code::kNotFound);
}

TEST(ProcessTest, ReportsExitCode) {
  auto p = Spawn({.argv = {"/bin/sh", "-c", "exit 3"}});
  ASSERT_TRUE(p.ok());
  ASSERT_TRUE(p->Wait(5000));
  EXPECT_EQ(p->ExitDescription(), "exited with code 3");
}

// The exec gate: the command (touching a marker file) runs only once
// before_exec said yes, and never when it refused or its caller died first.
class ExecGateTest : public ::testing::Test {
 protected:
  bool Ran() const { return ::access(marker_.c_str(), F_OK) == 0; }
  SpawnOptions Touch() const { return {.argv = {"/usr/bin/touch", marker_}}; }
  ScratchDir dir_{"agile-gate"};
  const std::string marker_ = dir_ / "ran";
};

TEST_F(ExecGateTest, RunsOnlyAfterBeforeExecReturnsWithTheChildsPid) {
  SpawnOptions o = Touch();
  pid_t seen = 0;
  bool ran_early = false;
  o.before_exec = [&](pid_t pid) {
    seen = pid;
    ::usleep(200 * 1000);  // time enough for a child that did not wait to run
    ran_early = Ran();
    return Status::Ok();
  };
  auto p = Spawn(o);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(seen, p->pid());
  EXPECT_FALSE(ran_early) << "the child ran before before_exec returned";
  ASSERT_TRUE(p->Wait(5000));
  EXPECT_EQ(p->ExitDescription(), "exited with code 0");
  EXPECT_TRUE(Ran());
}

TEST_F(ExecGateTest, ARefusalFailsTheSpawnAndTheCommandNeverRuns) {
  SpawnOptions o = Touch();
  o.before_exec = [](pid_t) { return Unavailable("no record, no QEMU"); };
  auto p = Spawn(o);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Code::kUnavailable);
  ::usleep(200 * 1000);
  EXPECT_FALSE(Ran());
}

TEST_F(ExecGateTest, TheCommandNeverRunsWhenTheSpawnerDiesAtTheGate) {
  // A spawner that dies inside before_exec (agiled killed between the fork
  // and its record): its gated child must end without running the command.
  // As its subreaper this test collects the orphaned child and its status.
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  int pids[2];
  ASSERT_EQ(::pipe(pids), 0);
  pid_t spawner = ::fork();
  ASSERT_GE(spawner, 0);
  if (spawner == 0) {
    SpawnOptions o = Touch();
    o.before_exec = [&](pid_t child) -> Status {
      (void)!::write(pids[1], &child, sizeof(child));
      ::_exit(0);
    };
    (void)Spawn(o);
    ::_exit(1);
  }
  ::close(pids[1]);
  pid_t child = 0;
  ASSERT_EQ(::read(pids[0], &child, sizeof(child)), static_cast<ssize_t>(sizeof(child)));
  ::close(pids[0]);
  int st = 0;
  ASSERT_EQ(::waitpid(spawner, &st, 0), spawner);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  // The orphaned child, reparented here, ends on its own at the gate.
  int cst = 0;
  pid_t got = 0;
  for (int i = 0; i < 50 && (got = ::waitpid(child, &cst, WNOHANG)) == 0; ++i) ::usleep(100 * 1000);
  (void)::prctl(PR_SET_CHILD_SUBREAPER, 0);
  ASSERT_EQ(got, child) << "the gated child outlived its spawner";
  // End of file at the gate (exit 126) or the spawner's death signal, whichever came first.
  EXPECT_TRUE((WIFEXITED(cst) && WEXITSTATUS(cst) == 126) || (WIFSIGNALED(cst) && WTERMSIG(cst) == SIGKILL)) << cst;
  EXPECT_FALSE(Ran());
}

TEST(JsonDepth, CountsBracketsOutsideStrings) {
  EXPECT_TRUE(JsonDepthWithin(R"({"a":[1,{"b":2}]})", 3));
  EXPECT_FALSE(JsonDepthWithin(R"({"a":[1,{"b":2}]})", 2));
  EXPECT_TRUE(JsonDepthWithin(R"({"a":"[[[[[\"[[[["})", 1));
  EXPECT_FALSE(JsonDepthWithin(std::string(100000, '['), 64));
  EXPECT_TRUE(JsonDepthWithin("]]]]}}", 1));
}

}  // namespace
}  // namespace agile
