#include "store/reply_queue.h"

#include <algorithm>

namespace agile::memd {

void ReplyQueue::Push(uint64_t ticket, ReplyBatch* batch) {
  if (batch->empty()) return;
  // A chunk never waits for less than the one before it: replies keep
  // request order, and one comparison then finds what is ready.
  ticket = std::max(ticket, waiting_for());
  if (!chunks_.empty() && chunks_.back().ticket == ticket) {
    chunks_.back().replies.Append(batch);
    return;
  }
  chunks_.push_back(Chunk{ticket, ReplyBatch()});
  chunks_.back().replies.Append(batch);
}

size_t ReplyQueue::TakeReady(uint64_t durable, ReplyBatch* out) {
  size_t n = 0;
  while (!chunks_.empty() && chunks_.front().ticket <= durable) {
    out->Append(&chunks_.front().replies);
    chunks_.pop_front();
    ++n;
  }
  return n;
}

}  // namespace agile::memd
