#include "vm/location_map.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <bit>
#include <cstring>

#include "base/fd.h"
#include "base/io.h"

namespace agile::vm {
namespace {

struct Header {
  uint64_t magic;
  uint32_t version;
  uint32_t reserved;
  uint64_t pages;
  uint64_t check;  // XXH3 of the 24 bytes above
};
static_assert(sizeof(Header) == 32);

size_t FileSize(uint64_t pages) { return LocationMap::kHeaderSize + (pages + 63) / 64 * 8; }

Result<std::pair<void*, size_t>> MapFile(int fd, size_t len) {
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return ErrnoStatus("map page-location file");
  return std::make_pair(p, len);
}

}  // namespace

Result<LocationMap> LocationMap::Create(const std::string& path, uint64_t pages) {
  std::string tmp = path + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return ErrnoStatus("create " + tmp);
  size_t len = FileSize(pages);
  if (::ftruncate(fd.get(), static_cast<off_t>(len)) != 0) return ErrnoStatus("size " + tmp);
  Header h{kMagic, kVersion, 0, pages, 0};
  h.check = XXH3_64bits(&h, 24);
  AGILE_RETURN_IF_ERROR(PwriteFull(fd.get(), &h, sizeof(h), 0));
  if (::fsync(fd.get()) != 0) return ErrnoStatus("fsync " + tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return ErrnoStatus("rename " + tmp);
  AGILE_ASSIGN_OR_RETURN(auto m, MapFile(fd.get(), len));
  return LocationMap(m.first, m.second, pages);
}

Result<LocationMap> LocationMap::Open(const std::string& path, uint64_t pages) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd) return ErrnoStatus("open " + path);
  struct stat sb {};
  if (::fstat(fd.get(), &sb) != 0) return ErrnoStatus("stat " + path);
  Header h{};
  if (static_cast<size_t>(sb.st_size) < sizeof(h)) return Corruption(path + ": shorter than its header");
  AGILE_RETURN_IF_ERROR(PreadFull(fd.get(), &h, sizeof(h), 0));
  if (h.magic != kMagic) return Corruption(path + ": not a page-location file (bad magic)");
  if (h.check != XXH3_64bits(&h, 24)) return Corruption(path + ": header checksum mismatch");
  if (h.version != kVersion) return Corruption(path + ": unknown version " + std::to_string(h.version));
  if (h.pages != pages)
    return Corruption(path + ": made for " + std::to_string(h.pages) + " pages, the VM has " + std::to_string(pages));
  size_t len = FileSize(pages);
  if (static_cast<size_t>(sb.st_size) < len) return Corruption(path + ": bitmap truncated");
  AGILE_ASSIGN_OR_RETURN(auto m, MapFile(fd.get(), len));
  return LocationMap(m.first, m.second, pages);
}

LocationMap::LocationMap(LocationMap&& o) noexcept : base_(o.base_), len_(o.len_), pages_(o.pages_) {
  o.base_ = nullptr;
}

LocationMap& LocationMap::operator=(LocationMap&& o) noexcept {
  if (this != &o) {
    if (base_ != nullptr) ::munmap(base_, len_);
    base_ = o.base_;
    len_ = o.len_;
    pages_ = o.pages_;
    o.base_ = nullptr;
  }
  return *this;
}

LocationMap::~LocationMap() {
  if (base_ != nullptr) ::munmap(base_, len_);
}

std::atomic<uint64_t>* LocationMap::words() const {
  static_assert(sizeof(std::atomic<uint64_t>) == sizeof(uint64_t) && std::atomic<uint64_t>::is_always_lock_free);
  return reinterpret_cast<std::atomic<uint64_t>*>(static_cast<uint8_t*>(base_) + kHeaderSize);
}

bool LocationMap::offloaded(uint64_t idx) const {
  if (idx >= pages_) return false;
  return (words()[idx / 64].load(std::memory_order_acquire) >> (idx % 64)) & 1;
}

void LocationMap::Set(uint64_t idx, bool offloaded) {
  if (idx >= pages_) return;
  uint64_t bit = uint64_t{1} << (idx % 64);
  // seq_cst: the store is ordered before the fallocate punch that follows.
  if (offloaded) words()[idx / 64].fetch_or(bit);
  else words()[idx / 64].fetch_and(~bit);
}

uint64_t LocationMap::CountOffloaded() const {
  uint64_t n = 0;
  for (uint64_t w = 0; w < (pages_ + 63) / 64; ++w) n += std::popcount(words()[w].load(std::memory_order_relaxed));
  return n;
}

}  // namespace agile::vm
