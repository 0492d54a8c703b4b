// The source side of post-copy: serves the destination's demand requests
// (each faulted page and the `prepage` pages after it) and pushes every page
// not sent yet, so each page goes out exactly once. Demand requests arrive on
// the reader thread while the push runs on the migration thread; the sent_
// bitmap is what keeps them from sending a page twice.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "base/status.h"
#include "migrate/page_stream.h"
#include "vm/guest_memory.h"

namespace agile::migrate {

class PostcopyServer {
 public:
  PostcopyServer(vm::GuestMemory* mem, PageStream* stream, uint32_t prepage);

  // A PAGE_REQUEST: the requested pages first, each with the pages after it
  // (prepaging), skipping any already sent. after_switchover: count what
  // goes out as post-copied (before it, a request only serves a page early).
  Status Serve(const std::vector<uint64_t>& req, uint32_t round, bool after_switchover);

  // Agile's post-copy tail: only the pages set in tail_bm remain to be sent
  // (the destination's copies of them are stale). send_locations must send
  // LOCATIONS: demand serving waits until it has, because a page served in
  // between would arrive before LOCATIONS, be discarded as stale there and
  // count as sent here - never to be sent again. The same lock keeps a
  // demand page read before the pause from reaching the destination after
  // LOCATIONS, where it would pass for current.
  Status ScopeToTail(const std::vector<uint8_t>& tail_bm, const std::function<Status()>& send_locations);

  // Post-copy recovery: the destination still lacks exactly the pages set
  // in `missing` (sent on a link that broke, or never sent); they count as
  // unsent again, every other page as sent. Not while Serve or Push run.
  // From here a listed page that is a hole here goes as a page of zeros:
  // the destination's list, not this host's LOCATIONS, says what it lacks,
  // and a page skipped as zero would leave it waiting for good.
  void Rescope(const std::vector<uint8_t>& missing);

  // Every page with data not sent yet (only those in tail_bm, when given),
  // in order, 256 at a time; progress() after each full chunk.
  Status Push(const std::vector<uint8_t>* tail_bm, uint32_t round, const std::function<void()>& progress);

  uint64_t demand() const { return demand_.load(); }          // pages the destination faulted on
  uint64_t postcopied() const { return postcopied_.load(); }  // pages sent after switchover

 private:
  vm::GuestMemory* mem_;
  PageStream* stream_;
  uint32_t prepage_;
  std::mutex serve_mu_;  // one Serve at a time, and none while ScopeToTail runs
  std::unique_ptr<std::atomic<uint8_t>[]> sent_;  // page already pushed
  std::atomic<uint64_t> demand_{0};
  std::atomic<uint64_t> postcopied_{0};  // written by the push and the demand server
  std::atomic<bool> rescoped_{false};     // Rescope ran: zero pages unsent are sent too
};

}  // namespace agile::migrate
