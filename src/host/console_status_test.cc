#include "host/console_status.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

namespace agile::host {
namespace {

using nlohmann::json;

TEST(ConsoleStatus, NewestStatusLineWithEveryPair) {
  json g = ParseConsoleStatus({"boot", "memverify: ok pages=10 gen=1 errors=0",
                               "\x1b[2Jmemverify: FAIL pages=12 gen=3 errors=2", "BAD page=7 want=1 got=2", "tail"});
  EXPECT_EQ(g["workload"], "memverify");
  EXPECT_EQ(g["line"], "memverify: FAIL pages=12 gen=3 errors=2");
  EXPECT_EQ(g["ok"], false);
  EXPECT_EQ(g["pages"], 12u);
  EXPECT_EQ(g["gen"], 3u);
  EXPECT_EQ(g["errors"], 2u);
  EXPECT_EQ(g["bad_page_lines"], 1u);
}

TEST(ConsoleStatus, MemtouchAndRedisForms) {
  json m = ParseConsoleStatus({"memtouch: ops/s=1234 hot_mib=16 phase=2 write_pct=50"});
  EXPECT_EQ(m["workload"], "memtouch");
  EXPECT_EQ(m["ok"], true);
  EXPECT_EQ(m["ops/s"], 1234u);
  EXPECT_EQ(m["write_pct"], 50u);
  json r = ParseConsoleStatus({"redis: ok keys=5 used_memory=1048576 clients=1 cmds=9 ops_per_sec=3"});
  EXPECT_EQ(r["workload"], "redis");
  EXPECT_EQ(r["used_memory"], 1048576u);
  EXPECT_EQ(r["ops_per_sec"], 3u);
}

TEST(ConsoleStatus, DiskverifyFormCountsBadFiles) {
  json d = ParseConsoleStatus({"diskverify: ok files=8 round=3 writes=11 reads=24 errors=0",
                               "diskverify: BAD file=2 want=ab got=cd",
                               "diskverify: FAIL files=8 round=4 writes=12 reads=32 errors=1"});
  EXPECT_EQ(d["workload"], "diskverify");
  EXPECT_EQ(d["ok"], false);
  EXPECT_EQ(d["round"], 4u);
  EXPECT_EQ(d["errors"], 1u);
  EXPECT_EQ(d["bad_file_lines"], 1u);
  // Interleaved with memverify (diskverify mem_mib=N): the newest line wins.
  json m = ParseConsoleStatus({"diskverify: ok files=8 round=3 writes=11 reads=24 errors=0",
                               "memverify: ok pages=10 gen=1 errors=0"});
  EXPECT_EQ(m["workload"], "memverify");
  EXPECT_FALSE(m.contains("bad_file_lines"));
}

TEST(ConsoleStatus, NoStatusIsEmpty) {
  EXPECT_TRUE(ParseConsoleStatus({}).empty());
  EXPECT_TRUE(ParseConsoleStatus({"memverify: starting", "BAD page=1"}).empty());
}

TEST(ConsoleStatus, KeysAreLowercaseRunsAndValuesMustFit) {
  json g = ParseConsoleStatus({"memverify: ok Ab_c=5 x=12y=3 big=99999999999999999999999 novalue= pages=1"});
  EXPECT_EQ(g["b_c"], 5u);
  EXPECT_EQ(g["x"], 12u);
  EXPECT_EQ(g["y"], 3u);
  EXPECT_FALSE(g.contains("big"));
  EXPECT_FALSE(g.contains("novalue"));
  EXPECT_EQ(g["pages"], 1u);
}

TEST(ConsoleStatus, HugeLineIsCutNotFatal) {
  // std::regex overflowed the stack on a line like this.
  std::string huge = "memverify: ok pages=1 " + std::string(8 << 20, 'a');
  json g = ParseConsoleStatus({huge});
  EXPECT_EQ(g["pages"], 1u);
  EXPECT_EQ(g["line"].get<std::string>().size(), kConsoleLineCap);
}

TEST(ConsoleStatus, SplitTailLines) {
  using V = std::vector<std::string>;
  EXPECT_EQ(SplitTailLines("", 5, false), V{});
  EXPECT_EQ(SplitTailLines("\n", 5, false), V{""});
  EXPECT_EQ(SplitTailLines("a\r\n\nb", 5, false), (V{"a", "", "b"}));
  EXPECT_EQ(SplitTailLines("a\nb\nc\n", 2, false), (V{"b", "c"}));
  EXPECT_EQ(SplitTailLines("partial\nb\n", 5, true), (V{"b"}));
  EXPECT_EQ(SplitTailLines("no newline at all", 5, true), V{});
  // A last line still being written is left out when asked.
  EXPECT_EQ(SplitTailLines("a\nmemverify: ok pa", 5, false, true), V{"a"});
  EXPECT_EQ(SplitTailLines("a\nb\n", 5, false, true), (V{"a", "b"}));
  EXPECT_EQ(SplitTailLines("cut short", 5, false, true), V{});
}

TEST(ConsoleStatus, FileTailIsBounded) {
  char path[] = "/tmp/console_status_testXXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::close(fd);
  {
    std::ofstream out(path);
    out << "memverify: ok pages=1 gen=1 errors=0\n" << std::string(3 << 20, 'x') << "\n";
    for (int i = 0; i < 300; ++i) out << "line " << i << "\n";
    out << "memtouch: ops/s=77 hot_mib=1\n";
  }
  EXPECT_EQ(TailLines(path, 2), (std::vector<std::string>{"line 299", "memtouch: ops/s=77 hot_mib=1"}));
  json g = ConsoleStatusFromFile(path);
  EXPECT_EQ(g["ops/s"], 77u);
  EXPECT_EQ(g["bad_page_lines"], 0u);
  // The old memverify line is behind 3 MiB: beyond the tail that is read.
  EXPECT_TRUE(TailLines(path, 1000).size() <= 302);
  ::unlink(path);
  EXPECT_TRUE(TailLines(path, 5).empty());
}

TEST(ConsoleStatus, AStatusLineStillBeingWrittenIsNotRead) {
  char path[] = "/tmp/console_status_testXXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::close(fd);
  {
    std::ofstream out(path);
    out << "memverify: ok pages=65536 gen=7 errors=0 sweep=3\nmemverify: ok pa";  // the guest mid-line
  }
  json g = ConsoleStatusFromFile(path);
  EXPECT_EQ(g["errors"], 0u) << g.dump();
  EXPECT_EQ(g["sweep"], 3u) << g.dump();
  ::unlink(path);
}

}  // namespace
}  // namespace agile::host
