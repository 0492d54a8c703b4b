// Replies of one memd connection ready to go out together: bytes it built
// (frame heads, small replies) interleaved with pages borrowed from the
// store (a GET reply's pages, sent straight from the slots), and the pins
// that keep those pages unchanged until they are sent. One sendmsg()
// carries up to IOV_MAX pieces, so a GET reply of 256 pages costs no copy in
// user space. Whether a batch may go out yet (durability) is ReplyQueue's
// business, not this class's.
// Not thread-safe: owned by one connection's thread. Move-only (the pins).
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "base/status.h"
#include "store/page_store.h"

namespace agile::memd {

class ReplyBatch {
 public:
  ReplyBatch() = default;
  ReplyBatch(ReplyBatch&&) = default;
  ReplyBatch& operator=(ReplyBatch&&) = default;

  // Appends built bytes here (Encoder, FrameBuilder, Append*Reply).
  std::vector<uint8_t>* bytes() { return &bytes_; }
  // Queues pages behind the bytes built so far, kept by `pin` until sent.
  void AddPages(PinnedPages pin);
  // Moves everything in *other behind what is here (its pins too); *other
  // is left empty.
  void Append(ReplyBatch* other);
  // Total bytes queued.
  size_t size() const { return borrowed_ + bytes_.size(); }
  bool empty() const { return size() == 0; }
  // Sends everything queued (blocking; EINTR and short sends handled), then
  // empties the batch and drops the pins: a pinned slot is reusable only
  // once the kernel has its bytes. On error part may have gone: the
  // connection is done for; the batch keeps its pins until Clear().
  Status SendAll(int fd);
  // Drops everything and its pins; keeps the buffers' capacity.
  void Clear();

 private:
  // A piece to send: [off, off+len) of bytes_ when ext is null, else ext.
  struct Piece {
    const uint8_t* ext;
    size_t off;
    size_t len;
  };
  // Closes the bytes built since the last piece into a piece of their own.
  void CutBytes();

  std::vector<uint8_t> bytes_;
  std::vector<Piece> pieces_;
  std::vector<PinnedPages> pins_;
  std::vector<iovec> iov_;  // SendAll's, kept for its capacity
  size_t cut_ = 0;          // bytes_ before this are in pieces_
  size_t borrowed_ = 0;     // bytes in ext pieces
};

}  // namespace agile::memd
