// A thin Redis Cluster client on Connection: the slot map from CLUSTER SLOTS,
// one connection per master, commands pipelined and grouped by the master
// owning their slot, MOVED (update the map, resend) and ASK (ASKING, resend)
// redirects, and a slot-map refresh when a node is unreachable (a killed
// master's replica is promoted: the next call finds it).
//
// Every command given to Run() must be safe to send twice (ours are: PUT,
// claim and transfer are idempotent), since a command whose reply was lost
// with its connection is resent to the node that owns the slot now.
//
// Not thread-safe: one owner at a time (RedisSwapStore keeps one client per
// thread role).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "redis/connection.h"
#include "redis/crc16.h"

namespace agile::redis {

struct ClusterOptions {
  std::vector<std::string> seeds;  // HOST:PORT of any nodes; the rest is discovered
  ConnOptions conn;
  int max_redirects = 5;
};

// One command and the slot of its keys (all keys of a command share a slot).
struct Command {
  uint16_t slot = 0;
  std::vector<std::string_view> argv;  // views into the caller's memory, alive through Run
};

// Parses a CLUSTER SLOTS reply into slot -> master "HOST:PORT" ("" = unserved).
// A master listed without an IP is one that does not know its own address
// yet (a node alone in its cluster): it is the node we asked, on asked_host.
Result<std::vector<std::string>> ParseClusterSlots(const redisReply* r, const std::string& asked_host = "");

class ClusterClient {
 public:
  static Result<std::unique_ptr<ClusterClient>> Connect(ClusterOptions opts);

  // Sends cmds, pipelined per master, and puts reply i in (*replies)[i]
  // (error replies included: the caller judges them, e.g. a fence refusal).
  // wait_replicas > 0: each master is then sent WAIT wait_replicas
  // wait_timeout_ms after its commands, and the call fails (kUnavailable)
  // unless that many replicas acknowledged every write.
  // Fails with kUnavailable when a node stays unreachable or the slot map
  // does not settle within max_redirects rounds.
  Status Run(std::span<const Command> cmds, std::vector<Reply>* replies, int wait_replicas = 0,
             int wait_timeout_ms = 1000);

  // Reloads the slot map from the first reachable known node or seed.
  Status RefreshSlots();
  // The masters currently in the slot map.
  std::vector<std::string> Masters() const;

 private:
  explicit ClusterClient(ClusterOptions opts) : opts_(std::move(opts)) {}
  Result<Connection*> Node(const std::string& addr);

  ClusterOptions opts_;
  std::vector<std::string> slot_owner_;  // kSlots entries
  std::map<std::string, std::unique_ptr<Connection>> conns_;
};

}  // namespace agile::redis
