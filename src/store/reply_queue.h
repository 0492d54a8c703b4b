// The replies a memd connection has ready to send: bytes it built (frame
// heads, small replies) interleaved with pages borrowed from the store
// (GET replies sent straight from the slots), and the pins that keep those
// pages unchanged until they are sent. One sendmsg() carries up to IOV_MAX
// pieces, so a GET reply of 256 pages costs no copy in user space.
// Not thread-safe: owned by one connection's thread.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/status.h"
#include "store/page_store.h"

namespace agile::memd {

class ReplyQueue {
 public:
  // Appends built bytes here (Encoder, FrameBuilder, Append*Reply).
  std::vector<uint8_t>* bytes() { return &bytes_; }
  // Queues pages behind the bytes built so far, kept by `pin` until sent.
  void AddPages(PinnedPages pin);
  // Total bytes queued.
  size_t size() const { return borrowed_ + bytes_.size(); }
  // Sends everything queued (blocking; EINTR and short sends handled), then
  // empties the queue and drops the pins. On error the queue is left as is.
  Status SendAll(int fd);
  void Clear();

 private:
  // A piece to send: [off, off+len) of bytes_ when ext is null, else ext.
  struct Piece {
    const uint8_t* ext;
    size_t off;
    size_t len;
  };
  void CutBytes();

  std::vector<uint8_t> bytes_;
  std::vector<Piece> pieces_;
  std::vector<PinnedPages> pins_;
  size_t cut_ = 0;       // bytes_ before this are in pieces_
  size_t borrowed_ = 0;  // bytes in ext pieces
};

}  // namespace agile::memd
