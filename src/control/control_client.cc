#include "control/control_client.h"

#include "base/json_depth.h"
#include "base/socket.h"

namespace agile::control {
using nlohmann::json;

Code CodeFromName(const std::string& name) {
  for (int c = 0; c <= static_cast<int>(Code::kInternal); ++c)
    if (name == CodeName(static_cast<Code>(c))) return static_cast<Code>(c);
  return Code::kInternal;
}

Result<ControlClient> ControlClient::Connect(const std::string& addr, std::shared_ptr<const tls::Credentials> tls) {
  auto sec = tls::ConnectAddress(addr, std::move(tls));
  if (!sec.ok()) {
    if (sec.status().code() == Code::kPermissionDenied)
      return sec.status().Annotate("agiled at " + addr + " refused our certificate, or we refused its");
    return sec.status().Annotate("cannot reach agiled at " + addr + " (is it running?)");
  }
  return ControlClient(std::move(sec->fd), addr);
}

Result<json> ControlClient::Call(const std::string& op, const json& args,
                                 const std::function<void(const json&)>& on_progress) {
  answered_ = false;
  error_ = nullptr;
  std::string line = json{{"op", op}, {"args", args}}.dump() + "\n";
  AGILE_RETURN_IF_ERROR(WriteFull(fd_.get(), line.data(), line.size()).Annotate("agiled " + addr_));
  json resp;
  for (;;) {
    auto resp_line = reader_.Next();
    if (!resp_line.ok()) return resp_line.status().Annotate("agiled " + addr_ + " closed the connection");
    // The server is a peer like any other: a reply nested a million deep
    // would overflow our stack when copied (base/json_depth.h).
    if (!JsonDepthWithin(*resp_line)) return Corruption("agiled sent a response nested too deeply");
    resp = json::parse(*resp_line, nullptr, false);
    if (resp.is_discarded() || !resp.is_object()) return Corruption("agiled sent a malformed response");
    if (!resp.contains("progress")) break;
    if (on_progress) on_progress(resp["progress"]);
  }
  answered_ = true;
  if (resp.value("ok", false)) return resp.value("result", json::object());
  const json& e = resp.value("error", json::object());
  error_ = e;
  return Status(CodeFromName(e.value("code", "internal")), e.value("message", "unknown error"));
}

}  // namespace agile::control
