#include "store/reply_queue.h"

#include <algorithm>

namespace agile::memd {

void ReplyQueue::Push(uint64_t ticket, std::vector<uint8_t>* bytes) {
  if (bytes->empty()) return;
  // A chunk never waits for less than the one before it: replies keep
  // request order, and one comparison then finds what is ready.
  ticket = std::max(ticket, waiting_for());
  if (!chunks_.empty() && chunks_.back().ticket == ticket) {
    auto& b = chunks_.back().bytes;
    b.insert(b.end(), bytes->begin(), bytes->end());
    bytes->clear();
    return;
  }
  chunks_.push_back(Chunk{ticket, std::move(*bytes)});
  bytes->clear();
}

size_t ReplyQueue::TakeReady(uint64_t durable, std::vector<uint8_t>* out) {
  size_t n = 0;
  while (!chunks_.empty() && chunks_.front().ticket <= durable) {
    auto& b = chunks_.front().bytes;
    if (out->empty())
      out->swap(b);
    else
      out->insert(out->end(), b.begin(), b.end());
    chunks_.pop_front();
    ++n;
  }
  return n;
}

}  // namespace agile::memd
