#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/socket.h>

#include "base/io.h"
#include "base/json_depth.h"
#include "base/process.h"
#include "base/size.h"
#include "base/socket.h"

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

TEST(JsonDepth, CountsBracketsOutsideStrings) {
  EXPECT_TRUE(JsonDepthWithin(R"({"a":[1,{"b":2}]})", 3));
  EXPECT_FALSE(JsonDepthWithin(R"({"a":[1,{"b":2}]})", 2));
  EXPECT_TRUE(JsonDepthWithin(R"({"a":"[[[[[\"[[[["})", 1));
  EXPECT_FALSE(JsonDepthWithin(std::string(100000, '['), 64));
  EXPECT_TRUE(JsonDepthWithin("]]]]}}", 1));
}

}  // namespace
}  // namespace agile
