#include "store/reply_queue.h"

#include <limits.h>
#include <sys/socket.h>
#include <sys/uio.h>

namespace agile::memd {

void ReplyQueue::CutBytes() {
  if (bytes_.size() > cut_) pieces_.push_back(Piece{nullptr, cut_, bytes_.size() - cut_});
  cut_ = bytes_.size();
}

void ReplyQueue::AddPages(PinnedPages pin) {
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

Status ReplyQueue::SendAll(int fd) {
  CutBytes();
  std::vector<iovec> iov(pieces_.size());
  for (size_t i = 0; i < pieces_.size(); ++i) {
    const Piece& p = pieces_[i];
    iov[i] = {const_cast<uint8_t*>(p.ext != nullptr ? p.ext : bytes_.data() + p.off), p.len};
  }
  size_t k = 0;
  while (k < iov.size()) {
    msghdr m{};
    m.msg_iov = iov.data() + k;
    m.msg_iovlen = std::min<size_t>(iov.size() - k, IOV_MAX);
    ssize_t r = ::sendmsg(fd, &m, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("send");
    }
    // Skip what went out: whole pieces, then the front of a partial one.
    size_t done = static_cast<size_t>(r);
    while (k < iov.size() && done >= iov[k].iov_len) done -= iov[k++].iov_len;
    if (done > 0) {
      iov[k].iov_base = static_cast<uint8_t*>(iov[k].iov_base) + done;
      iov[k].iov_len -= done;
    }
  }
  Clear();
  return Status::Ok();
}

void ReplyQueue::Clear() {
  bytes_.clear();
  pieces_.clear();
  pins_.clear();
  cut_ = 0;
  borrowed_ = 0;
}

}  // namespace agile::memd
