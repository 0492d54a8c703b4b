// The replies of one agile-memd connection that wait for the group commit
// making their changes durable, in request order. A chunk of replies (a
// ReplyBatch: built bytes and pinned GET pages) carries a ticket
// (PageStore::LastWrite after its last change; 0: it changed nothing) and
// goes out only once every change up to that ticket is on disk and every
// chunk before it has gone out, so a GET answered after a PUT is never sent
// before the PUT's acknowledgement. The pins of a waiting chunk are held
// with it: its pages stay as they were when the GET was handled.
// Not thread-safe: owned by the connection's thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>

#include "store/reply_batch.h"

namespace agile::memd {

class ReplyQueue {
 public:
  // Queues the replies in *batch (taken; *batch is left empty), to be sent
  // once `ticket` is durable. An empty *batch queues nothing.
  void Push(uint64_t ticket, ReplyBatch* batch);
  // The ticket the next chunk waits for (the highest queued: tickets only
  // grow); 0 when nothing waits.
  uint64_t waiting_for() const { return chunks_.empty() ? 0 : chunks_.back().ticket; }
  bool empty() const { return chunks_.empty(); }
  // Moves every chunk whose ticket is <= durable, from the front, behind
  // what *out holds and returns how many chunks went.
  size_t TakeReady(uint64_t durable, ReplyBatch* out);
  // Moves everything into *out regardless of tickets (the commit covering
  // the last one is known good).
  void TakeAll(ReplyBatch* out) { TakeReady(UINT64_MAX, out); }

 private:
  struct Chunk {
    uint64_t ticket;
    ReplyBatch replies;
  };
  std::deque<Chunk> chunks_;
};

}  // namespace agile::memd
