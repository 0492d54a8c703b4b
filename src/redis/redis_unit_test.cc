// The cluster client's pieces that need no server: key slots (the values
// Redis' own documentation and CLUSTER KEYSLOT give), the RESP encoder, and
// CLUSTER SLOTS parsing, including malformed maps.
#include <gtest/gtest.h>

#include "redis/cluster_client.h"
#include "redis/connection.h"
#include "redis/crc16.h"

namespace agile::redis {
namespace {

TEST(Crc16, MatchesTheReferenceCheckValue) {
  // XMODEM's check value, quoted in the Redis Cluster specification.
  EXPECT_EQ(Crc16("123456789"), 0x31C3);
}

TEST(KeySlot, HashTagRules) {
  EXPECT_EQ(KeySlot("foo"), 12182);  // CLUSTER KEYSLOT foo
  EXPECT_EQ(KeySlot("{user1000}.following"), KeySlot("{user1000}.followers"));
  EXPECT_EQ(KeySlot("{user1000}.following"), KeySlot("user1000"));
  EXPECT_EQ(KeySlot("foo{}{bar}"), Crc16("foo{}{bar}") & 16383) << "empty tag: whole key";
  EXPECT_EQ(KeySlot("foo{{bar}}zap"), KeySlot("{bar"));
  EXPECT_EQ(KeySlot("foo{bar}{zap}"), KeySlot("bar"));
}

TEST(Resp, EncodesBinarySafeBulkStrings) {
  std::string out;
  std::string bin("a\0b", 3);
  std::vector<std::string_view> argv = {"SET", "k", bin};
  AppendCommand(&out, argv);
  EXPECT_EQ(out, std::string("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\na\0b\r\n", 29));
}

Reply Parse(const std::string& resp) {
  redisReader* r = redisReaderCreate();
  redisReaderFeed(r, resp.data(), resp.size());
  void* out = nullptr;
  EXPECT_EQ(redisReaderGetReply(r, &out), REDIS_OK);
  redisReaderFree(r);
  return Reply(static_cast<redisReply*>(out));
}

TEST(ClusterSlots, ParsesRangesToMasters) {
  // Two ranges; the second master has a replica listed after it.
  Reply r = Parse(
      "*2\r\n"
      "*3\r\n:0\r\n:8191\r\n*3\r\n$9\r\n127.0.0.1\r\n:7001\r\n$2\r\nid\r\n"
      "*4\r\n:8192\r\n:16383\r\n*3\r\n$9\r\n127.0.0.1\r\n:7002\r\n$2\r\nid\r\n"
      "*3\r\n$9\r\n127.0.0.1\r\n:7005\r\n$2\r\nid\r\n");
  auto m = ParseClusterSlots(r.get());
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)[0], "127.0.0.1:7001");
  EXPECT_EQ((*m)[8191], "127.0.0.1:7001");
  EXPECT_EQ((*m)[8192], "127.0.0.1:7002");
  EXPECT_EQ((*m)[16383], "127.0.0.1:7002");
}

TEST(ClusterSlots, LeavesUnservedSlotsEmpty) {
  Reply r = Parse("*1\r\n*3\r\n:0\r\n:99\r\n*3\r\n$9\r\n127.0.0.1\r\n:7001\r\n$2\r\nid\r\n");
  auto m = ParseClusterSlots(r.get());
  ASSERT_TRUE(m.ok());
  EXPECT_EQ((*m)[100], "");
}

TEST(ClusterSlots, AMasterWithoutAnIpIsTheNodeAsked) {
  Reply r = Parse("*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$0\r\n\r\n:7001\r\n$2\r\nid\r\n");
  auto m = ParseClusterSlots(r.get(), "10.0.0.5");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)[42], "10.0.0.5:7001");
}

TEST(ClusterSlots, RejectsMalformedMaps) {
  EXPECT_FALSE(ParseClusterSlots(Parse("+OK\r\n").get()).ok());
  EXPECT_FALSE(ParseClusterSlots(Parse("*1\r\n*3\r\n:5\r\n:2\r\n*2\r\n$1\r\nh\r\n:1\r\n").get()).ok())
      << "range backwards";
  EXPECT_FALSE(ParseClusterSlots(Parse("*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:1\r\n").get()).ok())
      << "slot out of bounds";
  EXPECT_FALSE(ParseClusterSlots(Parse("*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$0\r\n\r\n:1\r\n").get()).ok())
      << "master without an address, and no node asked";
  EXPECT_FALSE(ParseClusterSlots(Parse("*1\r\n*2\r\n:0\r\n:1\r\n").get()).ok()) << "no master";
}

}  // namespace
}  // namespace agile::redis
