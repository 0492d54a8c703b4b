#include "store/page_slots.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>

#include "base/io.h"
#include "wire/memd_proto.h"

namespace agile::memd {
namespace {

// Memory slots come in chunks so growing never moves stored pages and one
// allocation serves many pages.
class MemorySlots final : public PageSlots {
 public:
  Status Write(std::span<const uint64_t> slots, std::span<const uint8_t* const> pages) override {
    for (size_t i = 0; i < slots.size(); ++i) std::memcpy(At(slots[i], /*grow=*/true), pages[i], kPageSize);
    return Status::Ok();
  }
  Status Read(uint64_t slot, uint8_t* dst) override {
    if (slot >= Extent()) return Internal("memory slot " + std::to_string(slot) + " was never written");
    std::memcpy(dst, At(slot, false), kPageSize);
    return Status::Ok();
  }
  const uint8_t* Peek(uint64_t slot) const override {
    if (slot >= Extent()) return nullptr;
    return chunks_[slot / kChunkPages].get() + (slot % kChunkPages) * kPageSize;
  }
  Status Sync() override { return Status::Ok(); }
  int sync_fd() const override { return -1; }
  uint64_t Extent() const override { return chunks_.size() * kChunkPages; }

 private:
  static constexpr uint64_t kChunkPages = 64;  // 256 KiB
  uint8_t* At(uint64_t slot, bool grow) {
    uint64_t c = slot / kChunkPages;
    while (grow && c >= chunks_.size()) chunks_.push_back(std::make_unique<uint8_t[]>(kChunkPages * kPageSize));
    return chunks_[c].get() + (slot % kChunkPages) * kPageSize;
  }
  std::vector<std::unique_ptr<uint8_t[]>> chunks_;
};

class FileSlots final : public PageSlots {
 public:
  FileSlots(UniqueFd fd, uint64_t extent) : fd_(std::move(fd)), extent_(extent) {}

  // Runs of consecutive slots (the usual case: fresh slots are handed out in
  // order) go down in one pwritev.
  Status Write(std::span<const uint64_t> slots, std::span<const uint8_t* const> pages) override {
    size_t i = 0;
    while (i < slots.size()) {
      size_t j = i + 1;
      while (j < slots.size() && j - i < IOV_MAX && slots[j] == slots[j - 1] + 1) ++j;
      AGILE_RETURN_IF_ERROR(WriteRun(slots[i], pages.subspan(i, j - i)));
      extent_ = std::max(extent_, slots[j - 1] + 1);
      i = j;
    }
    return Status::Ok();
  }
  Status Read(uint64_t slot, uint8_t* dst) override {
    return PreadFull(fd_.get(), dst, kPageSize, static_cast<off_t>(slot * kPageSize));
  }
  Status Sync() override {
    if (::fdatasync(fd_.get()) != 0) return ErrnoStatus("fdatasync page data");
    return Status::Ok();
  }
  int sync_fd() const override { return fd_.get(); }
  uint64_t Extent() const override { return extent_; }

 private:
  Status WriteRun(uint64_t first_slot, std::span<const uint8_t* const> pages) {
    std::vector<iovec> iov(pages.size());
    for (size_t k = 0; k < pages.size(); ++k) iov[k] = {const_cast<uint8_t*>(pages[k]), kPageSize};
    off_t off = static_cast<off_t>(first_slot * kPageSize);
    size_t k = 0;
    while (k < iov.size()) {
      ssize_t r = ::pwritev(fd_.get(), iov.data() + k, static_cast<int>(iov.size() - k), off);
      if (r < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus("pwritev page data");
      }
      // Short write: skip whole pages written, finish a partial one by hand.
      size_t done = static_cast<size_t>(r);
      off += static_cast<off_t>(done);
      while (k < iov.size() && done >= iov[k].iov_len) done -= iov[k++].iov_len;
      if (done > 0) {
        AGILE_RETURN_IF_ERROR(PwriteFull(fd_.get(), static_cast<uint8_t*>(iov[k].iov_base) + done,
                                         iov[k].iov_len - done, off));
        off += static_cast<off_t>(iov[k].iov_len - done);
        ++k;
      }
    }
    return Status::Ok();
  }

  UniqueFd fd_;
  uint64_t extent_;
};

}  // namespace

std::unique_ptr<PageSlots> NewMemorySlots() { return std::make_unique<MemorySlots>(); }

Result<std::unique_ptr<PageSlots>> OpenFileSlots(const std::string& path, bool create) {
  int flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_TRUNC : 0);
  UniqueFd fd(::open(path.c_str(), flags, 0600));
  if (!fd) return ErrnoStatus("open " + path);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus("fstat " + path);
  // A torn last slot (crash mid-write) does not count as a slot.
  uint64_t extent = static_cast<uint64_t>(st.st_size) / kPageSize;
  return std::unique_ptr<PageSlots>(std::make_unique<FileSlots>(std::move(fd), extent));
}

}  // namespace agile::memd
