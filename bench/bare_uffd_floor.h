// The floor under agiled's fault service: the simplest userfaultfd handler
// there is, measured on the same machine in the same run. A toucher thread
// reads one byte of every page of a fresh memfd mapping registered for
// MISSING faults; a handler thread answers each fault with UFFDIO_ZEROPAGE
// (which also wakes the toucher). No page table, no locations, no stats: what
// the kernel's userfaultfd round trip alone costs, fault after fault.
#pragma once

#include <chrono>
#include <cstdint>

namespace agile::bench {

// Faults per second served by a bare handler over `pages` fresh pages; 0 on
// error (the reason goes to stderr). With a busy-poll window the handler reads
// the non-blocking uffd in a loop for up to that long before it sleeps in
// poll(), as agiled's FaultServer does; with 0 it sleeps after every fault.
double BareUffdFaultsPerSecond(uint64_t pages, std::chrono::microseconds busy_poll);

}  // namespace agile::bench
