#include "redis/cluster_client.h"

#include <spdlog/spdlog.h>

#include <charconv>
#include <chrono>
#include <set>
#include <thread>

namespace agile::redis {
namespace {

bool StartsWith(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// "MOVED 3999 127.0.0.1:6381" / "ASK ..." -> the address.
std::string RedirectTarget(std::string_view err) {
  size_t sp = err.rfind(' ');
  return sp == std::string_view::npos ? std::string() : std::string(err.substr(sp + 1));
}

std::string HostPortOf(const redisReply* node, const std::string& asked_host) {
  // [ip, port, id, ...]; ip is "" for a node that does not know its own
  // address yet: then it is the one we asked.
  if (node->type != REDIS_REPLY_ARRAY || node->elements < 2) return {};
  const redisReply* ip = node->element[0];
  const redisReply* port = node->element[1];
  if (ip->type != REDIS_REPLY_STRING || port->type != REDIS_REPLY_INTEGER) return {};
  std::string host = ip->len > 0 ? std::string(ip->str, ip->len) : asked_host;
  if (host.empty()) return {};
  return host + ":" + std::to_string(port->integer);
}

}  // namespace

Result<std::vector<std::string>> ParseClusterSlots(const redisReply* r, const std::string& asked_host) {
  if (r == nullptr || r->type != REDIS_REPLY_ARRAY) return Corruption("CLUSTER SLOTS: not an array");
  std::vector<std::string> owner(kSlots);
  for (size_t i = 0; i < r->elements; ++i) {
    const redisReply* e = r->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 || e->element[0]->type != REDIS_REPLY_INTEGER ||
        e->element[1]->type != REDIS_REPLY_INTEGER)
      return Corruption("CLUSTER SLOTS: malformed range");
    long long lo = e->element[0]->integer, hi = e->element[1]->integer;
    if (lo < 0 || hi >= kSlots || lo > hi) return Corruption("CLUSTER SLOTS: slot range out of bounds");
    std::string master = HostPortOf(e->element[2], asked_host);
    if (master.empty()) return Corruption("CLUSTER SLOTS: master without an address");
    for (long long s = lo; s <= hi; ++s) owner[static_cast<size_t>(s)] = master;
  }
  return owner;
}

Result<std::unique_ptr<ClusterClient>> ClusterClient::Connect(ClusterOptions opts) {
  if (opts.seeds.empty()) return InvalidArgument("redis cluster: no seed node");
  std::unique_ptr<ClusterClient> c(new ClusterClient(std::move(opts)));
  AGILE_RETURN_IF_ERROR(c->RefreshSlots());
  return c;
}

Result<Connection*> ClusterClient::Node(const std::string& addr) {
  auto it = conns_.find(addr);
  if (it != conns_.end() && !it->second->broken()) return it->second.get();
  AGILE_ASSIGN_OR_RETURN(auto conn, Connection::Open(addr, opts_.conn));
  Connection* raw = conn.get();
  conns_[addr] = std::move(conn);
  return raw;
}

Status ClusterClient::RefreshSlots() {
  // Known masters first (they know the newest map), then the seeds.
  std::vector<std::string> tries;
  std::set<std::string> seen;
  for (const std::string& a : Masters())
    if (seen.insert(a).second) tries.push_back(a);
  for (const std::string& a : opts_.seeds)
    if (seen.insert(a).second) tries.push_back(a);
  Status last = Unavailable("no node answered");
  for (const std::string& a : tries) {
    auto conn = Node(a);
    if (!conn.ok()) {
      last = conn.status();
      continue;
    }
    auto r = (*conn)->Call({"CLUSTER", "SLOTS"});
    if (!r.ok()) {
      last = r.status();
      continue;
    }
    if (!ErrorText(r->get()).empty()) {
      last = Unavailable("CLUSTER SLOTS on " + a + ": " + std::string(ErrorText(r->get())));
      continue;
    }
    auto map = ParseClusterSlots(r->get(), a.substr(0, a.rfind(':')));
    if (!map.ok()) {
      last = map.status().Annotate(a);
      continue;
    }
    slot_owner_ = std::move(map).value();
    return Status::Ok();
  }
  return last.Annotate("redis cluster slot map");
}

std::vector<std::string> ClusterClient::Masters() const {
  std::set<std::string> s;
  for (const std::string& a : slot_owner_)
    if (!a.empty()) s.insert(a);
  return {s.begin(), s.end()};
}

Status ClusterClient::Run(std::span<const Command> cmds, std::vector<Reply>* replies, int wait_replicas,
                          int wait_timeout_ms) {
  replies->clear();
  replies->resize(cmds.size());
  std::vector<size_t> pending(cmds.size());
  for (size_t i = 0; i < cmds.size(); ++i) pending[i] = i;
  std::vector<std::string> ask(cmds.size());  // ASK target for the next round only
  const std::string wait_n = std::to_string(wait_replicas), wait_ms = std::to_string(wait_timeout_ms);
  Status last, not_durable;
  for (int round = 0; round <= opts_.max_redirects && !pending.empty(); ++round) {
    if (round > 0 && !last.ok()) {
      // A node failed: let the cluster settle a moment, then ask it again.
      std::this_thread::sleep_for(std::chrono::milliseconds(50 * round));
      (void)RefreshSlots();
    }
    last = Status::Ok();
    std::map<std::string, std::vector<size_t>> by_node;
    for (size_t i : pending) {
      const std::string& to = !ask[i].empty() ? ask[i] : slot_owner_[cmds[i].slot];
      if (to.empty()) {
        last = Unavailable("slot " + std::to_string(cmds[i].slot) + " is served by no master");
        continue;
      }
      by_node[to].push_back(i);
    }
    std::vector<size_t> retry;
    if (!last.ok()) {
      retry = pending;  // a hole in the map: refresh and try all again
      pending.swap(retry);
      continue;
    }
    // Send everything first, then read: the nodes work in parallel.
    std::map<std::string, Connection*> sent;
    for (auto& [addr, idx] : by_node) {
      auto conn = Node(addr);
      if (!conn.ok()) {
        last = conn.status();
        retry.insert(retry.end(), idx.begin(), idx.end());
        continue;
      }
      for (size_t i : idx) {
        if (!ask[i].empty()) (*conn)->Append({"ASKING"});
        (*conn)->Append(cmds[i].argv);
      }
      if (wait_replicas > 0) (*conn)->Append({"WAIT", wait_n, wait_ms});
      Status s = (*conn)->Flush();
      if (!s.ok()) {
        last = s;
        retry.insert(retry.end(), idx.begin(), idx.end());
        continue;
      }
      sent[addr] = *conn;
    }
    for (auto& [addr, conn] : sent) {
      const std::vector<size_t>& idx = by_node[addr];
      bool failed = false;
      for (size_t i : idx) {
        if (failed) {
          retry.push_back(i);
          continue;
        }
        if (!ask[i].empty()) {
          auto a = conn->Read();  // +OK to ASKING
          if (!a.ok()) {
            last = a.status();
            failed = true;
            retry.push_back(i);
            continue;
          }
        }
        auto r = conn->Read();
        if (!r.ok()) {
          last = r.status();
          failed = true;
          retry.push_back(i);
          continue;
        }
        ask[i].clear();
        std::string_view err = ErrorText(r->get());
        if (StartsWith(err, "MOVED ")) {
          slot_owner_[cmds[i].slot] = RedirectTarget(err);
          retry.push_back(i);
        } else if (StartsWith(err, "ASK ")) {
          ask[i] = RedirectTarget(err);
          retry.push_back(i);
        } else if (StartsWith(err, "TRYAGAIN") || StartsWith(err, "CLUSTERDOWN")) {
          last = Unavailable(std::string(err));
          retry.push_back(i);
        } else {
          (*replies)[i] = std::move(r).value();
        }
      }
      if (wait_replicas > 0 && !failed) {
        auto w = conn->Read();
        if (!w.ok()) {
          last = w.status();
          retry.insert(retry.end(), idx.begin(), idx.end());  // unknown whether replicated: resend
        } else if ((*w)->type != REDIS_REPLY_INTEGER || (*w)->integer < wait_replicas) {
          // Stored on the master but not acknowledged by a replica in time:
          // not durable, so not done (the caller keeps the pages). Read the
          // other masters' replies first: a connection must never be left
          // with replies nobody reads, or the next call would take them.
          std::string got = (*w)->type == REDIS_REPLY_INTEGER ? std::to_string((*w)->integer)
                                                               : "an error (" + std::string(ErrorText(w->get())) + ")";
          if (not_durable.ok())
            not_durable = Unavailable("redis node " + addr + ": writes reached " + got + " of " + wait_n +
                                      " replicas within " + wait_ms + " ms");
        }
      }
    }
    pending.swap(retry);
  }
  if (!not_durable.ok()) return not_durable.Annotate("redis cluster");
  if (!pending.empty())
    return (last.ok() ? Unavailable("redirected more than " + std::to_string(opts_.max_redirects) + " times")
                      : last)
        .Annotate("redis cluster");
  return Status::Ok();
}

}  // namespace agile::redis
