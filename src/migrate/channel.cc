#include "migrate/channel.h"

#include <poll.h>
#include <sys/socket.h>

#include <thread>

#include "base/io.h"

namespace agile::migrate {

Status Channel::Send(const std::vector<uint8_t>& frames) {
  std::lock_guard<std::mutex> l(send_mu_);
  if (rate_ > 0) {
    // Token bucket over the whole migration: sleep until the bytes sent so far
    // fit the rate. Starts on the first send.
    auto now = std::chrono::steady_clock::now();
    if (paced_bytes_ == 0) pace_start_ = now;
    paced_bytes_ += frames.size();
    auto due = pace_start_ + std::chrono::microseconds(paced_bytes_ * 1000000 / rate_);
    if (due > now) std::this_thread::sleep_until(due);
  }
  Status s = WriteFull(fd_.get(), frames.data(), frames.size());
  if (s.ok()) sent_.fetch_add(frames.size());
  return s.ok() ? s : s.Annotate("migration connection");
}

Result<wire::FrameHeader> Channel::Receive(std::vector<uint8_t>* payload, int timeout_ms) {
  // Bytes already buffered would not wake poll(): wait only on an empty buffer.
  if (timeout_ms >= 0 && reader_.buffered() == 0) {
    pollfd p{fd_.get(), POLLIN, 0};
    int pr;
    do {
      pr = ::poll(&p, 1, timeout_ms);
    } while (pr < 0 && errno == EINTR);
    if (pr == 0) return Unavailable("migration peer silent for " + std::to_string(timeout_ms) + " ms");
  }
  auto h = reader_.NextInto(payload);
  if (!h.ok()) {
    if (h.status().code() == Code::kNotFound) return Unavailable("migration peer closed the connection");
    return h.status().Annotate("migration connection");
  }
  received_.fetch_add(wire::kFrameHeaderSize + h->length);
  return h;
}

void Channel::Shutdown() { ::shutdown(fd_.get(), SHUT_RDWR); }

}  // namespace agile::migrate
