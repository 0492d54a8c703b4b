// One migration connection between two agileds: whole frames out (from any
// thread, one at a time, optionally paced to a byte rate) and in (one reader
// thread, through wire::FrameReader). Counts bytes on the wire for the report.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

#include "base/fd.h"
#include "base/status.h"
#include "wire/frame.h"
#include "wire/frame_stream.h"
#include "wire/migrate_proto.h"

namespace agile::migrate {

//
// Every wait is bounded (docs/timeouts.md): a write or a read in the middle
// of a frame that moves no byte for io_timeout_ms fails with kUnavailable,
// and a set interrupt (`migrate --cancel`) ends any wait within ~100 ms.
class Channel {
 public:
  // io_timeout_ms <= 0: no bound (tests).
  explicit Channel(UniqueFd fd, int io_timeout_ms = 15000);
  // 0 = unlimited. Pacing applies to Send() of everything.
  void set_rate_limit(uint64_t bytes_per_s) { rate_ = bytes_per_s; }
  // Checked between waits; true ends the wait with kCancelled-style
  // kUnavailable ("interrupted"). Set before the first Send/Receive.
  void set_interrupt(std::function<bool()> interrupted) { interrupted_ = std::move(interrupted); }
  // Sends pre-encoded frames (any number, concatenated). timeout_ms >= 0
  // replaces the io timeout for this call (a last word on a link that may be
  // dead, such as ABORT, is not worth a full timeout).
  Status Send(const std::vector<uint8_t>& frames, int timeout_ms = -1);
  // Blocks for the next frame; timeout_ms < 0 waits for its first byte for
  // ever (but not for the rest of it, nor past an interrupt).
  Result<wire::FrameHeader> Receive(std::vector<uint8_t>* payload, int timeout_ms);
  // Unblocks Receive() and fails Send() from now on.
  void Shutdown();
  // A send or receive failed on the connection itself (an I/O error, a
  // timeout, the peer closing, a bad frame), or Shutdown() was called: a
  // post-copy may then be recovered on a new connection. A cancel is not.
  bool broken() const { return broken_.load(); }
  uint64_t bytes_sent() const { return sent_.load(); }
  uint64_t bytes_received() const { return received_.load(); }
  int fd() const { return fd_.get(); }

 private:
  Status WriteAll(const uint8_t* p, size_t n, int timeout_ms);

  UniqueFd fd_;
  int io_timeout_ms_;
  std::function<bool()> interrupted_;
  wire::FrameReader reader_;  // Receive() only
  std::mutex send_mu_;
  uint64_t rate_ = 0;
  std::chrono::steady_clock::time_point pace_start_{};
  uint64_t paced_bytes_ = 0;
  std::atomic<uint64_t> sent_{0}, received_{0};
  std::atomic<bool> broken_{false};
};

}  // namespace agile::migrate
