#include "redis_cluster.h"

#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "agiled_fixture.h"

namespace agile::testing {
namespace fs = std::filesystem;

namespace {
// The fence library, from the source tree (CMake passes its path).
std::string FenceSource() { return ReadFile(AGILE_REDIS_FENCE_LUA); }

std::string Str(const redisReply* r) {
  if (r == nullptr) return "(null)";
  if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_ERROR)
    return std::string(r->str, r->len);
  if (r->type == REDIS_REPLY_INTEGER) return std::to_string(r->integer);
  return "(type " + std::to_string(r->type) + ")";
}
}  // namespace

Result<std::unique_ptr<RedisCluster>> RedisCluster::Start(const std::string& id, int masters, int replicas) {
  std::unique_ptr<RedisCluster> c(new RedisCluster());
  c->dir_ = "/tmp/" + UniqueTestName(id);
  fs::remove_all(c->dir_);
  fs::create_directories(c->dir_);
  c->masters_ = masters;
  c->server_bin_ = "/usr/bin/redis-server";
  if (!fs::exists(c->server_bin_)) {
    c->server_bin_ = c->dir_ + "/redis-server";
    fs::create_symlink("/usr/bin/redis-check-rdb", c->server_bin_);
  }
  int n = masters * (1 + replicas);
  c->nodes_.resize(static_cast<size_t>(n));
  for (Node& node : c->nodes_) {
    // The cluster bus listens on port + 10000, so the port must be <= 55535.
    do node.port = FreeTcpPort();
    while (node.port > 55535);
    AGILE_RETURN_IF_ERROR(c->Launch(&node));
  }
  // Wait for every node to answer.
  for (Node& node : c->nodes_) {
    bool up = WaitFor(10, [&] { return c->Call(node.port, {"PING"}).ok(); });
    if (!up) return Unavailable("redis node on port " + std::to_string(node.port) + " did not start");
  }
  std::string cmd = "redis-cli --cluster create";
  for (Node& node : c->nodes_) cmd += " 127.0.0.1:" + std::to_string(node.port);
  cmd += " --cluster-replicas " + std::to_string(replicas) + " --cluster-yes > " + c->dir_ + "/create.log 2>&1";
  if (std::system(cmd.c_str()) != 0)
    return Internal("redis-cli --cluster create failed: " + ReadFile(c->dir_ + "/create.log"));
  if (!c->WaitOk(30)) return Unavailable("the redis cluster did not reach cluster_state:ok");
  // The fence on every master (replicas get it by replication).
  std::string lua = FenceSource();
  for (Node& node : c->nodes_) {
    auto role = c->Call(node.port, {"ROLE"});
    if (!role.ok()) return role.status();
    if ((*role)->type != REDIS_REPLY_ARRAY || Str((*role)->element[0]) != "master") continue;
    auto r = c->Call(node.port, {"FUNCTION", "LOAD", "REPLACE", lua});
    if (!r.ok()) return r.status();
    if (!redis::ErrorText(r->get()).empty())
      return Internal("FUNCTION LOAD: " + std::string(redis::ErrorText(r->get())));
    // Ready once the replicas have synced (WAIT counts them): until then a
    // store's first durable write would time out.
    const std::string want = std::to_string(replicas);
    bool synced = WaitFor(20, [&] {
      auto w = c->Call(node.port, {"WAIT", want, "100"});
      return w.ok() && (*w)->type == REDIS_REPLY_INTEGER && (*w)->integer >= replicas;
    });
    if (!synced) return Unavailable("replicas of :" + std::to_string(node.port) + " never synced");
  }
  // Replication of the library: wait until every node has it.
  for (Node& node : c->nodes_) {
    bool has = WaitFor(10, [&] {
      auto r = c->Call(node.port, {"FUNCTION", "LIST", "LIBRARYNAME", "agile"});
      return r.ok() && (*r)->type == REDIS_REPLY_ARRAY && (*r)->elements == 1;
    });
    if (!has) return Unavailable("fence library missing on port " + std::to_string(node.port));
  }
  return c;
}

Status RedisCluster::Launch(Node* n) {
  std::string d = dir_ + "/" + std::to_string(n->port);
  fs::create_directories(d);
  SpawnOptions o;
  o.argv = {server_bin_, "--port", std::to_string(n->port), "--bind", "127.0.0.1", "--dir", d,
            "--cluster-enabled", "yes", "--cluster-config-file", d + "/nodes.conf",
            // Fail over fast: a killed master's replica is promoted within ~2 s.
            "--cluster-node-timeout", "1000", "--save", "", "--appendonly", "no", "--logfile", d + "/redis.log",
            "--daemonize", "no"};
  o.new_session = true;
  AGILE_ASSIGN_OR_RETURN(n->proc, Spawn(o));
  return Status::Ok();
}

RedisCluster::~RedisCluster() {
  for (Node& n : nodes_)
    if (n.proc.running()) {
      (void)n.proc.Signal(SIGKILL);
      n.proc.Wait(5000);
    }
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

std::string RedisCluster::Seeds() const {
  std::string s;
  for (int i = 0; i < masters_; ++i) s += (i ? ",127.0.0.1:" : "127.0.0.1:") + std::to_string(nodes_[static_cast<size_t>(i)].port);
  return s;
}

Result<redis::Reply> RedisCluster::Call(uint16_t port, std::initializer_list<std::string_view> argv) {
  redis::ConnOptions o;
  o.timeout_ms = 5000;
  AGILE_ASSIGN_OR_RETURN(auto conn, redis::Connection::Open("127.0.0.1:" + std::to_string(port), o));
  return conn->Call(argv);
}

Result<std::string> RedisCluster::AddHostUser(const std::string& user) {
  std::string password = "pw-" + user + "-" + std::to_string(::getpid());
  for (Node& n : nodes_) {
    if (!n.proc.running()) continue;
    // Commands a host runs, plus those the fence runs for it: Redis checks a
    // function's redis.call()s against the caller's ACL too.
    auto r = Call(n.port, {"ACL", "SETUSER", user, "reset", "on", ">" + password, "~agile:*", "resetchannels",
                           "-@all", "+fcall", "+fcall_ro", "+cluster|slots", "+wait", "+ping", "+auth", "+asking",
                           "+readonly", "+multi", "+exec", "+get", "+set", "+hset", "+hmget", "+hdel", "+hlen", "+del", "+exists",
                           "+rename"});
    if (!r.ok()) return r.status();
    if (!redis::ErrorText(r->get()).empty()) return Internal("ACL SETUSER: " + std::string(redis::ErrorText(r->get())));
  }
  std::string path = dir_ + "/" + user + ".password";
  std::ofstream(path) << password << "\n";
  return path;
}

Result<uint16_t> RedisCluster::MasterOf(uint16_t slot) {
  for (Node& n : nodes_) {
    if (!n.proc.running()) continue;
    auto r = Call(n.port, {"CLUSTER", "SLOTS"});
    if (!r.ok() || (*r)->type != REDIS_REPLY_ARRAY) continue;
    for (size_t i = 0; i < (*r)->elements; ++i) {
      const redisReply* e = (*r)->element[i];
      if (e->element[0]->integer <= slot && slot <= e->element[1]->integer)
        return static_cast<uint16_t>(e->element[2]->element[1]->integer);
    }
  }
  return NotFound("no live node knows slot " + std::to_string(slot));
}

Status RedisCluster::Kill(uint16_t port) {
  for (Node& n : nodes_)
    if (n.port == port) {
      AGILE_RETURN_IF_ERROR(n.proc.Signal(SIGKILL));
      n.proc.Wait(5000);
      return Status::Ok();
    }
  return NotFound("no node on port " + std::to_string(port));
}

Status RedisCluster::Restart(uint16_t port) {
  for (Node& n : nodes_)
    if (n.port == port) {
      AGILE_RETURN_IF_ERROR(Launch(&n));
      if (!WaitFor(10, [&] { return Call(port, {"PING"}).ok(); }))
        return Unavailable("restarted redis node " + std::to_string(port) + " does not answer");
      return Status::Ok();
    }
  return NotFound("no node on port " + std::to_string(port));
}

bool RedisCluster::WaitOk(double timeout_s) {
  return WaitFor(timeout_s, [&] {
    for (Node& n : nodes_) {
      if (!n.proc.running()) continue;
      auto r = Call(n.port, {"CLUSTER", "INFO"});
      if (!r.ok() || Str(r->get()).find("cluster_state:ok") == std::string::npos) return false;
    }
    return true;
  });
}

}  // namespace agile::testing
