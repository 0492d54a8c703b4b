// Client of agiled's control API (see control_server.h for the format).
// Not thread-safe: one request at a time per client.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "base/fd.h"
#include "base/io.h"
#include "base/status.h"
#include "tls/tls.h"

namespace agile::control {

class ControlClient {
 public:
  // addr: "unix:PATH", "/path/to/agiled.sock" or "HOST:PORT". With tls
  // set, a HOST:PORT connection is mutual TLS with its client certificate.
  static Result<ControlClient> Connect(const std::string& addr,
                                       std::shared_ptr<const tls::Credentials> tls = nullptr);
  // Returns "result" on success; agiled's error code and message otherwise.
  // Interim progress lines go to on_progress (ignored when null).
  Result<nlohmann::json> Call(const std::string& op, const nlohmann::json& args = nlohmann::json::object(),
                              const std::function<void(const nlohmann::json&)>& on_progress = nullptr);
  // Whether the last Call got agiled's final answer; false when it failed on
  // the connection instead (agilectl's "unreachable" vs agiled's own errors).
  bool answered() const { return answered_; }
  // The last Call's "error" object as agiled sent it (code, message and any
  // detail such as vm.migrate's "report"); null after a success.
  const nlohmann::json& error() const { return error_; }
  ControlClient(ControlClient&& o) noexcept : fd_(std::move(o.fd_)), reader_(fd_.get()), addr_(std::move(o.addr_)) {}

 private:
  ControlClient(UniqueFd fd, std::string addr) : fd_(std::move(fd)), reader_(fd_.get()), addr_(std::move(addr)) {}
  UniqueFd fd_;
  LineReader reader_;
  std::string addr_;
  bool answered_ = false;
  nlohmann::json error_;
};

// Maps agiled's error code names back to codes.
Code CodeFromName(const std::string& name);

}  // namespace agile::control
