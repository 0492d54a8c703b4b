// One connection to one Redis node: RESP commands out, replies in (parsed by
// libhiredis' reader; hiredis 0.14 in Debian 12 has no TLS, so the socket is
// ours: plain TCP, or our GnuTLS layer's plaintext end of a mutual-TLS link
// to the node's tls-port, exactly as agiled's other links).
//
// Pipelining: Append() any number of commands, Flush() them in one write,
// then Read() one reply each, in order. Every wait is bounded by timeout_ms;
// a timeout or a broken socket makes this and every later call fail with
// kUnavailable (open a new connection). An error *reply* is a reply, not a
// failure: the caller inspects it.
//
// Not thread-safe: one owner at a time.
#pragma once

#include <hiredis/hiredis.h>

#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "base/fd.h"
#include "base/status.h"
#include "tls/tls.h"

namespace agile::redis {

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

struct ConnOptions {
  std::string user, password;  // empty user: no AUTH
  std::shared_ptr<const tls::Credentials> tls;
  int timeout_ms = 2000;
  // While waiting for a reply, poll the socket this long before sleeping in
  // poll(): waking a sleeping thread costs 35-40 us on this machine's VMs,
  // more than a refault's whole round trip to Redis (as MemdClientOptions).
  int busy_poll_us = 50;
};

// Appends one command in RESP (an array of bulk strings) to out.
void AppendCommand(std::string* out, std::span<const std::string_view> argv);

// "ERR ..."-style text of an error reply, or "" when r is not an error.
std::string_view ErrorText(const redisReply* r);

class Connection {
 public:
  static Result<std::unique_ptr<Connection>> Open(const std::string& addr, const ConnOptions& opts);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void Append(std::span<const std::string_view> argv) { AppendCommand(&wbuf_, argv); }
  void Append(std::initializer_list<std::string_view> argv) { Append(std::span(argv.begin(), argv.size())); }
  Status Flush();
  Result<Reply> Read();
  // Append + Flush + Read.
  Result<Reply> Call(std::initializer_list<std::string_view> argv);

  const std::string& addr() const { return addr_; }
  bool broken() const { return !broken_.ok(); }

 private:
  Connection(UniqueFd fd, std::string addr, int timeout_ms, int busy_poll_us);
  Status Broken(const Status& why);

  UniqueFd fd_;
  std::string addr_;
  int timeout_ms_;
  int busy_poll_us_;
  redisReader* reader_;
  std::string wbuf_;
  Status broken_;
};

}  // namespace agile::redis
