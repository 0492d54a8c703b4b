// agiled's control API: JSON lines over a unix socket (and optionally TCP).
// Request:  {"op": "vm.start", "args": {...}}
// Response: {"ok": true, "result": {...}} or
//           {"ok": false, "error": {"code": "not-found", "message": "..."}}
// One thread per connection; requests on a connection are answered in order.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "base/fd.h"
#include "base/status.h"

namespace agile::control {

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
using Handler = std::function<Reply(const std::string& op, const nlohmann::json& args, const Progress& progress)>;
// A connection that does not start with '{' (the migration protocol).
using BinaryHandler = std::function<void(UniqueFd conn)>;

class ControlServer {
 public:
  explicit ControlServer(Handler h, BinaryHandler b = nullptr) : handler_(std::move(h)), binary_(std::move(b)) {}
  ~ControlServer();
  // Starts accepting on an already-listening socket.
  void Serve(UniqueFd listen_fd);
  void Shutdown();

 private:
  void AcceptLoop(int fd);
  void ServeConnection(UniqueFd conn);
  Handler handler_;
  BinaryHandler binary_;
  std::atomic<bool> stop_{false};
  std::vector<UniqueFd> listeners_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::vector<int> conns_;
  std::condition_variable idle_;  // signalled when a connection thread ends
};

}  // namespace agile::control
