// Pre-copy: rounds that send the pages written since the previous round while
// the guest runs, and the decision when to stop - the rest fits the downtime
// target, the guest dirties pages about as fast as the link moves them
// (agile: post-copy the remainder instead), no progress, or the round cap.
// Runs on the migration thread; the pages go out through a PageStream.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "migrate/page_stream.h"
#include "track/write_scanner.h"
#include "vm/guest_memory.h"
#include "wire/migrate_proto.h"

namespace agile::migrate {

struct PrecopyOptions {
  wire::MigMode mode = wire::MigMode::kAgile;  // kPrecopy also sends offloaded pages in round 0
  uint64_t max_downtime_ms = 300;
  uint32_t max_rounds = 30;
  bool postcopy_tail = true;  // agile only: may end with a post-copy tail
  std::string vm;             // for the log
};

// Where the rounds stand; final once Run returns.
struct PrecopyResult {
  uint32_t rounds = 0;           // rounds sent (the next round's number)
  uint64_t pages_sent = 0;       // over all rounds
  double page_rate = 0;          // pages/s achieved by the last full round
  bool converged = true;         // false: stopped by the tail, no progress or the cap
  bool tail = false;             // agile: post-copy `dirty` after switchover
  std::vector<uint64_t> dirty;   // written during the last round: for stop-and-copy or the tail
  // Still armed: the stop-and-copy's last scan, once the VM is paused, finds
  // what was written after the last round.
  std::unique_ptr<track::WriteScanner> scanner;
};

class PrecopyLoop {
 public:
  struct Hooks {
    std::function<Status()> cancelled;   // the operator's cancel; checked often
    std::function<Status()> peer;        // the destination's ABORT or a broken link; checked per round
    // Before each round: the state so far and the pages the round will send.
    std::function<void(const PrecopyResult&, uint64_t pages)> progress;
  };
  PrecopyLoop(vm::GuestMemory* mem, PageStream* stream, PrecopyOptions opt, Hooks hooks);

  // Runs the rounds into *out (read by hooks.progress while it runs).
  Status Run(PrecopyResult* out);

 private:
  vm::GuestMemory* mem_;
  PageStream* stream_;
  PrecopyOptions opt_;
  Hooks hooks_;
};

}  // namespace agile::migrate
