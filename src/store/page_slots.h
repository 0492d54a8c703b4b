// Fixed 4 KiB page slots numbered from 0: in memory, or in a data file where
// slot n lives at offset n * 4096. Which page sits in which slot is the
// namespace's business (vm_namespace.h); slots only hold bytes.
// Not thread-safe: owned and locked by one namespace.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/status.h"

namespace agile::memd {

class PageSlots {
 public:
  virtual ~PageSlots() = default;
  // Writes pages[i] (4096 bytes each) into slots[i].
  virtual Status Write(std::span<const uint64_t> slots, std::span<const uint8_t* const> pages) = 0;
  virtual Status Read(uint64_t slot, uint8_t* dst) = 0;
  // The slot's bytes in place, when the backing is memory (a GET reply is
  // then sent straight from them); nullptr for a file, or a slot never
  // written. The pointer stays valid as long as the slots object: memory
  // grows by chunks and never moves a page.
  virtual const uint8_t* Peek(uint64_t slot) const { (void)slot; return nullptr; }
  // Makes written slots durable (no-op in memory).
  virtual Status Sync() = 0;
  // The descriptor a group commit fdatasyncs outside the namespace's lock; -1 in memory.
  virtual int sync_fd() const = 0;
  // Slots that exist in the backing (the data file's length in slots).
  virtual uint64_t Extent() const = 0;
};

std::unique_ptr<PageSlots> NewMemorySlots();
// Opens (creating if asked) a data file of slots. O_CLOEXEC.
Result<std::unique_ptr<PageSlots>> OpenFileSlots(const std::string& path, bool create);

}  // namespace agile::memd
