// Frames over a stream socket: a buffered reader (one recv() usually brings a
// whole reply or several pipelined requests) and SIGPIPE-free senders.
// A FrameReader belongs to one thread; it does not own the fd.
#pragma once

#include <sys/uio.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/status.h"
#include "wire/frame.h"

namespace agile::memd {

struct Frame {
  wire::FrameHeader header;
  const uint8_t* payload = nullptr;  // header.length bytes, valid until the next Next()/ReadAvailable()
};

// The header and first bytes of a frame not yet consumed (see Peek).
struct FramePrefix {
  wire::FrameHeader header;
  const uint8_t* payload = nullptr;  // the first `len` payload bytes, NOT yet verified
  size_t len = 0;                    // min(asked, header.length)
};

class FrameReader {
 public:
  FrameReader(int fd, uint32_t magic, uint16_t version, uint32_t max_payload);

  // Blocks until one whole frame is buffered, checks header and checksum,
  // and returns it. kNotFound: the peer closed between frames. kCorruption:
  // bad magic, oversize length, bad checksum, or EOF inside a frame.
  // kUnsupported: another protocol version. After an error the stream is
  // out of sync: close it.
  Result<Frame> Next();

  // Reading a frame in two steps, so the bulk of a large payload lands in its
  // final place (the caller's buffers) instead of being received here and
  // copied again. Peek blocks until the next frame's header (checked as in
  // Next) and its first min(want, length) payload bytes are buffered, and
  // consumes nothing: Next() may still follow. The prefix is unverified: use
  // it only to decide where the rest goes.
  Result<FramePrefix> Peek(size_t want);
  // After Peek(want) returned p: receives the remaining header.length - p.len
  // payload bytes into `rest` (whose sizes must add up to exactly that),
  // verifies the checksum over the whole payload, and consumes the frame.
  // Errors as Next(); after one, `rest` holds unspecified bytes.
  Status ReceiveRest(const FramePrefix& p, std::span<const iovec> rest);

  // True when Next() will not block: a whole frame is buffered.
  bool HasFrame() const;
  // Before blocking for data, poll without blocking for up to this long.
  // Waking a blocked thread costs tens of microseconds on virtual machines;
  // a short spin turns a small request/response round trip into a few.
  void set_busy_poll(std::chrono::microseconds d) { busy_poll_ = d; }
  // One non-blocking recv(); for callers that poll(). A closed peer shows as
  // kNotFound (between frames) or kCorruption (inside one).
  Status ReadAvailable();

 private:
  size_t Buffered() const { return end_ - begin_; }
  // Makes room for `need` contiguous bytes from begin_.
  void Reserve(size_t need);
  // One recv() of at most `want` bytes (0: as many as fit).
  Status RecvSome(bool block, size_t want = 0);

  int fd_;
  uint32_t magic_;
  uint16_t version_;
  uint32_t max_payload_;
  std::chrono::microseconds busy_poll_{0};
  std::vector<uint8_t> buf_;
  size_t begin_ = 0;  // first unconsumed byte
  size_t end_ = 0;    // one past the last received byte
};

// Sends all bytes, blocking; MSG_NOSIGNAL so a closed peer is an error, not a signal.
Status SendAll(int fd, const uint8_t* p, size_t n);
// Sends what the socket takes now without blocking (0 when it is full).
Result<size_t> SendSome(int fd, const uint8_t* p, size_t n);

}  // namespace agile::memd
