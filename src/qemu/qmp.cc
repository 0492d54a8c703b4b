#include "qemu/qmp.h"

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "base/socket.h"

namespace agile::qemu {

using nlohmann::json;

Result<QmpClient> QmpClient::Connect(const std::string& path, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    auto fd = UnixConnect(path);
    if (fd.ok()) {
      QmpClient c(std::move(fd).value());
      AGILE_ASSIGN_OR_RETURN(json greeting, c.ReadMessage(timeout_ms));
      if (!greeting.contains("QMP")) return Corruption("QMP: unexpected greeting " + greeting.dump());
      AGILE_RETURN_IF_ERROR(c.Execute("qmp_capabilities").status());
      return c;
    }
    if (std::chrono::steady_clock::now() > deadline)
      return fd.status().Annotate("QMP socket not ready after " + std::to_string(timeout_ms) + " ms");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

Result<json> QmpClient::ReadMessage(int timeout_ms) {
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  auto line = reader_.Next();
  if (!line.ok()) {
    if (line.status().message().find("Resource temporarily unavailable") != std::string::npos)
      return Unavailable("QMP: no answer within " + std::to_string(timeout_ms) + " ms");
    return line.status().Annotate("QMP");
  }
  json j = json::parse(*line, nullptr, false);
  if (j.is_discarded()) return Corruption("QMP: not JSON: " + *line);
  return j;
}

Result<json> QmpClient::Execute(const std::string& cmd, const json& args, int timeout_ms) {
  json req = {{"execute", cmd}};
  if (!args.is_null()) req["arguments"] = args;
  std::string line = req.dump() + "\n";
  AGILE_RETURN_IF_ERROR(WriteFull(fd_.get(), line.data(), line.size()).Annotate("QMP " + cmd));
  for (;;) {
    AGILE_ASSIGN_OR_RETURN(json msg, ReadMessage(timeout_ms));
    if (msg.contains("event")) {
      events_.push_back(std::move(msg));
      continue;
    }
    if (msg.contains("error")) {
      return InvalidArgument("QMP " + cmd + ": " + msg["error"].value("desc", msg["error"].dump()));
    }
    if (msg.contains("return")) return msg["return"];
    return Corruption("QMP " + cmd + ": unexpected reply " + msg.dump());
  }
}

std::deque<json> QmpClient::TakeEvents() { return std::exchange(events_, {}); }

}  // namespace agile::qemu
