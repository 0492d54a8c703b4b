// agiled's control API: JSON lines over a unix socket (and optionally TCP).
// Request:  {"op": "vm.start", "args": {...}}
// Response: {"ok": true, "result": {...}} or
//           {"ok": false, "error": {"code": "not-found", "message": "..."}}
// One thread per connection, at most kMaxConnections (more are closed at
// once); requests on a connection are answered in order. A request line is
// capped at 1 MiB and 64 levels of JSON nesting.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/fd.h"
#include "base/status.h"

namespace agile::control {

// `progress` sends an interim {"progress": {...}} line to the client before
// the final response (long operations such as migrations).
using Progress = std::function<void(const nlohmann::json&)>;
using Handler =
    std::function<Result<nlohmann::json>(const std::string& op, const nlohmann::json& args, const Progress& progress)>;
// A connection that does not start with '{' (the migration protocol).
using BinaryHandler = std::function<void(UniqueFd conn)>;

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
