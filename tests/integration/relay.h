// A TCP relay a test owns, to break a link for real: 127.0.0.1:port ->
// 127.0.0.1:target, byte for byte (TLS passes through untouched), until
// Freeze() makes it a silent partition. Used by recover_test.cc.
#pragma once

#include <netinet/in.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace agile::testing {

class Relay {
 public:
  Relay(uint16_t port, uint16_t target);
  ~Relay();
  // A silent partition: relayed connections stop moving bytes (neither end
  // sees a FIN or a reset) and new connections are refused.
  void Freeze();
  // The link is back: the frozen connections are gone (as after a long
  // partition both ends dropped them) and new ones are relayed again.
  void Heal();

 private:
  void Listen();
  static sockaddr_in Loopback(uint16_t port);
  void KillAll();
  void Accept(int lfd);
  void Pump(int a, int b);

  uint16_t port_, target_;
  int listen_fd_ = -1;
  std::atomic<bool> frozen_{false}, kill_{false}, stop_{false};
  std::thread accept_;
  std::mutex mu_;
  std::vector<std::thread> pumps_;
};

}  // namespace agile::testing
