#include "offload/redis_swap_store.h"

#include <gnutls/crypto.h>
#include <spdlog/spdlog.h>
#include <sys/random.h>

#include <cerrno>
#include <cstring>
#include <deque>

#include "vm/fault_server.h"

namespace agile::offload {
namespace {

// Pages per FCALL: Redis' Lua unpack() takes at most ~8000 values, and a
// 1 MiB call keeps one group's command from stalling a node for long.
constexpr size_t kPagesPerCall = 256;

std::string Hex(const uint8_t* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    s[2 * i] = d[p[i] >> 4];
    s[2 * i + 1] = d[p[i] & 15];
  }
  return s;
}

std::string Sha1Hex(std::string_view s) {
  uint8_t out[20];
  gnutls_hash_fast(GNUTLS_DIG_SHA1, s.data(), s.size(), out);
  return Hex(out, sizeof out);
}

Result<memd::OwnerToken> RandomToken() {
  uint64_t v[2];
  size_t got = 0;
  while (got < sizeof v) {
    ssize_t r = ::getrandom(reinterpret_cast<uint8_t*>(v) + got, sizeof v - got, 0);
    if (r < 0 && errno != EINTR) return ErrnoStatus("getrandom");
    if (r > 0) got += static_cast<size_t>(r);
  }
  return memd::OwnerToken{1, v[0], v[1]};
}

// An error reply as a Status: the fence's refusal, an ACL refusal, or the
// function library missing on a node.
Status ReplyStatus(const redisReply* r, const std::string& what) {
  std::string_view e = redis::ErrorText(r);
  if (e.empty()) return Status::Ok();
  std::string msg = what + ": " + std::string(e);
  if (e.substr(0, 14) == "AGILE_NOTOWNER" || e.substr(0, 6) == "NOPERM") return PermissionDenied(msg);
  if (e.find("Function not found") != std::string_view::npos)
    return Unsupported(msg + " (load src/redis/agile_fence.lua on every master: docs/redis-store.md)");
  return Internal(msg);
}

}  // namespace

RedisSwapStore::RedisSwapStore(RedisStoreConfig cfg, std::string store_vm_id)
    : cfg_(std::move(cfg)), vm_id_(std::move(store_vm_id)) {
  group_slot_.resize(kRedisGroups);
  for (uint32_t g = 0; g < kRedisGroups; ++g) group_slot_[g] = redis::KeySlot(OwnerKey(g));
}

std::string RedisSwapStore::OwnerKey(uint32_t g) const {
  return "agile:{" + vm_id_ + ":" + std::to_string(g) + "}:owner";
}

std::string RedisSwapStore::DataKey(uint32_t g, const std::string& token_hex) const {
  return "agile:{" + vm_id_ + ":" + std::to_string(g) + "}:pages:" + Sha1Hex("agile-data:" + token_hex);
}

std::string RedisSwapStore::CachedDataKey(uint32_t group, const std::string& token_hex) {
  // Callers hold a connection's mutex, not this one: both threads may ask.
  std::lock_guard<std::mutex> l(keys_mu_);
  if (keys_token_ != token_hex || data_keys_.empty()) {
    data_keys_.clear();
    for (uint32_t g = 0; g < kRedisGroups; ++g) data_keys_.push_back(DataKey(g, token_hex));
    keys_token_ = token_hex;
  }
  return data_keys_[group];
}

std::string RedisSwapStore::TokenHex(const memd::OwnerToken& t) {
  uint64_t v[3] = {t.epoch, t.secret, t.secret_hi};
  return Hex(reinterpret_cast<const uint8_t*>(v), sizeof v);
}

bool RedisSwapStore::claimed() const { return owner_.claimed(); }

std::optional<memd::OwnerToken> RedisSwapStore::owned_token() const { return owner_.owned(); }

void RedisSwapStore::Adopt(memd::OwnerToken token) { owner_.Adopt(token); }

Result<redis::ClusterClient*> RedisSwapStore::Client(Conn& c, bool rate_limited) {
  if (c.client) return c.client.get();
  AGILE_ASSIGN_OR_RETURN(redis::ClusterClient * client,
                         c.Get(rate_limited, cfg_.redial_ms, cfg_.url, [&] { return redis::ClusterClient::Connect(cfg_.cluster); }));
  spdlog::info("swap store {}: connected for VM {} ({} masters)", cfg_.url, vm_id_, client->Masters().size());
  return client;
}

// The commands of one batch of pages, per group (split every kPagesPerCall
// pages), so a call touches one slot and its master gets all of them in one
// pipeline. Two shapes:
//  - fenced (Put): `FCALL agile_put 2 <owner> <data> <token> <index> <page>...`;
//  - checked read (Get): `MULTI`, `FCALL_RO agile_count 2 <owner> <data> <token>`
//    (the fence's check, refused unless the token owns the group), `HMGET
//    <data> <index>...`, `EXEC`: atomic like agile_get, but the pages never
//    pass through Lua, which hashes every byte of every string it is handed
//    (~14% of the servers' CPU on a refault-heavy run: bench/README.md).
class RedisSwapStore::PageCalls {
 public:
  enum class Shape { kFencedPut, kCheckedRead };
  struct Call {
    size_t first = 0;  // its first command in cmds()
    size_t args = 0;   // the command that takes the pages' arguments
    size_t pages = 0;
  };

  PageCalls(RedisSwapStore& s, Shape shape, const memd::OwnerToken& token)
      : s_(s), shape_(shape), token_hex_(TokenHex(token)), open_(kRedisGroups, -1) {}

  // Appends page `index` to its group's open call (opening one if needed);
  // returns the call's number in calls(). The caller adds any further
  // argument of the page (its data) with Arg().
  size_t Add(uint64_t index) {
    uint32_t g = GroupOf(index);
    if (open_[g] < 0 || calls_[static_cast<size_t>(open_[g])].pages >= kPagesPerCall) {
      open_[g] = static_cast<int>(calls_.size());
      Open(g);
    }
    Call& c = calls_[static_cast<size_t>(open_[g])];
    cmds_[c.args].argv.push_back(Keep(std::to_string(index)));
    ++c.pages;
    return static_cast<size_t>(open_[g]);
  }
  void Arg(size_t call, std::string_view a) { cmds_[calls_[call].args].argv.push_back(a); }

  std::vector<redis::Command>& cmds() { return cmds_; }
  const std::vector<Call>& calls() const { return calls_; }

 private:
  void Open(uint32_t g) {
    const std::string& ok = Keep(s_.OwnerKey(g));
    const std::string& dk = Keep(s_.CachedDataKey(g, token_hex_));
    auto push = [&](std::vector<std::string_view> argv) {
      redis::Command cmd;
      cmd.slot = s_.group_slot_[g];
      cmd.argv = std::move(argv);
      cmds_.push_back(std::move(cmd));
      return cmds_.size() - 1;
    };
    Call c;
    if (shape_ == Shape::kFencedPut) {
      c.first = c.args = push({"FCALL", "agile_put", "2", ok, dk, token_hex_});
    } else {
      c.first = push({"MULTI"});
      push({"FCALL_RO", "agile_count", "2", ok, dk, token_hex_});
      c.args = push({"HMGET", dk});
      push({"EXEC"});
    }
    calls_.push_back(c);
  }
  const std::string& Keep(std::string s) { return strings_.emplace_back(std::move(s)); }

  RedisSwapStore& s_;
  const Shape shape_;
  const std::string token_hex_;
  std::deque<std::string> strings_;  // stable addresses for the argv views
  std::vector<redis::Command> cmds_;
  std::vector<Call> calls_;
  std::vector<int> open_;  // per group: its open call, or -1
};

Status RedisSwapStore::ForAllGroups(Conn& c, const std::vector<std::vector<std::string>>& argvs,
                                    std::vector<redis::Reply>* replies, int wait_replicas) {
  AGILE_ASSIGN_OR_RETURN(redis::ClusterClient * client, Client(c, false));
  std::vector<redis::Command> cmds(argvs.size());
  for (size_t g = 0; g < argvs.size(); ++g) {
    cmds[g].slot = group_slot_[g];
    cmds[g].argv.assign(argvs[g].begin(), argvs[g].end());
  }
  return client->Run(cmds, replies, wait_replicas, cfg_.wait_ms);
}

Status RedisSwapStore::Claim() {
  std::lock_guard<std::mutex> l(bulk_conn_.mu);
  if (claimed()) return Status::Ok();
  AGILE_ASSIGN_OR_RETURN(memd::OwnerToken t, RandomToken());
  const std::string th = TokenHex(t);
  std::vector<std::vector<std::string>> argvs;
  for (uint32_t g = 0; g < kRedisGroups; ++g) argvs.push_back({"FCALL", "agile_claim", "1", OwnerKey(g), th});
  std::vector<redis::Reply> replies;
  Status s = ForAllGroups(bulk_conn_, argvs, &replies, cfg_.replicas);
  for (size_t g = 0; s.ok() && g < replies.size(); ++g) s = ReplyStatus(replies[g].get(), "claim group " + std::to_string(g));
  if (!s.ok()) return s.Annotate("claim " + vm_id_ + " in the swap store");
  Adopt(t);
  return Status::Ok();
}

Status RedisSwapStore::Get(Conn& c, const memd::OwnerToken& token, std::span<const uint64_t> idx, uint8_t* out,
                           uint8_t* present, bool rate_limited) {
  AGILE_ASSIGN_OR_RETURN(redis::ClusterClient * client, Client(c, rate_limited));
  // where[call]: the positions in idx of that call's pages, for its reply's elements.
  PageCalls calls(*this, PageCalls::Shape::kCheckedRead, token);
  std::vector<std::vector<size_t>> where;
  for (size_t i = 0; i < idx.size(); ++i) {
    size_t ci = calls.Add(idx[i]);
    if (ci == where.size()) where.emplace_back();
    where[ci].push_back(i);
  }
  std::vector<redis::Reply> replies;
  AGILE_RETURN_IF_ERROR(client->Run(calls.cmds(), &replies).Annotate("swap store " + cfg_.url));
  const std::string what = "get from " + vm_id_;
  for (size_t ci = 0; ci < calls.calls().size(); ++ci) {
    const PageCalls::Call& call = calls.calls()[ci];
    // MULTI's +OK, the two +QUEUED (or a refusal to queue, e.g. by the ACL), then EXEC's answer.
    for (size_t k = call.first; k < call.first + 4; ++k) AGILE_RETURN_IF_ERROR(ReplyStatus(replies[k].get(), what));
    const redisReply* x = replies[call.first + 3].get();
    if (x->type != REDIS_REPLY_ARRAY || x->elements != 2)
      return Unavailable("swap store " + cfg_.url + ": the read transaction was not run (EXEC answered type " +
                         std::to_string(x->type) + "); retrying");
    AGILE_RETURN_IF_ERROR(ReplyStatus(x->element[0], what));  // the fence's check
    const redisReply* r = x->element[1];
    if (r->type != REDIS_REPLY_ARRAY || r->elements != where[ci].size())
      return Corruption("swap store " + cfg_.url + ": HMGET answered " + std::to_string(r->elements) +
                        " values for " + std::to_string(where[ci].size()) + " pages");
    for (size_t k = 0; k < where[ci].size(); ++k) {
      const redisReply* e = r->element[k];
      size_t i = where[ci][k];
      if (e->type == REDIS_REPLY_NIL) {
        present[i] = 0;
        continue;
      }
      if (e->type != REDIS_REPLY_STRING || e->len != memd::kPageSize)
        return Corruption("swap store " + cfg_.url + ": page " + std::to_string(idx[i]) + " of " + vm_id_ +
                          " is not a 4096-byte string");
      std::memcpy(out + i * memd::kPageSize, e->str, memd::kPageSize);
      present[i] = 1;
    }
  }
  return Status::Ok();
}

Status RedisSwapStore::Fetch(std::span<const uint64_t> idx, uint8_t* out, uint8_t* present) {
  std::optional<memd::OwnerToken> owner = owned_token();
  if (!owner)
    return Status(Code::kPermissionDenied,
                  "the VM's swap-store pages are not this host's yet (incoming migration before switchover)");
  std::lock_guard<std::mutex> l(fault_conn_.mu);
  return Get(fault_conn_, *owner, idx, out, present, true);
}

Status RedisSwapStore::FetchBulk(std::span<const uint64_t> idx, uint8_t* out, uint8_t* present) {
  std::optional<memd::OwnerToken> owner = owned_token();
  if (!owner) return PermissionDenied("VM " + vm_id_ + " has no pages in the swap store that this host owns");
  std::lock_guard<std::mutex> l(bulk_conn_.mu);
  return Get(bulk_conn_, *owner, idx, out, present, false);
}

Status RedisSwapStore::Put(std::span<const memd::PageRef> pages) {
  std::optional<memd::OwnerToken> owner = owned_token();
  if (!owner) return PermissionDenied("VM " + vm_id_ + ": store pages before claiming the namespace");
  std::lock_guard<std::mutex> l(bulk_conn_.mu);
  AGILE_ASSIGN_OR_RETURN(redis::ClusterClient * client, Client(bulk_conn_, false));
  PageCalls calls(*this, PageCalls::Shape::kFencedPut, *owner);
  for (const memd::PageRef& p : pages)
    calls.Arg(calls.Add(p.index), std::string_view(reinterpret_cast<const char*>(p.data), memd::kPageSize));
  std::vector<redis::Command>& cmds = calls.cmds();
  std::vector<redis::Reply> replies;
  // WAIT after each master's writes: a page counts as stored (and may be
  // punched from the RAM file) only once a replica has it too.
  AGILE_RETURN_IF_ERROR(client->Run(cmds, &replies, cfg_.replicas, cfg_.wait_ms).Annotate("swap store " + cfg_.url));
  for (size_t ci = 0; ci < replies.size(); ++ci) AGILE_RETURN_IF_ERROR(ReplyStatus(replies[ci].get(), "put to " + vm_id_));
  return Status::Ok();
}

Result<memd::OwnerToken> RedisSwapStore::Transfer(const std::string& new_host) {
  std::lock_guard<std::mutex> l(bulk_conn_.mu);
  std::optional<memd::OwnerToken> owner = owned_token();
  if (!owner) return InvalidArgument("VM " + vm_id_ + " has no pages in the swap store to hand over");
  AGILE_ASSIGN_OR_RETURN(memd::OwnerToken next, RandomToken());
  next.epoch = owner->epoch + 1;
  auto xfer = [&](const memd::OwnerToken& from, const memd::OwnerToken& to) -> Status {
    const std::string fh = TokenHex(from), th = TokenHex(to);
    std::vector<std::vector<std::string>> argvs;
    for (uint32_t g = 0; g < kRedisGroups; ++g)
      argvs.push_back({"FCALL", "agile_xfer", "3", OwnerKey(g), DataKey(g, fh), DataKey(g, th), fh, th});
    std::vector<redis::Reply> replies;
    Status s = ForAllGroups(bulk_conn_, argvs, &replies, cfg_.replicas);
    for (size_t g = 0; s.ok() && g < replies.size(); ++g)
      s = ReplyStatus(replies[g].get(), "transfer group " + std::to_string(g));
    return s;
  };
  Status s = xfer(*owner, next);
  if (!s.ok()) {
    // Before switchover a failure must leave the source whole (invariant 4):
    // hand back the groups already moved. agile_xfer is idempotent both ways.
    Status back = xfer(next, *owner);
    if (!back.ok())
      spdlog::error("swap store {}: VM {}: transfer to {} failed and could not be undone: {}", cfg_.url, vm_id_,
                    new_host, back.ToString());
    return s.Annotate("hand VM " + vm_id_ + "'s swap-store pages to " + new_host);
  }
  owner_.Void();  // the token is the new owner's now
  return next;
}

Status RedisSwapStore::Release() {
  std::optional<memd::OwnerToken> owner = owned_token();
  if (!owner) return Status::Ok();
  std::lock_guard<std::mutex> l(bulk_conn_.mu);
  const std::string th = TokenHex(*owner);
  std::vector<std::vector<std::string>> argvs;
  for (uint32_t g = 0; g < kRedisGroups; ++g)
    argvs.push_back({"FCALL", "agile_release", "2", OwnerKey(g), DataKey(g, th), th});
  std::vector<redis::Reply> replies;
  Status s = ForAllGroups(bulk_conn_, argvs, &replies, 0);
  for (size_t g = 0; s.ok() && g < replies.size(); ++g) s = ReplyStatus(replies[g].get(), "release");
  if (!s.ok()) return s;
  owner_.Void();
  return Status::Ok();
}

void RedisSwapStore::SetTimeouts(const StoreTimeouts& t) {
  // Every wait of a cluster connection (connect, each reply) is bounded by
  // one value; the request bound is the one a vCPU feels.
  cfg_.cluster.conn.timeout_ms = t.request_ms;
}

Result<bool> RedisSwapStore::OwnedHere() {
  if (!owned_token()) return false;
  auto n = StoredPages();
  if (n.ok()) return true;
  if (n.status().code() == Code::kPermissionDenied) return false;  // AGILE_NOTOWNER: another host's now
  return n.status().Annotate("asking the Redis Cluster who owns " + vm_id_);
}

Result<uint64_t> RedisSwapStore::StoredPages() {
  std::optional<memd::OwnerToken> owner = owned_token();
  if (!owner) return uint64_t{0};
  std::lock_guard<std::mutex> l(bulk_conn_.mu);
  const std::string th = TokenHex(*owner);
  std::vector<std::vector<std::string>> argvs;
  for (uint32_t g = 0; g < kRedisGroups; ++g)
    argvs.push_back({"FCALL", "agile_count", "2", OwnerKey(g), DataKey(g, th), th});
  std::vector<redis::Reply> replies;
  AGILE_RETURN_IF_ERROR(ForAllGroups(bulk_conn_, argvs, &replies, 0));
  uint64_t n = 0;
  for (const redis::Reply& r : replies) {
    AGILE_RETURN_IF_ERROR(ReplyStatus(r.get(), "count"));
    if (r->type == REDIS_REPLY_INTEGER) n += static_cast<uint64_t>(r->integer);
  }
  return n;
}

}  // namespace agile::offload
