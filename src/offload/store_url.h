// agiled's --store URL and the backend it names:
//   memd://HOST:PORT                  agile-memd (a bare HOST:PORT, --memd's form, means the same)
//   redis-cluster://HOST:PORT[,HOST:PORT...][?user=U&password-file=F&replicas=N&wait-ms=M]
//                                     a Redis Cluster; the seeds are any of its nodes.
// Redis options: `user` is the ACL user (default: this host's id when a
// password file is given, else no AUTH); `password-file` holds its password
// (one line); `replicas` is how many replicas must acknowledge a PUT before
// the pages count as stored (default 1); `wait-ms` bounds that wait (1000).
// TLS: with --tls-dir, the cluster's nodes are reached on their tls-port with
// the host's certificate (docs/redis-store.md).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "offload/swap_store.h"
#include "tls/tls.h"

namespace agile::offload {

struct StoreUrl {
  enum class Kind { kMemd, kRedisCluster } kind = Kind::kMemd;
  std::string memd_addr;  // kMemd: HOST:PORT
  std::vector<std::string> seeds;
  std::string user, password_file;
  int replicas = 1;
  int wait_ms = 1000;
  // What agiled keeps in HostConfig::memd_addr and peers compare: HOST:PORT
  // for memd (as before --store existed), the URL as given for redis.
  std::string canonical;
  // Which store this is, for comparing with a migration peer's: HOST:PORT
  // for memd, redis-cluster://SEEDS for redis (credentials are per host).
  std::string identity;
};

// ParseStoreUrl(s)->identity, or s itself when it does not parse.
std::string StoreIdentity(const std::string& s);

// Parses and checks a --store (or --memd) value; reads nothing.
Result<StoreUrl> ParseStoreUrl(const std::string& s);

// The namespace store_vm_id in the store `url` names (its canonical form).
// Reads the password file, if any; connects lazily, on first use.
Result<std::unique_ptr<SwapStore>> MakeSwapStore(const std::string& url, const std::string& host_id,
                                                 const std::string& store_vm_id,
                                                 std::shared_ptr<const tls::Credentials> tls);

}  // namespace agile::offload
