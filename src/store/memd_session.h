// The protocol logic of one agile-memd connection, without sockets: turns a
// verified request frame into its response frame, against a PageStore. The
// connection's identity is the host id of its HELLO; ownership checks use it.
// Not thread-safe: one session per connection, driven by one thread.
// ServerCounters is shared by all sessions and thread-safe.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "wire/memd_proto.h"
#include "store/page_store.h"
#include "store/reply_batch.h"

namespace agile::memd {

struct ServerCounters {
  std::array<std::atomic<uint64_t>, 10> requests{};  // by MsgType value
  std::atomic<uint64_t> errors{0};                  // error responses
  std::atomic<uint64_t> permission_denied{0};
  std::atomic<uint64_t> store_full{0};
  std::atomic<uint64_t> no_space{0};                // the data directory's disk is full
  std::atomic<uint64_t> protocol_errors{0};         // malformed frames (connection closed)
  std::atomic<uint64_t> pages_put{0};
  std::atomic<uint64_t> pages_got{0};
  std::atomic<uint64_t> pages_absent{0};
  std::atomic<uint64_t> pages_deleted{0};
  std::atomic<uint64_t> connections{0};
  std::atomic<uint64_t> connections_open{0};
  std::atomic<uint64_t> connections_refused{0};      // over MemdServerOptions::max_connections
  // Time to handle one request (decode, store, encode; not the network), by
  // MsgType value: samples per bucket of kLatencyBoundsUs, the last above all.
  static constexpr std::array<double, 10> kLatencyBoundsUs = {5, 10, 25, 50, 100, 250, 500, 1000, 5000, 25000};
  struct Latency {
    std::array<std::atomic<uint64_t>, kLatencyBoundsUs.size() + 1> buckets{};
    std::atomic<uint64_t> sum_ns{0};
    void Record(uint64_t ns) {
      size_t b = 0;
      while (b < kLatencyBoundsUs.size() && kLatencyBoundsUs[b] * 1000 < static_cast<double>(ns)) ++b;
      buckets[b].fetch_add(1, std::memory_order_relaxed);
      sum_ns.fetch_add(ns, std::memory_order_relaxed);
    }
  };
  std::array<Latency, 10> latency{};

  std::vector<std::pair<std::string, uint64_t>> Snapshot() const;
};

class MemdSession {
 public:
  // authenticated: the TLS peer's certificate name, which HELLO must then
  // say; "" on an unauthenticated connection (HELLO's host id is believed).
  MemdSession(PageStore* store, ServerCounters* counters, std::string peer, std::string authenticated = "");

  // Appends the response to one frame to *out (a GET's pages as pinned
  // slots, not copies). An error return means the frame was malformed: the
  // caller reports it and closes the connection.
  Status Handle(uint16_t type, const uint8_t* payload, size_t len, ReplyBatch* out);

  // Whether a request since the last call changed the store: its reply
  // must wait for PageStore::WaitDurable before it is sent.
  bool TakeWrote() { return std::exchange(wrote_, false); }

  // Builds GET replies by copying the pages into the reply (the way before
  // they were sent from the slots): kept only so memd_bench can compare the
  // two in one run on a shared machine.
  void set_copy_gets(bool on) { copy_gets_ = on; }

  // "host-id@peer" once identified, else the peer address: for logs.
  std::string Describe() const;

 private:
  void Dispatch(MsgType type, uint64_t id, const RequestBody& body, std::vector<uint8_t>* out);
  void HandleGet(uint64_t id, const GetRequest& r, ReplyBatch* out);
  // Counts and logs an error answer to a request; returns it for chaining.
  const Status& Failed(MsgType t, const Status& st);

  PageStore* store_;
  ServerCounters* counters_;
  std::string peer_;
  std::string authenticated_;
  std::string host_;  // empty until HELLO
  bool wrote_ = false;
  bool copy_gets_ = false;
  std::vector<uint8_t> present_;  // a GET's presence flags (reused)
};

}  // namespace agile::memd
