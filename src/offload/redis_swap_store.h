// The Redis Cluster backend of SwapStore. Key schema and fencing are in
// docs/redis-store.md; in short, page i of namespace V lives in group
// g = (i / 16) % 128, whose keys share the hash tag {V:g}:
//   agile:{V:g}:owner          sha1(token) of the owning host
//   agile:{V:g}:pages:<h>      hash field i -> the 4096-byte page, where
//                              h = sha1("agile-data:" + token), so only the
//                              token's holder can name it
// and every access is an FCALL into the `agile` function library (loaded
// by the operator), which checks the token against the owner key: a host
// that does not hold the token is refused by Redis.
// Runs of 16 pages share a group (a refault and its prefetch are one call);
// 128 groups spread one VM over all masters.
// Thread-safe like SwapStore: the fault thread and the offloader each have
// their own cluster client.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "offload/owner_slot.h"
#include "offload/store_conn.h"
#include "offload/swap_store.h"
#include "redis/cluster_client.h"

namespace agile::offload {

struct RedisStoreConfig {
  std::string url;  // the store's identity (StoreUrl::identity), for addr() and logs
  redis::ClusterOptions cluster;
  int replicas = 1;    // replicas that must acknowledge a PUT (WAIT)
  int wait_ms = 1000;  // how long WAIT may take
  int redial_ms = 250;
};

inline constexpr uint32_t kRedisRunPages = 16;
inline constexpr uint32_t kRedisGroups = 128;

class RedisSwapStore final : public SwapStore {
 public:
  RedisSwapStore(RedisStoreConfig cfg, std::string store_vm_id);

  void SetTimeouts(const StoreTimeouts& t) override;
  // Never called: a PUT is acknowledged only once a replica has it (WAIT),
  // and the cluster has no journal to lose records of; a lost shard fails
  // reads (kUnavailable) instead, and the vCPU waits.
  void SetLostPagesHandler(LostPagesHandler) override {}
  Status Claim() override;
  void Adopt(memd::OwnerToken token) override;
  bool claimed() const override;
  Status Fetch(std::span<const uint64_t> idx, uint8_t* out, uint8_t* present) override;
  Status Put(std::span<const memd::PageRef> pages) override;
  Status FetchBulk(std::span<const uint64_t> idx, uint8_t* out, uint8_t* present) override;
  Result<memd::OwnerToken> Transfer(const std::string& new_host) override;
  // The fence answers: agile_count with our token is refused unless we own
  // every group we ask about.
  Result<bool> OwnedHere() override;
  Status Release() override;
  Result<uint64_t> StoredPages() override;
  std::optional<memd::OwnerToken> owned_token() const override;
  const std::string& store_vm_id() const override { return vm_id_; }
  const std::string& addr() const override { return cfg_.url; }

  static uint32_t GroupOf(uint64_t page) { return static_cast<uint32_t>((page / kRedisRunPages) % kRedisGroups); }
  std::string OwnerKey(uint32_t group) const;
  // The data hash's name under token_hex (see the header comment).
  std::string DataKey(uint32_t group, const std::string& token_hex) const;
  static std::string TokenHex(const memd::OwnerToken& t);

 private:
  // A ClusterClient is never dropped: it follows failovers and redials
  // nodes itself (src/redis/cluster_client.h).
  using Conn = StoreConn<redis::ClusterClient>;
  Result<redis::ClusterClient*> Client(Conn& c, bool rate_limited);

  // One FCALL `fn` per group in `groups` with extra args none: claim, xfer,
  // release, count. Replies in group order.
  Status ForAllGroups(Conn& c, const std::vector<std::vector<std::string>>& argvs,
                      std::vector<redis::Reply>* replies, int wait_replicas);
  Status Get(Conn& c, const memd::OwnerToken& token, std::span<const uint64_t> idx, uint8_t* out,
             uint8_t* present, bool rate_limited);
  class PageCalls;  // one FCALL per group of the pages asked (redis_swap_store.cc)

  // DataKey(g, token) for every group, for the last token asked (a sha1
  // per group per call would cost more than the rest of a refault's work).
  // Returns a copy: the other thread may switch the cache to another token.
  std::string CachedDataKey(uint32_t group, const std::string& token_hex);

  RedisStoreConfig cfg_;
  std::mutex keys_mu_;
  std::string keys_token_;
  std::vector<std::string> data_keys_;
  std::string vm_id_;
  std::vector<uint16_t> group_slot_;  // kRedisGroups
  OwnerSlot owner_;
  Conn fault_conn_, bulk_conn_;
};

}  // namespace agile::offload
