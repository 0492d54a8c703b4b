// agile-memd's TCP front end: accepts connections and serves each on its own
// thread (connections are few: one or two per agiled). Requests on a
// connection are handled in arrival order, so pipelined requests get their
// responses in request order. A malformed frame gets a protocol-error frame
// and the connection is closed; the server and other connections go on.
// Thread-safe: Stop() may be called from any thread but a connection's own;
// the destructor stops.
#pragma once

#include <chrono>
#include <list>
#include <memory>
#include <mutex>
#include <thread>

#include "base/fd.h"
#include "base/socket.h"
#include "base/status.h"
#include "store/memd_session.h"
#include "store/page_store.h"
#include "tls/tls.h"

namespace agile::memd {

struct MemdServerOptions {
  // After answering, keep polling the connection this long before sleeping
  // in recv(): an agiled waiting on a refault sends its next request soon,
  // and a sleeping thread takes tens of microseconds to wake on a VM. 0: never spin.
  std::chrono::microseconds busy_poll{50};
  // Set: every connection must complete mutual TLS first, and its host id
  // (HELLO) must be its certificate's name. Unset: HELLO's word is taken.
  std::shared_ptr<const tls::Credentials> tls;
  // Log a warning for each connection (an unauthenticated listener off loopback).
  bool warn_insecure = false;
  // Open connections (one thread each) beyond this are closed at accept, with
  // a log line: a peer that opens sockets in a loop costs its own attempts,
  // not the store's threads. An agiled keeps one or two.
  size_t max_connections = 256;
  // memd_bench's before/after only: GET replies copied (MemdSession::set_copy_gets).
  bool copy_gets = false;
};

class MemdServer {
 public:
  // Listens on `listen` (port 0 picks a free port) and starts accepting.
  // The store must outlive the server.
  static Result<std::unique_ptr<MemdServer>> Start(PageStore* store, const HostPort& listen,
                                                   MemdServerOptions opts = {});
  ~MemdServer();
  MemdServer(const MemdServer&) = delete;
  MemdServer& operator=(const MemdServer&) = delete;

  // The bound address, with the real port.
  const HostPort& address() const { return address_; }
  // The request, page and error counters (metrics); live, read with relaxed loads.
  const ServerCounters& counters() const { return counters_; }
  // Closes the listener and every connection, and joins all threads. Idempotent.
  void Stop();

 private:
  struct Conn {
    UniqueFd fd;  // closed only after the thread is joined, so shutdown() never hits a reused fd
    std::string peer;
    std::thread thread;
    std::atomic<bool> done{false};
  };
  MemdServer(PageStore* store, UniqueFd listen_fd, HostPort address, MemdServerOptions opts);
  void AcceptLoop();
  void Serve(Conn* c);
  void ReapFinished();

  PageStore* store_;
  const MemdServerOptions opts_;
  UniqueFd listen_fd_;
  HostPort address_;
  ServerCounters counters_;
  std::thread accept_thread_;

  std::mutex mu_;  // guards conns_ and stopping_
  std::list<std::unique_ptr<Conn>> conns_;
  bool stopping_ = false;
};

}  // namespace agile::memd
