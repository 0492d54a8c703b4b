#include "store/reply_batch.h"

#include <limits.h>
#include <sys/socket.h>

#include <algorithm>
#include <iterator>

namespace agile::memd {

void ReplyBatch::CutBytes() {
  if (bytes_.size() > cut_) pieces_.push_back(Piece{nullptr, cut_, bytes_.size() - cut_});
  cut_ = bytes_.size();
}

void ReplyBatch::AddPages(PinnedPages pin) {
  CutBytes();
  for (const uint8_t* p : pin.pages()) {
    // Neighbouring slots (a run PUT together) go out as one piece.
    if (!pieces_.empty() && pieces_.back().ext != nullptr && pieces_.back().ext + pieces_.back().len == p)
      pieces_.back().len += kPageSize;
    else
      pieces_.push_back(Piece{p, 0, kPageSize});
    borrowed_ += kPageSize;
  }
  pins_.push_back(std::move(pin));
}

void ReplyBatch::Append(ReplyBatch* other) {
  if (other->empty()) return;
  if (empty()) {
    // The common case (one batch ready): take its buffers whole. Ours, now
    // empty, go back to *other so neither side loses its capacity.
    std::swap(*this, *other);
    other->Clear();
    return;
  }
  CutBytes();
  other->CutBytes();
  size_t base = bytes_.size();
  bytes_.insert(bytes_.end(), other->bytes_.begin(), other->bytes_.end());
  for (Piece p : other->pieces_) {
    if (p.ext == nullptr) p.off += base;
    pieces_.push_back(p);
  }
  cut_ = bytes_.size();
  borrowed_ += other->borrowed_;
  std::move(other->pins_.begin(), other->pins_.end(), std::back_inserter(pins_));
  other->Clear();
}

Status ReplyBatch::SendAll(int fd) {
  CutBytes();
  iov_.resize(pieces_.size());
  for (size_t i = 0; i < pieces_.size(); ++i) {
    const Piece& p = pieces_[i];
    iov_[i] = {const_cast<uint8_t*>(p.ext != nullptr ? p.ext : bytes_.data() + p.off), p.len};
  }
  size_t k = 0;
  while (k < iov_.size()) {
    msghdr m{};
    m.msg_iov = iov_.data() + k;
    m.msg_iovlen = std::min<size_t>(iov_.size() - k, IOV_MAX);
    ssize_t r = ::sendmsg(fd, &m, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("send");
    }
    // Skip what went out: whole pieces, then the front of a partial one.
    size_t done = static_cast<size_t>(r);
    while (k < iov_.size() && done >= iov_[k].iov_len) done -= iov_[k++].iov_len;
    if (done > 0) {
      iov_[k].iov_base = static_cast<uint8_t*>(iov_[k].iov_base) + done;
      iov_[k].iov_len -= done;
    }
  }
  Clear();
  return Status::Ok();
}

void ReplyBatch::Clear() {
  bytes_.clear();
  pieces_.clear();
  pins_.clear();
  cut_ = 0;
  borrowed_ = 0;
}

}  // namespace agile::memd
