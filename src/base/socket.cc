#include "base/socket.h"

#include "base/io.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

namespace agile {
namespace {

Result<sockaddr_un> UnixAddr(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof(a.sun_path))
    return InvalidArgument("unix socket path too long (" + std::to_string(path.size()) +
                           " bytes, max " + std::to_string(sizeof(a.sun_path) - 1) + "): " + path);
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}

Result<sockaddr_in> InetAddr(const HostPort& hp) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(hp.port);
  if (hp.host.empty() || hp.host == "*" || hp.host == "0.0.0.0") {
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    return a;
  }
  if (inet_pton(AF_INET, hp.host.c_str(), &a.sin_addr) == 1) return a;
  addrinfo hints{};
  hints.ai_family = AF_INET;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(hp.host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || res == nullptr)
    return InvalidArgument("cannot resolve host '" + hp.host + "': " + gai_strerror(rc));
  a.sin_addr = reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr;
  freeaddrinfo(res);
  return a;
}

}  // namespace

Result<UniqueFd> UnixListen(const std::string& path, int backlog) {
  AGILE_ASSIGN_OR_RETURN(sockaddr_un a, UnixAddr(path));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoStatus("socket(AF_UNIX)");
  ::unlink(path.c_str());
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0)
    return ErrnoStatus("bind " + path);
  if (::listen(fd.get(), backlog) != 0) return ErrnoStatus("listen " + path);
  return fd;
}

Result<UniqueFd> UnixConnect(const std::string& path) {
  AGILE_ASSIGN_OR_RETURN(sockaddr_un a, UnixAddr(path));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoStatus("socket(AF_UNIX)");
  int rc;
  do {
    rc = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) return ErrnoStatus("connect " + path);
  return fd;
}

Result<HostPort> ParseHostPort(const std::string& s) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos) return InvalidArgument("expected HOST:PORT, got '" + s + "'");
  HostPort hp;
  hp.host = s.substr(0, colon);
  std::string port = s.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos)
    return InvalidArgument("bad port in '" + s + "'");
  unsigned long p = std::stoul(port);
  if (p > 65535) return InvalidArgument("port out of range in '" + s + "'");
  hp.port = static_cast<uint16_t>(p);
  return hp;
}

Result<UniqueFd> TcpListen(const HostPort& hp, int backlog) {
  AGILE_ASSIGN_OR_RETURN(sockaddr_in a, InetAddr(hp));
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoStatus("socket(AF_INET)");
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0)
    return ErrnoStatus("bind " + hp.ToString());
  if (::listen(fd.get(), backlog) != 0) return ErrnoStatus("listen " + hp.ToString());
  return fd;
}

Result<uint16_t> BoundPort(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof(a);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) return ErrnoStatus("getsockname");
  return static_cast<uint16_t>(ntohs(a.sin_port));
}

Result<UniqueFd> TcpConnect(const HostPort& hp, int timeout_ms) {
  AGILE_ASSIGN_OR_RETURN(sockaddr_in a, InetAddr(hp));
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return ErrnoStatus("socket(AF_INET)");
  int rc = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a));
  if (rc != 0 && errno != EINPROGRESS) return ErrnoStatus("connect " + hp.ToString());
  if (rc != 0) {
    pollfd p{fd.get(), POLLOUT, 0};
    int pr;
    do {
      pr = ::poll(&p, 1, timeout_ms);
    } while (pr < 0 && errno == EINTR);
    if (pr == 0) return Unavailable("connect " + hp.ToString() + ": timed out after " + std::to_string(timeout_ms) + " ms");
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return ErrnoStatus("connect " + hp.ToString(), err);
  }
  int flags = ::fcntl(fd.get(), F_GETFL);
  ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  int one = 1;
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

Status SetTcpKeepalive(int fd, int idle_s, int interval_s, int user_timeout_ms) {
  if (user_timeout_ms <= 0) return Status::Ok();
  int one = 1;
  unsigned ut = static_cast<unsigned>(user_timeout_ms);
  int count = 3;  // TCP_USER_TIMEOUT decides when to give up; probes just keep the link tested
  if (::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) != 0 ||
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s, sizeof(idle_s)) != 0 ||
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval_s, sizeof(interval_s)) != 0 ||
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count)) != 0 ||
      ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof(ut)) != 0)
    return ErrnoStatus("setsockopt(keepalive)");
  return Status::Ok();
}

Status SetIoTimeouts(int fd, int recv_ms, int send_ms) {
  timeval r{recv_ms / 1000, (recv_ms % 1000) * 1000};
  timeval s{send_ms / 1000, (send_ms % 1000) * 1000};
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &r, sizeof(r)) != 0 ||
      ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &s, sizeof(s)) != 0)
    return ErrnoStatus("setsockopt(SO_RCVTIMEO/SO_SNDTIMEO)");
  return Status::Ok();
}

Result<UniqueFd> Accept(int listen_fd) {
  for (;;) {
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) {
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));  // harmless on unix sockets
      return UniqueFd(fd);
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    return ErrnoStatus("accept");
  }
}

Status SendWithFds(int sock, const void* buf, size_t len, const std::vector<int>& fds) {
  iovec iov{const_cast<void*>(buf), len};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control;
  if (!fds.empty()) {
    control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t r;
  do {
    r = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return ErrnoStatus("sendmsg");
  // Ancillary data went with the first byte; the rest follows plainly.
  if (static_cast<size_t>(r) < len)
    return WriteFull(sock, static_cast<const char*>(buf) + r, len - static_cast<size_t>(r));
  return Status::Ok();
}

Status RecvWithFds(int sock, void* buf, size_t len, std::vector<UniqueFd>* fds) {
  auto* p = static_cast<char*>(buf);
  size_t done = 0;
  while (done < len) {
    iovec iov{p + done, len - done};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    ssize_t r = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("recvmsg");
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < n; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        fds->emplace_back(fd);
      }
    }
    if (msg.msg_flags & MSG_CTRUNC) return Corruption("recvmsg: file descriptors truncated");
    if (r == 0) {
      if (done == 0) return NotFound("peer closed the connection");
      return Corruption("connection closed mid-message");
    }
    done += static_cast<size_t>(r);
  }
  return Status::Ok();
}

Result<UniqueFd> ConnectAddress(const std::string& addr, int timeout_ms) {
  if (addr.rfind("unix:", 0) == 0) return UnixConnect(addr.substr(5));
  if (!addr.empty() && addr[0] == '/') return UnixConnect(addr);
  AGILE_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(addr));
  return TcpConnect(hp, timeout_ms);
}

}  // namespace agile
