// Moves resident pages of a running VM to the swap store without losing a
// write (invariant 3). For each batch of victims:
//   1. claim them: kResident -> kInFlight (faults on them now wait)
//   2. drop their PTEs inside QEMU through the shim (any access now faults)
//   3. read them from the RAM file (through GuestMemory's read-only mapping
//      of it, so the PUT sends straight from the page cache); all-zero pages
//      are only marked, never sent
//   4. PUT the rest to memd; only once it is stored...
//   5. punch the holes in the RAM file and publish kOffloaded / kZero
// A failed PUT puts the batch back to kResident (data never left the file).
// Every step that changes a page is a GuestMemory verb.
//
// Batches are pipelined: while one batch's PUT is in flight (on a helper
// thread), the next batch is claimed, has its PTEs dropped and is read out.
// The order above holds for every page; only different batches overlap, and
// a batch is punched and published only after its own PUT is acknowledged.
// Not thread-safe: one offload at a time per VM (callers serialise).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "offload/swap_store.h"
#include "offload/victim_policy.h"
#include "vm/guest_memory.h"

namespace agile::offload {

struct EvictReport {
  uint64_t pages_offloaded = 0;  // sent to memd
  uint64_t pages_zero = 0;       // found all-zero: marked, not sent
  uint64_t bytes_sent = 0;
  uint64_t batches = 0;
  double seconds = 0;
  uint64_t resident_after = 0;
};

class Evictor {
 public:
  Evictor(vm::GuestMemory* memory, SwapStore* store) : mem_(memory), store_(store) {}
  Evictor(const Evictor&) = delete;
  Evictor& operator=(const Evictor&) = delete;

  // Offloads coldest-first until at most target_pages are resident.
  Result<EvictReport> EvictTo(uint64_t target_pages, VictimPolicy* policy);
  // Offloads exactly these pages (those still resident), in pipelined
  // batches. On error, the batches finished before it stay offloaded (and
  // are in *report); the failed one and any after it are resident again.
  Status EvictPages(std::vector<uint64_t> victims, EvictReport* report);

 private:
  struct Batch;
  // Steps 1-3 for one batch. On error the batch's pages are resident again.
  Status Prepare(std::vector<uint64_t> victims, Batch* b);
  // Step 5 for a batch whose PUT returned put_status (or puts it back).
  Status Finish(Batch* b, const Status& put_status, EvictReport* report);
  void PutBack(const Batch& b);

  vm::GuestMemory* mem_;
  SwapStore* store_;
};

}  // namespace agile::offload
