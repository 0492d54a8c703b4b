#include "store/frame_stream.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace agile::memd {
namespace {

constexpr size_t kRecvChunk = 256 << 10;

}  // namespace

FrameReader::FrameReader(int fd, uint32_t magic, uint16_t version, uint32_t max_payload)
    : fd_(fd), magic_(magic), version_(version), max_payload_(max_payload), buf_(kRecvChunk) {}

bool FrameReader::HasFrame() const {
  if (Buffered() < wire::kFrameHeaderSize) return false;
  // Length is bytes 8..11 of the header, little-endian. A bad header also
  // counts as "has a frame": Next() then reports it without blocking.
  const uint8_t* h = buf_.data() + begin_;
  uint32_t len = uint32_t{h[8]} | uint32_t{h[9]} << 8 | uint32_t{h[10]} << 16 | uint32_t{h[11]} << 24;
  return len > max_payload_ || Buffered() >= wire::kFrameHeaderSize + len;
}

void FrameReader::Reserve(size_t need) {
  if (begin_ > 0 && (buf_.size() - begin_ < need || begin_ == end_)) {
    std::memmove(buf_.data(), buf_.data() + begin_, Buffered());
    end_ -= begin_;
    begin_ = 0;
  }
  if (buf_.size() < need) buf_.resize(need);
}

Status FrameReader::RecvSome(bool block) {
  Reserve(Buffered() + kRecvChunk);
  for (;;) {
    ssize_t r = ::recv(fd_, buf_.data() + end_, buf_.size() - end_, block ? 0 : MSG_DONTWAIT);
    if (r > 0) {
      end_ += static_cast<size_t>(r);
      return Status::Ok();
    }
    if (r == 0) {
      if (Buffered() == 0) return NotFound("peer closed the connection");
      return Corruption("connection closed mid-frame (" + std::to_string(Buffered()) + " bytes of a frame)");
    }
    if (errno == EINTR) continue;
    if (!block && (errno == EAGAIN || errno == EWOULDBLOCK)) return Status::Ok();
    return ErrnoStatus("recv");
  }
}

Status FrameReader::ReadAvailable() { return RecvSome(/*block=*/false); }

Result<Frame> FrameReader::Next() {
  while (Buffered() < wire::kFrameHeaderSize) AGILE_RETURN_IF_ERROR(RecvSome(true));
  AGILE_ASSIGN_OR_RETURN(
      wire::FrameHeader h, wire::DecodeFrameHeader(buf_.data() + begin_, magic_, version_, max_payload_));
  size_t total = wire::kFrameHeaderSize + h.length;
  Reserve(total);
  while (Buffered() < total) AGILE_RETURN_IF_ERROR(RecvSome(true));
  const uint8_t* head = buf_.data() + begin_;
  AGILE_RETURN_IF_ERROR(wire::VerifyFrame(head, h, head + wire::kFrameHeaderSize));
  begin_ += total;
  return Frame{h, head + wire::kFrameHeaderSize};
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

}  // namespace agile::memd
