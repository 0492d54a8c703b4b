// Which guest pages live in the swap store, kept where a restarted agiled
// finds it: one bit per page in a file of the state dir, mapped MAP_SHARED so
// every store is in the kernel's page cache the moment it is made. A kill -9
// of agiled loses nothing written here (a host crash loses the tmpfs RAM
// files and the QEMUs too, so no fsync is needed; docs/invariants.md, "Crash
// consistency"). Bits are set and cleared with single atomic word operations:
// no record can be torn.
//
// Only GuestMemory writes it, and always before the punch that makes the
// RAM file's copy disappear; recovery reads it with the rule "data in the RAM
// file wins; a hole is offloaded if its bit is set, else never touched/zero".
// Thread-safe: Set/Get are lock-free atomics.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "base/status.h"

namespace agile::vm {

class LocationMap {
 public:
  // Header of the file: magic "AGLOCMAP", version, pages, XXH3 of the
  // header's first 24 bytes; the bitmap follows at kHeaderSize.
  static constexpr uint64_t kMagic = 0x50414D434F4C4741ULL;  // "AGLOCMAP"
  static constexpr uint32_t kVersion = 1;
  static constexpr size_t kHeaderSize = 4096;

  // A new, all-clear map for `pages` pages at `path` (written to a temporary
  // name and renamed, so a crash leaves the old file or the new one).
  static Result<LocationMap> Create(const std::string& path, uint64_t pages);
  // An existing map. Corruption when the header is damaged, the file is
  // shorter than its bitmap, or it was made for another number of pages.
  static Result<LocationMap> Open(const std::string& path, uint64_t pages);

  LocationMap(LocationMap&& o) noexcept;
  LocationMap& operator=(LocationMap&& o) noexcept;
  LocationMap(const LocationMap&) = delete;
  ~LocationMap();

  uint64_t pages() const { return pages_; }
  bool offloaded(uint64_t idx) const;
  void Set(uint64_t idx, bool offloaded);
  uint64_t CountOffloaded() const;

 private:
  LocationMap(void* base, size_t len, uint64_t pages) : base_(base), len_(len), pages_(pages) {}
  std::atomic<uint64_t>* words() const;
  void* base_ = nullptr;
  size_t len_ = 0;
  uint64_t pages_ = 0;
};

}  // namespace agile::vm
