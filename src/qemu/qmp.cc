#include "qemu/qmp.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "base/json_depth.h"
#include "base/socket.h"

namespace agile::qemu {

using nlohmann::json;

namespace {

// A peer's text in an error message: cut, so a huge reply is not copied around.
std::string Excerpt(std::string_view s) {
  constexpr size_t kMax = 200;
  return s.size() <= kMax ? std::string(s) : std::string(s.substr(0, kMax)) + "...";
}

}  // namespace

Result<QmpMessage> ParseQmpMessage(std::string_view line) {
  if (line.size() > kMaxQmpLine) return Corruption("QMP: reply longer than " + std::to_string(kMaxQmpLine) + " bytes");
  if (!JsonDepthWithin(line)) return Corruption("QMP: reply nested deeper than " + std::to_string(kMaxJsonDepth));
  json j = json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Corruption("QMP: not a JSON object: " + Excerpt(line));
  QmpMessage m;
  if (auto id = j.find("id"); id != j.end() && id->is_number_unsigned()) m.id = id->get<uint64_t>();
  if (auto it = j.find("QMP"); it != j.end()) {
    m.kind = QmpMessage::Kind::kGreeting;
    m.body = std::move(*it);
  } else if (j.contains("event")) {
    m.kind = QmpMessage::Kind::kEvent;
    m.body = std::move(j);
  } else if (auto r = j.find("return"); r != j.end()) {
    m.kind = QmpMessage::Kind::kReturn;
    m.body = std::move(*r);
  } else if (auto e = j.find("error"); e != j.end()) {
    m.kind = QmpMessage::Kind::kError;
    m.body = std::move(*e);
  } else {
    return Corruption("QMP: unexpected message: " + Excerpt(line));
  }
  return m;
}

Result<QmpClient> QmpClient::Connect(const std::string& path, int timeout_ms, int qemu_pidfd) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    if (qemu_pidfd >= 0) {
      // A pidfd is readable once its process exited, reaped or not (a QEMU
      // whose agiled died stays a zombie until someone reaps it).
      pollfd p{qemu_pidfd, POLLIN, 0};
      if (::poll(&p, 1, 0) > 0) return Unavailable("QEMU exited; its QMP socket " + path + " will never answer");
    }
    auto fd = UnixConnect(path);
    if (fd.ok()) {
      QmpClient c(std::move(fd).value());
      AGILE_ASSIGN_OR_RETURN(QmpMessage greeting, c.ReadMessage(timeout_ms));
      if (greeting.kind != QmpMessage::Kind::kGreeting) return Corruption("QMP: the first message is not a greeting");
      AGILE_RETURN_IF_ERROR(c.Execute("qmp_capabilities").status());
      return c;
    }
    if (std::chrono::steady_clock::now() > deadline)
      return fd.status().Annotate("QMP socket not ready after " + std::to_string(timeout_ms) + " ms");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

Result<QmpMessage> QmpClient::ReadMessage(int timeout_ms) {
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  read_timed_out_ = false;
  auto line = reader_.Next();
  if (!line.ok()) {
    // SO_RCVTIMEO expiring shows as EAGAIN; anything else (EOF, a reset)
    // is QEMU gone or going, and says so.
    if (line.status().message().find("Resource temporarily unavailable") != std::string::npos) {
      read_timed_out_ = true;
      return Unavailable("QMP: no answer within " + std::to_string(timeout_ms) + " ms");
    }
    return line.status().Annotate("QMP");
  }
  return ParseQmpMessage(*line);
}

namespace {
constexpr std::string_view kNoAnswer = ": no answer within ";  // Execute's timeout, as QmpTimedOut knows it
}  // namespace

bool QmpTimedOut(const Status& s) {
  return s.code() == Code::kUnavailable && s.message().find(kNoAnswer) != std::string::npos;
}

Result<json> QmpClient::Execute(const std::string& cmd, const json& args, int timeout_ms) {
  uint64_t id = next_id_++;
  json req = {{"execute", cmd}, {"id", id}};
  if (!args.is_null()) req["arguments"] = args;
  std::string line = req.dump() + "\n";
  // The whole command is bounded, not each line: a QEMU sending events but
  // never the reply still times out (docs/timeouts.md).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  timeval stv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  ::setsockopt(fd_.get(), SOL_SOCKET, SO_SNDTIMEO, &stv, sizeof(stv));  // a QEMU that stopped reading
  // kInvalidArgument is kept for QEMU's own refusal (below): an I/O error
  // that errno happens to map to it (EINVAL) says nothing of the command's fate.
  auto unknown = [](Status s) {
    return s.code() == Code::kInvalidArgument ? Status(Code::kInternal, s.message()) : s;
  };
  if (Status w = WriteFull(fd_.get(), line.data(), line.size()); !w.ok()) return unknown(w.Annotate("QMP " + cmd));
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return Unavailable("QMP " + cmd + std::string(kNoAnswer) + std::to_string(timeout_ms) + " ms");
    auto got = ReadMessage(static_cast<int>(left.count()));
    if (!got.ok() && read_timed_out_)
      return Unavailable("QMP " + cmd + std::string(kNoAnswer) + std::to_string(timeout_ms) + " ms");
    if (!got.ok()) {
      std::string_view why = got.status().message();
      if (why.starts_with("QMP: ")) why.remove_prefix(5);  // ReadMessage's own context, said once
      return unknown(Status(got.status().code(), "QMP " + cmd + ": " + std::string(why)));
    }
    QmpMessage msg = std::move(got).value();
    switch (msg.kind) {
      case QmpMessage::Kind::kEvent:
        if (events_.size() >= kMaxQmpEvents) events_.pop_front();
        events_.push_back(std::move(msg.body));
        continue;
      case QmpMessage::Kind::kGreeting:
        return Corruption("QMP " + cmd + ": a second greeting");
      case QmpMessage::Kind::kReturn:
      case QmpMessage::Kind::kError:
        // QEMU echoes our id; a reply with another id answers an earlier
        // command that timed out. An error without an id is QEMU refusing the
        // request line itself (it could not read the id).
        if (msg.id ? *msg.id != id : msg.kind == QmpMessage::Kind::kReturn) continue;
        if (msg.kind == QmpMessage::Kind::kError) {
          std::string desc = msg.body.is_object() && msg.body.contains("desc") && msg.body["desc"].is_string()
                                 ? msg.body["desc"].get<std::string>()
                                 : Excerpt(msg.body.dump());
          return InvalidArgument("QMP " + cmd + ": " + desc);
        }
        return std::move(msg.body);
    }
  }
}

std::deque<json> QmpClient::TakeEvents() { return std::exchange(events_, {}); }

}  // namespace agile::qemu
