#include "relay.h"

#include <arpa/inet.h>
#include <errno.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>

namespace agile::testing {

Relay::Relay(uint16_t port, uint16_t target) : port_(port), target_(target) { Listen(); }

Relay::~Relay() {
  stop_ = true;
  KillAll();
}

void Relay::Freeze() {
  frozen_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);
  accept_.join();
}

void Relay::Heal() {
  KillAll();
  kill_ = false;
  frozen_ = false;
  Listen();
}

void Relay::Listen() {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a = Loopback(port_);
  EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0) << strerror(errno);
  EXPECT_EQ(::listen(listen_fd_, 16), 0);
  accept_ = std::thread([this, fd = listen_fd_] { Accept(fd); });
}

sockaddr_in Relay::Loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

void Relay::KillAll() {
  kill_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);
  if (accept_.joinable()) accept_.join();
  std::vector<std::thread> pumps;
  {
    std::lock_guard<std::mutex> l(mu_);
    pumps.swap(pumps_);
  }
  for (auto& t : pumps) t.join();
}

void Relay::Accept(int lfd) {
  for (;;) {
    int c = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) break;
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a = Loopback(target_);
    if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
      ::close(c);
      ::close(s);
      continue;
    }
    std::lock_guard<std::mutex> l(mu_);
    pumps_.emplace_back([this, c, s] { Pump(c, s); });
  }
  ::close(lfd);
}

void Relay::Pump(int a, int b) {
  char buf[65536];
  for (;;) {
    if (kill_ || stop_) break;
    if (frozen_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
    if (::poll(p, 2, 50) < 0) break;
    bool done = false;
    for (int i = 0; i < 2 && !done && !frozen_; ++i) {
      if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::recv(p[i].fd, buf, sizeof(buf), 0);
      if (n <= 0) {
        done = true;
        break;
      }
      for (ssize_t off = 0; off < n;) {
        if (kill_ || stop_) {
          done = true;
          break;
        }
        ssize_t w = ::send(p[1 - i].fd, buf + off, static_cast<size_t>(n - off), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          pollfd o = {p[1 - i].fd, POLLOUT, 0};
          ::poll(&o, 1, 50);
          continue;
        }
        if (w <= 0) {
          done = true;
          break;
        }
        off += w;
      }
    }
    if (done) break;
  }
  ::close(a);
  ::close(b);
}

}  // namespace agile::testing
