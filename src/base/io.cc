#include "base/io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "base/fd.h"

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

Status SyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return ErrnoStatus("open directory " + dir);
  if (::fsync(fd.get()) != 0) return ErrnoStatus("fsync directory " + dir);
  return Status::Ok();
}

Status ReplaceFileDurably(const std::string& dir, const std::string& name, const std::string& bytes) {
  std::string path = dir + "/" + name, tmp = path + ".tmp";
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd) return ErrnoStatus("create " + tmp);
    AGILE_RETURN_IF_ERROR(WriteFull(fd.get(), bytes.data(), bytes.size()));
    if (::fsync(fd.get()) != 0) return ErrnoStatus("fsync " + tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) return ErrnoStatus("rename " + tmp);
  return SyncDir(dir);
}

Result<std::string> ReadSmallFile(const std::string& path, size_t max_bytes, const std::string& what) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus("open " + path);
  std::string bytes;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("read " + path);
    if (n == 0) break;
    bytes.append(buf, static_cast<size_t>(n));
    if (bytes.size() > max_bytes) return Corruption(path + ": too large for " + what);
  }
  return bytes;
}

}  // namespace agile
