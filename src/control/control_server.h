// agiled's control API: JSON lines over a unix socket (and optionally TCP).
// Request:  {"op": "vm.start", "args": {...}}
// Response: {"ok": true, "result": {...}} or
//           {"ok": false, "error": {"code": "not-found", "message": "..."}}
// One thread per connection, at most kMaxConnections (more are closed at
// once); requests on a connection are answered in order. A request line is
// capped at 1 MiB and 64 levels of JSON nesting.
// A TCP listener may require mutual TLS (docs/security.md): the handshake
// runs first, and the peer's certificate name (checked against the allow
// list) is the Caller's identity for the JSON ops and the migration receiver.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/fd.h"
#include "base/status.h"
#include "tls/tls.h"

namespace agile::control {

// Who is on the other end of a connection.
struct Caller {
  bool local = false;    // the unix socket: root on this machine (the socket is root-only)
  std::string identity;  // TCP with TLS: the verified client certificate's name; else ""
  std::string Describe() const { return local ? "local" : identity.empty() ? "unauthenticated tcp" : identity; }
};

// How a listener's connections are secured.
struct ListenerOptions {
  bool local = false;  // a unix socket
  std::shared_ptr<const tls::Credentials> tls;  // set: mutual TLS required
  std::vector<std::string> allow;  // with tls: certificate names let in (empty: any the CA signed)
  bool warn_insecure = false;      // log a warning for every (unauthenticated) connection
  // TCP listeners: keepalive and TCP_USER_TIMEOUT on every connection
  // (incoming migrations; docs/timeouts.md). 0: left as the kernel sets them.
  int tcp_user_timeout_ms = 0;
  int keepalive_idle_s = 5;
  int keepalive_interval_s = 2;
};

// `progress` sends an interim {"progress": {...}} line to the client before
// the final response (long operations such as migrations).
using Progress = std::function<void(const nlohmann::json&)>;
// What a handler answers: a result, or an error that may carry more than code
// and message - `detail`'s keys are added to the response's "error" object
// (vm.migrate: {"report": {...}}).
struct Reply {
  Reply(Result<nlohmann::json> r) : result(std::move(r)) {}  // NOLINT: implicit by design
  Reply(Status s) : result(std::move(s)) {}                   // NOLINT: implicit by design
  Reply(Status s, nlohmann::json error_detail) : result(std::move(s)), detail(std::move(error_detail)) {}
  Result<nlohmann::json> result;
  nlohmann::json detail;  // an object, or null
};
using Handler = std::function<Reply(const std::string& op, const nlohmann::json& args, const Progress& progress,
                                    const Caller& caller)>;
// A connection that does not start with '{' (the migration protocol).
using BinaryHandler = std::function<void(UniqueFd conn, const Caller& caller)>;

// One request line, decoded: kInvalidArgument unless it is a JSON object
// (at most kMaxJsonDepth deep) with a string "op"; args default to {}.
struct ControlRequest {
  std::string op;
  nlohmann::json args = nlohmann::json::object();
};
Result<ControlRequest> ParseControlRequest(std::string_view line);

class ControlServer {
 public:
  static constexpr size_t kMaxConnections = 64;
  explicit ControlServer(Handler h, BinaryHandler b = nullptr) : handler_(std::move(h)), binary_(std::move(b)) {}
  ~ControlServer();
  // Starts accepting on an already-listening socket.
  void Serve(UniqueFd listen_fd, ListenerOptions opts);
  void Shutdown();

 private:
  void AcceptLoop(int fd, const ListenerOptions* opts);
  void ServeConnection(UniqueFd conn, const ListenerOptions& opts);
  Handler handler_;
  BinaryHandler binary_;
  std::atomic<bool> stop_{false};
  std::vector<UniqueFd> listeners_;
  std::vector<std::unique_ptr<ListenerOptions>> listener_opts_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::vector<int> conns_;
  std::condition_variable idle_;  // signalled when a connection thread ends
};

}  // namespace agile::control
