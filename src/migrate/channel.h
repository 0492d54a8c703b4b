// One migration connection between two agileds: whole frames out (from any
// thread, one at a time, optionally paced to a byte rate) and in (one reader
// thread, through wire::FrameReader). Counts bytes on the wire for the report.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <vector>

#include "base/fd.h"
#include "base/status.h"
#include "wire/frame.h"
#include "wire/frame_stream.h"
#include "wire/migrate_proto.h"

namespace agile::migrate {

class Channel {
 public:
  explicit Channel(UniqueFd fd)
      : fd_(std::move(fd)), reader_(fd_.get(), wire::kMigMagic, wire::kMigVersion, wire::kMigMaxPayload) {}
  // 0 = unlimited. Pacing applies to Send() of everything.
  void set_rate_limit(uint64_t bytes_per_s) { rate_ = bytes_per_s; }
  // Sends pre-encoded frames (any number, concatenated).
  Status Send(const std::vector<uint8_t>& frames);
  // Blocks for the next frame; timeout_ms < 0 waits forever.
  Result<wire::FrameHeader> Receive(std::vector<uint8_t>* payload, int timeout_ms);
  // Unblocks Receive() and fails Send() from now on.
  void Shutdown();
  uint64_t bytes_sent() const { return sent_.load(); }
  uint64_t bytes_received() const { return received_.load(); }
  int fd() const { return fd_.get(); }

 private:
  UniqueFd fd_;
  wire::FrameReader reader_;  // Receive() only
  std::mutex send_mu_;
  uint64_t rate_ = 0;
  std::chrono::steady_clock::time_point pace_start_{};
  uint64_t paced_bytes_ = 0;
  std::atomic<uint64_t> sent_{0}, received_{0};
};

}  // namespace agile::migrate
