#include "migrate/channel.h"

#include <poll.h>
#include <sys/socket.h>

#include <thread>

#include "base/io.h"
#include "base/socket.h"

namespace agile::migrate {
namespace {
// How often a wait looks at the interrupt: bounds how long ^C takes.
constexpr int kSliceMs = 100;
}  // namespace

Channel::Channel(UniqueFd fd, int io_timeout_ms)
    : fd_(std::move(fd)),
      io_timeout_ms_(io_timeout_ms),
      reader_(fd_.get(), wire::kMigMagic, wire::kMigVersion, wire::kMigMaxPayload) {
  // The rest of a frame whose first bytes came: each recv waits at most
  // this long (FrameReader reports it as kUnavailable).
  if (io_timeout_ms_ > 0) (void)SetIoTimeouts(fd_.get(), io_timeout_ms_, 0);
}

Status Channel::WriteAll(const uint8_t* p, size_t n, int timeout_ms) {
  auto last_progress = std::chrono::steady_clock::now();
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::send(fd_.get(), p + done, n - done, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r > 0) {
      done += static_cast<size_t>(r);
      last_progress = std::chrono::steady_clock::now();
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return ErrnoStatus("send");
    // The socket is full: the peer (or the link) is not taking bytes.
    if (interrupted_ && interrupted_()) return Unavailable("interrupted while sending (migration cancelled)");
    auto idle = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - last_progress);
    if (timeout_ms > 0 && idle.count() >= timeout_ms)
      return Unavailable("the peer took no byte for " + std::to_string(timeout_ms) + " ms (link down or peer stuck)");
    pollfd pf{fd_.get(), POLLOUT, 0};
    (void)::poll(&pf, 1, kSliceMs);
  }
  return Status::Ok();
}

Status Channel::Send(const std::vector<uint8_t>& frames, int timeout_ms) {
  std::lock_guard<std::mutex> l(send_mu_);
  if (rate_ > 0) {
    // Token bucket over the whole migration: sleep until the bytes sent so far
    // fit the rate. Starts on the first send.
    auto now = std::chrono::steady_clock::now();
    if (paced_bytes_ == 0) pace_start_ = now;
    paced_bytes_ += frames.size();
    auto due = pace_start_ + std::chrono::microseconds(paced_bytes_ * 1000000 / rate_);
    while (due > std::chrono::steady_clock::now()) {
      if (interrupted_ && interrupted_()) return Unavailable("interrupted while pacing (migration cancelled)");
      std::this_thread::sleep_until(std::min(due, std::chrono::steady_clock::now() + std::chrono::milliseconds(kSliceMs)));
    }
  }
  Status s = WriteAll(frames.data(), frames.size(), timeout_ms >= 0 ? timeout_ms : io_timeout_ms_);
  if (s.ok()) sent_.fetch_add(frames.size());
  else broken_ = true;
  return s.ok() ? s : s.Annotate("migration connection");
}

Result<wire::FrameHeader> Channel::Receive(std::vector<uint8_t>* payload, int timeout_ms) {
  // Bytes already buffered would not wake poll(): wait only on an empty buffer.
  if (reader_.buffered() == 0) {
    auto start = std::chrono::steady_clock::now();
    for (;;) {
      if (interrupted_ && interrupted_()) return Unavailable("interrupted while waiting for the peer (migration cancelled)");
      int slice = kSliceMs;
      if (timeout_ms >= 0) {
        auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
        if (waited.count() >= timeout_ms) {
          broken_ = true;
          return Unavailable("migration peer silent for " + std::to_string(timeout_ms) + " ms");
        }
        slice = static_cast<int>(std::min<int64_t>(slice, timeout_ms - waited.count()));
      }
      pollfd p{fd_.get(), POLLIN, 0};
      int pr = ::poll(&p, 1, slice);
      if (pr > 0) break;
      if (pr < 0 && errno != EINTR) {
        broken_ = true;
        return ErrnoStatus("poll").Annotate("migration connection");
      }
    }
  }
  auto h = reader_.NextInto(payload);
  if (!h.ok()) {
    broken_ = true;
    if (h.status().code() == Code::kNotFound) return Unavailable("migration peer closed the connection");
    return h.status().Annotate("migration connection");
  }
  received_.fetch_add(wire::kFrameHeaderSize + h->length);
  return h;
}

void Channel::Shutdown() {
  broken_ = true;
  ::shutdown(fd_.get(), SHUT_RDWR);
}

}  // namespace agile::migrate
