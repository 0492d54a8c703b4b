#include "wire/frame_stream.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace agile::wire {
namespace {

// Room offered to each recv(). The rest of a large frame is received to its
// exact end instead, so the buffer never holds a big partial frame that
// would have to be moved to the front.
constexpr size_t kRecvChunk = 64 << 10;

}  // namespace

FrameReader::FrameReader(int fd, uint32_t magic, uint16_t version, uint32_t max_payload, ReadAhead ra)
    : fd_(fd),
      magic_(magic),
      version_(version),
      max_payload_(max_payload),
      read_ahead_(ra == ReadAhead::kYes),
      buf_(read_ahead_ ? kRecvChunk : kFrameHeaderSize) {}

bool FrameReader::HasFrame() const {
  if (Buffered() < kFrameHeaderSize) return false;
  // Length is bytes 8..11 of the header, little-endian. A bad header also
  // counts as "has a frame": Next() then reports it without blocking.
  Decoder length_field(buf_.data() + begin_ + 8, 4);
  uint32_t len = length_field.U32();
  return len > max_payload_ || Buffered() >= kFrameHeaderSize + len;
}

void FrameReader::Reserve(size_t need) {
  if (begin_ > 0 && (buf_.size() - begin_ < need || begin_ == end_)) {
    std::memmove(buf_.data(), buf_.data() + begin_, Buffered());
    end_ -= begin_;
    begin_ = 0;
  }
  if (buf_.size() < need) buf_.resize(need);
}

Status FrameReader::RecvSome(bool block, size_t want) {
  // Spin only while nothing of the next frame is here (the latency case):
  // the rest of a frame streams in, and spinning would take the CPU its
  // sender needs.
  if (block && read_ahead_ && Buffered() == 0 && busy_poll_.count() > 0) {
    auto deadline = std::chrono::steady_clock::now() + busy_poll_;
    do {
      AGILE_RETURN_IF_ERROR(RecvSome(/*block=*/false, want));
      if (Buffered() > 0) return Status::Ok();
    } while (std::chrono::steady_clock::now() < deadline);
  }
  size_t len;
  int flags;
  if (read_ahead_) {
    Reserve(Buffered() + std::max(want, kRecvChunk));
    // The rest of a large frame: wait for all of it at once (one wake-up).
    bool whole = block && want > kRecvChunk;
    len = whole ? want : buf_.size() - end_;
    flags = block ? (whole ? MSG_WAITALL : 0) : MSG_DONTWAIT;
  } else {
    Reserve(Buffered() + want);
    len = want;
    flags = block ? MSG_WAITALL : MSG_DONTWAIT;
  }
  for (;;) {
    ssize_t r = ::recv(fd_, buf_.data() + end_, len, flags);
    if (r > 0) {
      end_ += static_cast<size_t>(r);
      return Status::Ok();
    }
    if (r == 0) {
      if (Buffered() == 0) return NotFound("peer closed the connection");
      return Corruption("connection closed mid-frame (" + std::to_string(Buffered()) + " bytes of a frame)");
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!block) return Status::Ok();
      // A blocking socket with SO_RCVTIMEO (SetIoTimeouts): the peer went silent.
      return Unavailable("recv: nothing received within the connection's timeout");
    }
    return ErrnoStatus("recv");
  }
}

Status FrameReader::Fill(size_t n) {
  while (Buffered() < n) AGILE_RETURN_IF_ERROR(RecvSome(/*block=*/true, n - Buffered()));
  return Status::Ok();
}

Result<FrameHeader> FrameReader::Header() {
  AGILE_RETURN_IF_ERROR(Fill(kFrameHeaderSize));
  return DecodeFrameHeader(buf_.data() + begin_, magic_, version_, max_payload_);
}

Status FrameReader::ReadAvailable() { return RecvSome(/*block=*/false, 0); }

Result<Frame> FrameReader::Next() {
  AGILE_ASSIGN_OR_RETURN(FrameHeader h, Header());
  size_t total = kFrameHeaderSize + h.length;
  Reserve(total);
  AGILE_RETURN_IF_ERROR(Fill(total));
  const uint8_t* head = buf_.data() + begin_;
  AGILE_RETURN_IF_ERROR(VerifyFrame(head, h, head + kFrameHeaderSize));
  begin_ += total;
  return Frame{h, head + kFrameHeaderSize};
}

Result<FramePrefix> FrameReader::Peek(size_t want) {
  AGILE_ASSIGN_OR_RETURN(FrameHeader h, Header());
  size_t len = std::min<size_t>(want, h.length);
  size_t need = kFrameHeaderSize + len;
  Reserve(need);
  // Small receives here (want is small): one recv() brings what has arrived,
  // often the whole frame, and whatever follows the prefix is copied out of
  // the buffer by ReceiveRest.
  AGILE_RETURN_IF_ERROR(Fill(need));
  return FramePrefix{h, buf_.data() + begin_ + kFrameHeaderSize, len};
}

Result<FrameHeader> FrameReader::NextInto(std::vector<uint8_t>* payload) {
  AGILE_ASSIGN_OR_RETURN(FramePrefix p, Peek(0));
  payload->resize(p.header.length);
  iovec v{payload->data(), payload->size()};
  AGILE_RETURN_IF_ERROR(ReceiveRest(p, std::span<const iovec>(&v, v.iov_len > 0 ? 1 : 0)));
  return p.header;
}

Status FrameReader::ReceiveRest(const FramePrefix& p, std::span<const iovec> rest) {
  size_t want = 0;
  for (const iovec& v : rest) want += v.iov_len;
  if (p.len + want != p.header.length)
    return Internal("ReceiveRest: " + std::to_string(want) + " bytes of room for the " +
                    std::to_string(p.header.length - p.len) + " that remain");
  const uint8_t* head = buf_.data() + begin_;
  FrameHasher hasher(head);
  hasher.Update(p.payload, p.len);
  // What is already buffered beyond the prefix is copied; the rest is
  // received straight into place, all of it in one blocking call.
  size_t from_buf = std::min(want, Buffered() - kFrameHeaderSize - p.len);
  const uint8_t* src = p.payload + p.len;
  std::vector<iovec> todo;
  todo.reserve(rest.size());
  for (const iovec& v : rest) {
    size_t take = std::min(from_buf, v.iov_len);
    if (take > 0) std::memcpy(v.iov_base, src, take);
    src += take;
    from_buf -= take;
    if (take < v.iov_len) todo.push_back({static_cast<uint8_t*>(v.iov_base) + take, v.iov_len - take});
  }
  begin_ = static_cast<size_t>(src - buf_.data());
  // Unless the frame was complete in the buffer, the buffer is now empty, so
  // the next bytes on the socket are the rest of this frame.
  size_t k = 0;
  while (k < todo.size()) {
    msghdr m{};
    m.msg_iov = todo.data() + k;
    m.msg_iovlen = todo.size() - k;
    ssize_t r = ::recvmsg(fd_, &m, MSG_WAITALL);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return Unavailable("recv: the rest of a frame did not come within the connection's timeout");
      return ErrnoStatus("recv");
    }
    if (r == 0) return Corruption("connection closed mid-frame");
    auto done = static_cast<size_t>(r);
    while (k < todo.size() && done >= todo[k].iov_len) done -= todo[k++].iov_len;
    if (done > 0) {
      todo[k].iov_base = static_cast<uint8_t*>(todo[k].iov_base) + done;
      todo[k].iov_len -= done;
    }
  }
  for (const iovec& v : rest) hasher.Update(static_cast<const uint8_t*>(v.iov_base), v.iov_len);
  if (uint32_t got = hasher.Digest(); got != p.header.checksum)
    return Corruption("frame checksum mismatch: got " + std::to_string(p.header.checksum) + ", computed " +
                      std::to_string(got));
  return Status::Ok();
}

Result<FrameHeader> ReadFrame(int fd, uint32_t magic, uint16_t version, uint32_t max_payload,
                              std::vector<uint8_t>* payload) {
  FrameReader r(fd, magic, version, max_payload, FrameReader::ReadAhead::kNo);
  return r.NextInto(payload);
}

Status SendAll(int fd, const uint8_t* p, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::send(fd, p + done, n - done, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("send");
    }
    done += static_cast<size_t>(r);
  }
  return Status::Ok();
}

Result<size_t> SendSome(int fd, const uint8_t* p, size_t n) {
  for (;;) {
    ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r >= 0) return static_cast<size_t>(r);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return size_t{0};
    return ErrnoStatus("send");
  }
}

}  // namespace agile::wire
