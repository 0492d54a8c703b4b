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
