// A minimal QMP client: capabilities handshake, synchronous commands,
// events kept aside. One command at a time; not thread-safe (callers lock).
#pragma once

#include <deque>
#include <nlohmann/json.hpp>
#include <string>

#include "base/fd.h"
#include "base/io.h"
#include "base/status.h"

namespace agile::qemu {

class QmpClient {
 public:
  // Connects to QEMU's QMP unix socket, retrying until timeout_ms (QEMU
  // creates it a little after start), and negotiates capabilities.
  static Result<QmpClient> Connect(const std::string& path, int timeout_ms);

  // Runs a command; the "return" member on success, QEMU's error text otherwise.
  Result<nlohmann::json> Execute(const std::string& cmd, const nlohmann::json& args = nullptr,
                                 int timeout_ms = 10000);

  // Events received so far (oldest first), drained.
  std::deque<nlohmann::json> TakeEvents();

  QmpClient(QmpClient&&) noexcept = default;

 private:
  explicit QmpClient(UniqueFd fd) : fd_(std::move(fd)), reader_(fd_.get()) {}
  Result<nlohmann::json> ReadMessage(int timeout_ms);
  UniqueFd fd_;
  LineReader reader_;
  std::deque<nlohmann::json> events_;
};

}  // namespace agile::qemu
