#include "redis/connection.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>

#include "base/socket.h"

namespace agile::redis {
namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Waits for `events` on fd until deadline_ms; false on timeout.
Result<bool> WaitFd(int fd, short events, int64_t deadline_ms) {
  for (;;) {
    int64_t left = deadline_ms - NowMs();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    int r = poll(&p, 1, static_cast<int>(left));
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) return ErrnoStatus("poll");
  }
}

}  // namespace

void AppendCommand(std::string* out, std::span<const std::string_view> argv) {
  out->append("*").append(std::to_string(argv.size())).append("\r\n");
  for (std::string_view a : argv) {
    out->append("$").append(std::to_string(a.size())).append("\r\n");
    out->append(a).append("\r\n");
  }
}

std::string_view ErrorText(const redisReply* r) {
  if (r == nullptr || r->type != REDIS_REPLY_ERROR) return {};
  return std::string_view(r->str, r->len);
}

Connection::Connection(UniqueFd fd, std::string addr, int timeout_ms, int busy_poll_us)
    : fd_(std::move(fd)),
      addr_(std::move(addr)),
      timeout_ms_(timeout_ms),
      busy_poll_us_(busy_poll_us),
      reader_(redisReaderCreate()) {}

Connection::~Connection() { redisReaderFree(reader_); }

Result<std::unique_ptr<Connection>> Connection::Open(const std::string& addr, const ConnOptions& opts) {
  AGILE_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(addr));
  UniqueFd fd;
  if (opts.tls) {
    auto s = tls::Connect(hp, opts.tls, opts.timeout_ms);
    if (!s.ok()) return s.status().Annotate("redis node " + addr + " (TLS)");
    fd = std::move(s->fd);
  } else {
    auto s = TcpConnect(hp, opts.timeout_ms);
    if (!s.ok()) return s.status().Annotate("redis node " + addr);
    fd = std::move(s).value();
  }
  std::unique_ptr<Connection> c(new Connection(std::move(fd), addr, opts.timeout_ms, opts.busy_poll_us));
  if (!opts.user.empty()) {
    AGILE_ASSIGN_OR_RETURN(Reply r, c->Call({"AUTH", opts.user, opts.password}));
    if (!ErrorText(r.get()).empty())
      return PermissionDenied("redis node " + addr + " refused user '" + opts.user + "': " +
                              std::string(ErrorText(r.get())));
  }
  return c;
}

Status Connection::Broken(const Status& why) {
  if (broken_.ok()) broken_ = why.Annotate("redis node " + addr_);
  fd_.Reset();
  return broken_;
}

Status Connection::Flush() {
  if (!broken_.ok()) return broken_;
  int64_t deadline = NowMs() + timeout_ms_;
  size_t off = 0;
  while (off < wbuf_.size()) {
    ssize_t n = send(fd_.get(), wbuf_.data() + off, wbuf_.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      auto ready = WaitFd(fd_.get(), POLLOUT, deadline);
      if (!ready.ok()) return Broken(ready.status());
      if (!*ready) return Broken(Unavailable("send timed out after " + std::to_string(timeout_ms_) + " ms"));
      continue;
    }
    return Broken(ErrnoStatus("send"));
  }
  wbuf_.clear();
  return Status::Ok();
}

Result<Reply> Connection::Read() {
  if (!broken_.ok()) return broken_;
  int64_t deadline = NowMs() + timeout_ms_;
  auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(busy_poll_us_);
  char buf[64 * 1024];
  for (;;) {
    void* reply = nullptr;
    if (redisReaderGetReply(reader_, &reply) != REDIS_OK)
      return Broken(Corruption(std::string("malformed reply: ") + reader_->errstr));
    if (reply != nullptr) return Reply(static_cast<redisReply*>(reply));
    ssize_t n = recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      redisReaderFeed(reader_, buf, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) return Broken(Unavailable("connection closed by the node"));
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return Broken(ErrnoStatus("recv"));
    if (std::chrono::steady_clock::now() < spin_until) continue;
    auto ready = WaitFd(fd_.get(), POLLIN, deadline);
    if (!ready.ok()) return Broken(ready.status());
    if (!*ready) return Broken(Unavailable("no reply within " + std::to_string(timeout_ms_) + " ms"));
  }
}

Result<Reply> Connection::Call(std::initializer_list<std::string_view> argv) {
  Append(argv);
  AGILE_RETURN_IF_ERROR(Flush());
  return Read();
}

}  // namespace agile::redis
