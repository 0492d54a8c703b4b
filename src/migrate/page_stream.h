// The page stream of a migration: reads guest pages through GuestMemory (the
// RAM file, or the swap store for offloaded ones) and sends them as PAGES
// frames. Used by every phase that moves page content - pre-copy rounds,
// stop-and-copy, demand serving and the post-copy push - so they all read
// and frame pages the same way.
//
// Thread-safe: the demand-serving reader thread and the migration thread may
// send at once (each call has its own buffers; the Channel serialises frames).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "base/page.h"
#include "base/status.h"
#include "migrate/channel.h"
#include "migrate/store_reader.h"
#include "offload/swap_store.h"
#include "vm/guest_memory.h"

namespace agile::migrate {

class PageStream {
 public:
  // store: the VM's swap-store namespace, null without one.
  PageStream(vm::GuestMemory* mem, offload::SwapStore* store, Channel* ch);

  // Sends the pages idx (any order; sent in increasing order), 64 per frame,
  // tagged with `round`. Zero pages are skipped (the destination was told
  // they are zero and maps zeros) unless `zero_pages_too`: then they go as
  // pages of zeros (the destination listed them as missing: post-copy
  // recovery). Adds the pages sent to *sent.
  Status Send(std::vector<uint64_t> idx, uint32_t round, uint64_t* sent, bool zero_pages_too = false);
  // Ends pre-copy round `round`, which sent `pages` pages (a ROUND frame).
  Status EndRound(uint32_t round, uint64_t pages);

  // Post-copy recovery: frames go on a new connection from now on. Only
  // while no Send runs.
  void set_channel(Channel* ch) { ch_ = ch; }

  // From the commit point on (post-copy, agile's tail) giving up strands the
  // VM, so a cold-page read the swap store cannot answer (kUnavailable: memd
  // down or restarting) is retried (StoreReader) for up to `ms` before
  // it fails the migration; before it (0, the default) it fails at once and
  // the source resumes. docs/timeouts.md has the bound.
  void RetryStoreReadsFor(int ms) {
    if (store_reader_) store_reader_->set_retry_ms(ms);
  }

  uint64_t pages_sent() const { return pages_.load(); }
  uint64_t page_bytes_sent() const { return pages_.load() * kPageSize; }

 private:
  vm::GuestMemory* mem_;
  std::unique_ptr<StoreReader> store_reader_;  // null without a store
  Channel* ch_;
  std::atomic<uint64_t> pages_{0};
};

}  // namespace agile::migrate
