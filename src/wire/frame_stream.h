// Frames over a stream socket: THE frame reader of every agile protocol
// (memd client and server, the migration channel, the shim link) and
// SIGPIPE-free senders. One recv() usually brings a whole reply or several
// pipelined requests; a reader may also be told not to read ahead, for a
// socket whose next bytes belong to someone else (ReadFrame).
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

namespace agile::wire {

struct Frame {
  FrameHeader header;
  const uint8_t* payload = nullptr;  // header.length bytes, valid until the next Next()/ReadAvailable()
};

// The header and first bytes of a frame not yet consumed (see Peek).
struct FramePrefix {
  FrameHeader header;
  const uint8_t* payload = nullptr;  // the first `len` payload bytes, NOT yet verified
  size_t len = 0;                    // min(asked, header.length)
};

class FrameReader {
 public:
  // kYes: each recv() takes what the socket has (up to 64 KiB) and keeps the
  // bytes past the current frame for the next call. kNo: never receives a byte
  // past the frame being read, so the caller may poll() the fd between frames
  // or hand it to another reader; one recv() for the header, one for the rest.
  enum class ReadAhead { kYes, kNo };
  FrameReader(int fd, uint32_t magic, uint16_t version, uint32_t max_payload, ReadAhead ra = ReadAhead::kYes);

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
  // Next() into a caller's buffer: the payload is received straight into
  // *payload (resized to fit) rather than copied out of the reader's buffer.
  Result<FrameHeader> NextInto(std::vector<uint8_t>* payload);

  // True when Next() will not block: a whole frame is buffered.
  bool HasFrame() const;
  // Bytes received but not yet consumed (0: poll() on the fd tells the truth).
  size_t buffered() const { return Buffered(); }
  // Before blocking for data, poll without blocking for up to this long.
  // Waking a blocked thread costs tens of microseconds on virtual machines;
  // a short spin turns a small request/response round trip into a few.
  void set_busy_poll(std::chrono::microseconds d) { busy_poll_ = d; }
  // One non-blocking recv(); for callers that poll() (ReadAhead::kYes only).
  // A closed peer shows as kNotFound (between frames) or kCorruption (inside one).
  Status ReadAvailable();

 private:
  size_t Buffered() const { return end_ - begin_; }
  // Makes room for `need` contiguous bytes from begin_.
  void Reserve(size_t need);
  // One recv() (blocking: at least one byte) towards `want` more bytes of the
  // current frame; with read-ahead it may take more, up to what fits.
  Status RecvSome(bool block, size_t want);
  // Blocks until `n` bytes from begin_ are buffered.
  Status Fill(size_t n);
  // Fills and checks the next header.
  Result<FrameHeader> Header();

  int fd_;
  uint32_t magic_;
  uint16_t version_;
  uint32_t max_payload_;
  bool read_ahead_;
  std::chrono::microseconds busy_poll_{0};
  std::vector<uint8_t> buf_;
  size_t begin_ = 0;  // first unconsumed byte
  size_t end_ = 0;    // one past the last received byte
};

// Blocking read of one whole frame from fd into *payload, with no read-ahead
// (a FrameReader of ReadAhead::kNo). Errors as FrameReader::Next().
Result<FrameHeader> ReadFrame(int fd, uint32_t magic, uint16_t version, uint32_t max_payload,
                              std::vector<uint8_t>* payload);

// Sends all bytes, blocking; MSG_NOSIGNAL so a closed peer is an error, not a signal.
Status SendAll(int fd, const uint8_t* p, size_t n);
// Sends what the socket takes now without blocking (0 when it is full).
Result<size_t> SendSome(int fd, const uint8_t* p, size_t n);

}  // namespace agile::wire
