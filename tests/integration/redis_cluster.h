// A real Redis Cluster for tests: `masters` redis-server processes plus
// `replicas` per master, each on a free loopback port with its own folder
// under /tmp/agile-it-PID-ID, joined by `redis-cli --cluster create`, with
// agile's fence library loaded on every master. Killed at destruction.
// Debian's redis-tools ships the server binary as redis-check-rdb (it picks
// its role from argv[0]); the fixture links it as redis-server when the
// redis-server package is not installed.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/process.h"
#include "base/status.h"
#include "redis/connection.h"

namespace agile::testing {

class RedisCluster {
 public:
  static Result<std::unique_ptr<RedisCluster>> Start(const std::string& id, int masters = 3, int replicas = 1);
  ~RedisCluster();

  // "127.0.0.1:P1,127.0.0.1:P2,..." of the first masters (seeds for --store).
  std::string Seeds() const;
  // Creates ACL user `user` on every node with only what a host needs
  // (FCALL into the fence, the slot map, WAIT; no KEYS/SCAN, no admin) and
  // writes its password into a file; returns the file's path.
  Result<std::string> AddHostUser(const std::string& user);
  // A command as the admin (default) user on the node at port.
  Result<redis::Reply> Call(uint16_t port, std::initializer_list<std::string_view> argv);
  // The port of the master serving slot now.
  Result<uint16_t> MasterOf(uint16_t slot);
  // kill -9 of the node at port.
  Status Kill(uint16_t port);
  // Starts the killed node again on its port and folder: it rejoins the
  // cluster (as a replica of the master that replaced it). ACL users are
  // per process: call AddHostUser again.
  Status Restart(uint16_t port);
  // Every live node reports cluster_state:ok and slot owner agree on masters.
  bool WaitOk(double timeout_s);

 private:
  struct Node {
    uint16_t port = 0;
    Process proc;
  };
  Status Launch(Node* n);
  std::string dir_, server_bin_;
  std::vector<Node> nodes_;
  int masters_ = 0;
};

}  // namespace agile::testing
