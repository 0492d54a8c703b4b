#include "base/io.h"

#include <unistd.h>

#include <cerrno>

namespace agile {

Status ReadFull(int fd, void* buf, size_t n) {
  auto* p = static_cast<char*>(buf);
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::read(fd, p + done, n - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("read");
    }
    if (r == 0) {
      if (done == 0) return NotFound("peer closed the connection");
      return Corruption("connection closed mid-message (" + std::to_string(done) + " of " +
                        std::to_string(n) + " bytes)");
    }
    done += static_cast<size_t>(r);
  }
  return Status::Ok();
}

Status WriteFull(int fd, const void* buf, size_t n) {
  const auto* p = static_cast<const char*>(buf);
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::write(fd, p + done, n - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("write");
    }
    done += static_cast<size_t>(r);
  }
  return Status::Ok();
}

Status PreadFull(int fd, void* buf, size_t n, off_t off) {
  auto* p = static_cast<char*>(buf);
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd, p + done, n - done, off + static_cast<off_t>(done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("pread");
    }
    if (r == 0) return Corruption("pread: unexpected end of file");
    done += static_cast<size_t>(r);
  }
  return Status::Ok();
}

Status PwriteFull(int fd, const void* buf, size_t n, off_t off) {
  const auto* p = static_cast<const char*>(buf);
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pwrite(fd, p + done, n - done, off + static_cast<off_t>(done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("pwrite");
    }
    done += static_cast<size_t>(r);
  }
  return Status::Ok();
}

Result<std::string> LineReader::Next() {
  for (;;) {
    size_t nl = buf_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      return line;
    }
    if (buf_.size() > max_len_) return InvalidArgument("line longer than " + std::to_string(max_len_) + " bytes");
    char chunk[4096];
    ssize_t r = ::read(fd_, chunk, sizeof(chunk));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("read");
    }
    if (r == 0) {
      if (buf_.empty()) return NotFound("peer closed the connection");
      return Corruption("connection closed mid-line");
    }
    buf_.append(chunk, static_cast<size_t>(r));
  }
}

}  // namespace agile
