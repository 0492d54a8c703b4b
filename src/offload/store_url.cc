#include "offload/store_url.h"

#include <charconv>
#include <fstream>

#include "base/socket.h"
#include "offload/memd_swap_store.h"
#include "offload/redis_swap_store.h"

namespace agile::offload {
namespace {

constexpr std::string_view kMemdScheme = "memd://";
constexpr std::string_view kRedisScheme = "redis-cluster://";

Result<int> ParseInt(std::string_view key, std::string_view v, int lo, int hi) {
  int n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || p != v.data() + v.size() || n < lo || n > hi)
    return InvalidArgument("--store: " + std::string(key) + " must be an integer in [" + std::to_string(lo) + ", " +
                           std::to_string(hi) + "], got '" + std::string(v) + "'");
  return n;
}

}  // namespace

Result<StoreUrl> ParseStoreUrl(const std::string& s) {
  StoreUrl u;
  std::string_view v = s;
  if (v.substr(0, kRedisScheme.size()) == kRedisScheme) {
    u.kind = StoreUrl::Kind::kRedisCluster;
    v.remove_prefix(kRedisScheme.size());
    std::string_view query;
    if (size_t q = v.find('?'); q != std::string_view::npos) {
      query = v.substr(q + 1);
      v = v.substr(0, q);
    }
    while (!v.empty()) {
      size_t comma = v.find(',');
      std::string seed(v.substr(0, comma));
      if (!ParseHostPort(seed).ok()) return InvalidArgument("--store: expected HOST:PORT, got '" + seed + "'");
      u.seeds.push_back(seed);
      v = comma == std::string_view::npos ? std::string_view() : v.substr(comma + 1);
    }
    if (u.seeds.empty()) return InvalidArgument("--store redis-cluster:// needs at least one HOST:PORT");
    while (!query.empty()) {
      size_t amp = query.find('&');
      std::string_view kv = query.substr(0, amp);
      query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
      size_t eq = kv.find('=');
      if (eq == std::string_view::npos) return InvalidArgument("--store: option '" + std::string(kv) + "' needs =VALUE");
      std::string_view key = kv.substr(0, eq), val = kv.substr(eq + 1);
      if (key == "user") u.user = val;
      else if (key == "password-file") u.password_file = val;
      else if (key == "replicas") {
        AGILE_ASSIGN_OR_RETURN(u.replicas, ParseInt(key, val, 0, 16));
      } else if (key == "wait-ms") {
        AGILE_ASSIGN_OR_RETURN(u.wait_ms, ParseInt(key, val, 1, 600000));
      } else {
        return InvalidArgument("--store: unknown option '" + std::string(key) +
                               "' (known: user, password-file, replicas, wait-ms)");
      }
    }
    u.canonical = s;
    u.identity = std::string(kRedisScheme);
    for (size_t i = 0; i < u.seeds.size(); ++i) u.identity += (i ? "," : "") + u.seeds[i];
    return u;
  }
  if (v.substr(0, kMemdScheme.size()) == kMemdScheme) v.remove_prefix(kMemdScheme.size());
  else if (v.find("://") != std::string_view::npos)
    return InvalidArgument("--store: unknown scheme in '" + s + "' (memd:// or redis-cluster://)");
  u.memd_addr = std::string(v);
  if (!ParseHostPort(u.memd_addr).ok())
    return InvalidArgument("--store: expected memd://HOST:PORT, got '" + s + "'");
  u.canonical = u.identity = u.memd_addr;
  return u;
}

std::string StoreIdentity(const std::string& s) {
  auto u = ParseStoreUrl(s);
  return u.ok() ? u->identity : s;
}

Result<std::unique_ptr<SwapStore>> MakeSwapStore(const std::string& url, const std::string& host_id,
                                                 const std::string& store_vm_id,
                                                 std::shared_ptr<const tls::Credentials> tls) {
  AGILE_ASSIGN_OR_RETURN(StoreUrl u, ParseStoreUrl(url));
  if (u.kind == StoreUrl::Kind::kMemd)
    return std::unique_ptr<SwapStore>(std::make_unique<MemdSwapStore>(u.memd_addr, host_id, store_vm_id, 250, tls));
  RedisStoreConfig cfg;
  cfg.url = u.identity;
  cfg.cluster.seeds = u.seeds;
  cfg.cluster.conn.tls = std::move(tls);
  cfg.replicas = u.replicas;
  cfg.wait_ms = u.wait_ms;
  if (!u.password_file.empty()) {
    std::ifstream f(u.password_file);
    if (!f) return ErrnoStatus("--store: read password-file " + u.password_file);
    std::getline(f, cfg.cluster.conn.password);
    cfg.cluster.conn.user = u.user.empty() ? host_id : u.user;
  } else if (!u.user.empty()) {
    return InvalidArgument("--store: user=" + u.user + " needs password-file=");
  }
  return std::unique_ptr<SwapStore>(std::make_unique<RedisSwapStore>(std::move(cfg), store_vm_id));
}

}  // namespace agile::offload
