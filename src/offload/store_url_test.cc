// --store URLs: both backends, --memd's bare form, and the errors an
// operator sees for a bad one.
#include "offload/store_url.h"

#include <gtest/gtest.h>

#include "offload/redis_swap_store.h"

namespace agile::offload {
namespace {

TEST(StoreUrl, MemdForms) {
  for (const char* s : {"memd://10.0.0.1:7800", "10.0.0.1:7800"}) {
    auto u = ParseStoreUrl(s);
    ASSERT_TRUE(u.ok()) << s << ": " << u.status().ToString();
    EXPECT_EQ(u->kind, StoreUrl::Kind::kMemd);
    EXPECT_EQ(u->canonical, "10.0.0.1:7800") << "peers compare the bare address, as before --store";
  }
}

TEST(StoreUrl, RedisClusterSeedsAndOptions) {
  auto u = ParseStoreUrl("redis-cluster://127.0.0.1:7001,127.0.0.1:7002?user=h&password-file=/p&replicas=2&wait-ms=50");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->kind, StoreUrl::Kind::kRedisCluster);
  EXPECT_EQ(u->seeds, (std::vector<std::string>{"127.0.0.1:7001", "127.0.0.1:7002"}));
  EXPECT_EQ(u->user, "h");
  EXPECT_EQ(u->password_file, "/p");
  EXPECT_EQ(u->replicas, 2);
  EXPECT_EQ(u->wait_ms, 50);
  EXPECT_EQ(u->identity, "redis-cluster://127.0.0.1:7001,127.0.0.1:7002") << "credentials are per host";
}

TEST(StoreUrl, Rejects) {
  for (const char* s : {"", "memd://nohost", "redis-cluster://", "redis-cluster://h", "redis://h:1",
                        "redis-cluster://h:1?replicas=-1", "redis-cluster://h:1?colour=blue",
                        "redis-cluster://h:1?user"})
    EXPECT_FALSE(ParseStoreUrl(s).ok()) << s;
  EXPECT_FALSE(MakeSwapStore("redis-cluster://h:1?user=u", "host", "vm", nullptr).ok())
      << "a user without a password";
  EXPECT_FALSE(MakeSwapStore("redis-cluster://h:1?password-file=/nonexistent/x", "host", "vm", nullptr).ok());
}

TEST(RedisKeySchema, RunsShareAGroupAndGroupsSpreadOverSlots) {
  RedisStoreConfig cfg;
  cfg.url = "redis-cluster://h:1";
  RedisSwapStore s(cfg, "vm1-7-9");
  EXPECT_EQ(RedisSwapStore::GroupOf(0), RedisSwapStore::GroupOf(15));
  EXPECT_NE(RedisSwapStore::GroupOf(15), RedisSwapStore::GroupOf(16));
  EXPECT_EQ(RedisSwapStore::GroupOf(0), RedisSwapStore::GroupOf(16 * kRedisGroups));
  EXPECT_EQ(s.OwnerKey(3), "agile:{vm1-7-9:3}:owner");
  // The data key carries the hash tag (same slot as its owner key) and a
  // name only the token's holder can compute.
  memd::OwnerToken a{1, 2, 3}, b{1, 2, 4};
  std::string da = s.DataKey(3, RedisSwapStore::TokenHex(a));
  EXPECT_EQ(da.rfind("agile:{vm1-7-9:3}:pages:", 0), 0u) << da;
  EXPECT_EQ(redis::KeySlot(da), redis::KeySlot(s.OwnerKey(3)));
  EXPECT_NE(da, s.DataKey(3, RedisSwapStore::TokenHex(b)));
  EXPECT_EQ(da.find(RedisSwapStore::TokenHex(a)), std::string::npos) << "the token itself never appears in a key";
  // 128 groups land on many slots: a 3-master cluster gets some of each.
  std::set<uint16_t> slots;
  for (uint32_t g = 0; g < kRedisGroups; ++g) slots.insert(redis::KeySlot(s.OwnerKey(g)));
  EXPECT_GT(slots.size(), 120u);
  int thirds[3] = {0, 0, 0};
  for (uint16_t sl : slots) ++thirds[sl * 3 / redis::kSlots];
  for (int t : thirds) EXPECT_GT(t, 25) << "a master of an evenly split 3-master cluster would get few groups";
}

}  // namespace
}  // namespace agile::offload
