// Client of agile-memd, used by agiled. Large PUT/GET/DELETE calls are split
// at the server's batch limit and pipelined: requests stream out while
// responses stream back, never one round trip per batch. A single small GET
// (a refault plus a few prefetched pages) is one send(), then the reply is
// polled for briefly before sleeping (MemdClientOptions::busy_poll).
//
// Errors: a request the server refuses returns its status (kPermissionDenied,
// kResourceExhausted when the store's capacity is used up, kNoSpace when the
// disk under its data directory is full, kCorruption for a page failing its checksum, ...) and
// the connection stays usable; a broken connection or a malformed reply makes
// this and every later call fail with kUnavailable: connect a new client.
//
// Not thread-safe: use one client per thread, or guard a shared one with a mutex.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/fd.h"
#include "base/status.h"
#include "wire/frame_stream.h"
#include "wire/memd_proto.h"
#include "tls/tls.h"

namespace agile::memd {

struct MemdClientOptions {
  // While waiting for a response, poll this long before sleeping in recv():
  // a refault's round trip is then not paid again in thread wake-up time
  // (tens of microseconds on a VM). Costs at most this much CPU per call.
  std::chrono::microseconds busy_poll{50};
  // Set: connect with mutual TLS; the server then knows this host by its
  // certificate, whose name must be host_id.
  std::shared_ptr<const tls::Credentials> tls;
  // docs/timeouts.md. Connect: TCP connect (TLS handshake at least 10 s) and
  // the HELLO answer. Request: any wait of a call (a reply, room to send)
  // that sees no byte move for this long breaks the connection (kUnavailable).
  // It bounds a store that went silent, not a call's total time.
  int connect_timeout_ms = 3000;
  int request_timeout_ms = 10000;
  // > 0: TCP keepalive and TCP_USER_TIMEOUT (the kernel's own bound on
  // unacknowledged data) on the connection.
  int tcp_user_timeout_ms = 10000;
};

class MemdClient {
 public:
  // addr is "HOST:PORT" (or "unix:PATH"); host_id names this host to the
  // server (HELLO) and is the identity ownership is checked against.
  static Result<std::unique_ptr<MemdClient>> Connect(const std::string& addr, const std::string& host_id,
                                                     MemdClientOptions opts = {});

  // Creates vm's namespace owned by this host; keep the token safe.
  Result<OwnerToken> Claim(std::string_view vm);
  // Stores pages (4096 bytes each). Each batch is all-or-nothing, the call as
  // a whole is not: after an error some batches may be stored. PUT is
  // idempotent, so retrying the call is safe.
  Status Put(std::string_view vm, OwnerToken token, std::span<const PageRef> pages);
  // For each i: copies page indexes[i] into out[i] and sets present[i] = 1,
  // or sets present[i] = 0 and leaves out[i] alone. All three spans have the
  // same length. On error, present[] says nothing and any out[i] may have
  // been written: pages are received straight into out[] and verified after.
  Status Get(std::string_view vm, OwnerToken token, std::span<const uint64_t> indexes,
             std::span<uint8_t* const> out, std::span<uint8_t> present);
  // Returns how many of the pages existed.
  Result<uint64_t> Delete(std::string_view vm, OwnerToken token, std::span<const uint64_t> indexes);
  // Hands vm to new_host; the returned token is for new_host, and `token`
  // stops working at once.
  Result<OwnerToken> Transfer(std::string_view vm, OwnerToken token, std::string_view new_host);
  // Drops vm's namespace; returns how many pages were freed.
  Result<uint64_t> Release(std::string_view vm, OwnerToken token);
  Result<StatReply> Stat();
  // Re-attaches to vm with the token this host already holds (after agiled
  // or agile-memd restarted) and learns which of its pages the store lost.
  Result<ReclaimReply> Reclaim(std::string_view vm, OwnerToken token);

  const std::string& host_id() const { return host_id_; }
  uint32_t max_batch_pages() const { return max_batch_; }

 private:
  // Encodes request i of a pipelined call, with the given request id.
  using Encode = std::function<void(size_t i, uint64_t id, std::vector<uint8_t>* out)>;
  // Consumes the ok response to request i; an error here is a malformed reply.
  using Handle = std::function<Status(size_t i, const ResponseView& r)>;
  // Reads the response to request i (id) itself, instead of ReadOne.
  using Receive = std::function<Status(size_t i, uint64_t id, Status* refusal)>;

  MemdClient(UniqueFd fd, std::string host_id, int request_timeout_ms);
  // Sends n requests of one type and hands their ok responses, in order, to
  // handle. Returns the first refusal, or the connection's failure.
  Status Pipeline(MsgType type, size_t n, const Encode& encode, const Handle& handle,
                  const Receive* receive = nullptr);
  Status ReadOne(MsgType type, uint64_t id, size_t i, const Handle& handle, Status* refusal);
  // The GET fast path: an ok reply's pages are received straight into out[]
  // (see Get); anything else goes to ReadOne with `handle`.
  Status ReadGetReply(uint64_t id, std::span<uint8_t* const> out, std::span<uint8_t> present, const Handle& handle,
                      size_t i, Status* refusal);
  Status Broken(const Status& why);
  size_t Batches(size_t n) const { return (n + max_batch_ - 1) / max_batch_; }

  UniqueFd fd_;
  std::string host_id_;
  wire::FrameReader reader_;
  std::vector<uint8_t> wbuf_;  // reused, so a small request allocates nothing
  std::vector<iovec> iov_;     // reused by ReadGetReply
  uint64_t next_id_ = 1;
  uint32_t max_batch_ = kMaxBatchPages;
  int request_timeout_ms_;
  Status broken_;
};

}  // namespace agile::memd
