// Blocking I/O helpers that retry EINTR and short transfers, so callers see
// either the whole buffer moved or an error.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>

#include "base/status.h"

namespace agile {

// Reads exactly n bytes. A clean EOF before the first byte is kNotFound
// ("peer closed"), EOF in the middle is kCorruption (truncated).
Status ReadFull(int fd, void* buf, size_t n);
Status WriteFull(int fd, const void* buf, size_t n);
Status PreadFull(int fd, void* buf, size_t n, off_t off);
Status PwriteFull(int fd, const void* buf, size_t n, off_t off);

// Small state files that must survive a crash whole (vm.record,
// migration.record): the bytes go to NAME.tmp, which is fsynced, renamed over
// dir/NAME, and the folder fsynced, so a reader sees the old file or the new
// one, never a torn mix.
Status SyncDir(const std::string& dir);
Status ReplaceFileDurably(const std::string& dir, const std::string& name, const std::string& bytes);
// The whole of a small file; more than max_bytes is kCorruption ("too large
// for WHAT"), so a damaged or foreign file cannot make the reader grow
// without bound.
Result<std::string> ReadSmallFile(const std::string& path, size_t max_bytes, const std::string& what);

// Reads one '\n'-terminated line (without the '\n') using a caller-owned
// buffer for bytes read past the line. Lines longer than max_len are an error.
class LineReader {
 public:
  explicit LineReader(int fd, size_t max_len = 1 << 20) : fd_(fd), max_len_(max_len) {}
  // kNotFound on clean EOF.
  Result<std::string> Next();

 private:
  int fd_;
  size_t max_len_;
  std::string buf_;
};

}  // namespace agile
