// A minimal QMP client: capabilities handshake, synchronous commands,
// events kept aside. One command at a time; not thread-safe (callers lock).
//
// QEMU is a peer we do not trust blindly: every command carries an "id" and
// only the reply echoing it answers the command (a late reply to a command
// that timed out is skipped), a reply line is capped at kMaxQmpLine bytes and
// kMaxJsonDepth levels of nesting, and at most kMaxQmpEvents events are kept.
#pragma once

#include <cstdint>
#include <deque>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>
#include <string>

#include "base/fd.h"
#include "base/io.h"
#include "base/status.h"

namespace agile::qemu {

constexpr size_t kMaxQmpLine = 1u << 20;
constexpr size_t kMaxQmpEvents = 256;

// One line from QEMU, classified.
struct QmpMessage {
  enum class Kind { kGreeting, kEvent, kReturn, kError };
  Kind kind = Kind::kReturn;
  std::optional<uint64_t> id;  // a reply's "id", when it is a number
  nlohmann::json body;         // greeting: "QMP"; event: the message; return: "return"; error: "error"
};

// Decodes one QMP line: kCorruption for anything but a JSON object that is a
// greeting, an event, a return or an error (too deep, too long, not JSON).
Result<QmpMessage> ParseQmpMessage(std::string_view line);

// QEMU answered the command with an error (see QmpClient::Execute).
inline bool QmpRefused(const Status& s) { return s.code() == Code::kInvalidArgument; }

// The command went out and QEMU said nothing within the timeout: it is still
// in QEMU's queue and runs once QEMU's main loop is free (a late answer is
// skipped by its id), unlike a monitor that closed under it (QEMU gone).
bool QmpTimedOut(const Status& s);

class QmpClient {
 public:
  // Connects to QEMU's QMP unix socket, retrying until timeout_ms (QEMU
  // creates it a little after start), and negotiates capabilities. qemu_pidfd
  // (optional): the QEMU's pidfd; once it is readable QEMU has exited and the
  // wait ends at once instead of running out the timeout.
  static Result<QmpClient> Connect(const std::string& path, int timeout_ms, int qemu_pidfd = -1);

  // Runs a command; the "return" member on success. kInvalidArgument (with
  // QEMU's error text) means QEMU answered this command with an error: it
  // refused it. Any other error (no answer, a broken socket) leaves the
  // command's fate unknown: it may have been executed.
  Result<nlohmann::json> Execute(const std::string& cmd, const nlohmann::json& args = nullptr,
                                 int timeout_ms = 10000);

  // Events received so far (oldest first, at most kMaxQmpEvents), drained.
  std::deque<nlohmann::json> TakeEvents();

  QmpClient(QmpClient&&) noexcept = default;

 private:
  explicit QmpClient(UniqueFd fd) : fd_(std::move(fd)), reader_(fd_.get(), kMaxQmpLine) {}
  Result<QmpMessage> ReadMessage(int timeout_ms);
  UniqueFd fd_;
  LineReader reader_;
  std::deque<nlohmann::json> events_;
  uint64_t next_id_ = 1;
  bool read_timed_out_ = false;  // the last ReadMessage failed for want of an answer in time
};

}  // namespace agile::qemu
