#include "tcp_pingpong_floor.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

namespace agile::bench {
namespace {

constexpr size_t kRequest = 24;

// Reads exactly n bytes; spins on MSG_DONTWAIT for up to `spin` before each
// sleep in poll(). False on EOF or error.
bool ReadFull(int fd, uint8_t* buf, size_t n, std::chrono::nanoseconds spin) {
  size_t got = 0;
  while (got < n) {
    auto until = std::chrono::steady_clock::now() + spin;
    ssize_t r;
    do {
      r = ::recv(fd, buf + got, n - got, MSG_DONTWAIT);
    } while (r < 0 && errno == EAGAIN && spin.count() > 0 && std::chrono::steady_clock::now() < until);
    if (r > 0) {
      got += static_cast<size_t>(r);
      continue;
    }
    if (r == 0 || errno != EAGAIN) return false;
    pollfd p{fd, POLLIN, 0};
    ::poll(&p, 1, 1000);
  }
  return true;
}

bool WriteFull(int fd, const uint8_t* buf, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, buf, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    buf += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

}  // namespace

RoundTrips TcpPingPong(uint64_t iterations, size_t reply_bytes, std::chrono::microseconds busy_poll) {
  const auto spin = std::chrono::duration_cast<std::chrono::nanoseconds>(busy_poll);
  int ls = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof a;
  if (ls < 0 || ::bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(ls, 1) != 0 ||
      ::getsockname(ls, reinterpret_cast<sockaddr*>(&a), &alen) != 0) {
    std::fprintf(stderr, "tcp ping-pong floor: listen: %s\n", std::strerror(errno));
    if (ls >= 0) ::close(ls);
    return {};
  }
  std::thread server([&] {
    int s = ::accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
    if (s < 0) return;
    int one = 1;
    ::setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::vector<uint8_t> req(kRequest), reply(reply_bytes, 0x5a);
    while (ReadFull(s, req.data(), req.size(), spin) && WriteFull(s, reply.data(), reply.size())) {
    }
    ::close(s);
  });
  RoundTrips out;
  int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  if (c >= 0 && ::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::vector<uint8_t> req(kRequest, 1), reply(reply_bytes);
    std::vector<double> us;
    us.reserve(iterations);
    for (uint64_t i = 0; i < iterations; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      if (!WriteFull(c, req.data(), req.size()) || !ReadFull(c, reply.data(), reply.size(), spin)) {
        std::fprintf(stderr, "tcp ping-pong floor: round trip %llu: %s\n", static_cast<unsigned long long>(i),
                     std::strerror(errno));
        us.clear();
        break;
      }
      us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    }
    if (!us.empty()) {
      std::sort(us.begin(), us.end());
      out.p50_us = us[us.size() / 2];
      out.p99_us = us[std::min(us.size() - 1, us.size() * 99 / 100)];
    }
  } else {
    std::fprintf(stderr, "tcp ping-pong floor: connect: %s\n", std::strerror(errno));
  }
  if (c >= 0) ::close(c);  // the server's read ends
  ::shutdown(ls, SHUT_RDWR);  // an accept that never got its client returns
  server.join();
  ::close(ls);
  return out;
}

}  // namespace agile::bench
