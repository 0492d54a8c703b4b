// The destination's side of post-copy demand paging: asks the source for
// pages still there, each once. The fault server calls Request from its one
// thread; the frames go out on a thread of this class, so a dead or slow
// link never stalls the fault thread: faults on pages already here and on
// cold pages in the swap store keep being served while requests wait.
//
// Detach() pauses requests while the link is lost (post-copy recovery);
// Attach() puts them on a new connection and forgets what was asked, since
// an answer may have been lost with the old link: the fault server retries
// a waiting fault every millisecond, so each still-missing page is asked
// again on the new link.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "migrate/channel.h"
#include "vm/fault_server.h"

namespace agile::migrate {

class PageRequester : public vm::RemotePager {
 public:
  // ch: where requests go (null: nowhere yet); pages: the guest's page count.
  PageRequester(Channel* ch, uint64_t pages);
  ~PageRequester() override;
  PageRequester(const PageRequester&) = delete;
  PageRequester& operator=(const PageRequester&) = delete;

  // Fault thread. Never blocks on the network.
  void Request(uint64_t idx) override;
  // The page's copy here went stale (agile's post-copy tail): ask again.
  void Forget(uint64_t idx) { asked_[idx].store(0); }
  // Stops sending; returns once no send is in flight on the old channel
  // (shut it down first, so such a send fails at once).
  void Detach();
  // Sends on `ch` from now on; every page counts as never asked.
  void Attach(Channel* ch);
  uint64_t sent() const { return sent_.load(); }  // pages asked for on the wire

 private:
  void Run();

  const uint64_t pages_;
  std::unique_ptr<std::atomic<uint8_t>[]> asked_;
  std::mutex mu_;
  std::condition_variable cv_;
  Channel* ch_ = nullptr;       // guarded by mu_
  std::vector<uint64_t> queue_;  // guarded by mu_
  bool sending_ = false;         // guarded by mu_: a Send on ch_ is in flight
  bool stop_ = false;            // guarded by mu_
  std::atomic<uint64_t> sent_{0};
  std::thread thread_;
};

}  // namespace agile::migrate
