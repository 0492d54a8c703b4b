// The migration channel's bounded waits: a peer that stops reading, half a
// frame then silence, a cancel, and a real partition (a veth link set down
// between this process and a network namespace it makes).
#include "migrate/channel.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <future>
#include <thread>

#include "base/socket.h"

namespace agile::migrate {
namespace {
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

std::vector<uint8_t> Frames(size_t bytes) {
  std::vector<uint8_t> payload(bytes, 0xab);
  return wire::MakeFrame(wire::kMigMagic, wire::kMigVersion, static_cast<uint16_t>(wire::MigMsg::kRound), payload);
}

std::pair<UniqueFd, UniqueFd> Pair() {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

TEST(Channel, SendFailsWithinTheIoTimeoutWhenThePeerTakesNothing) {
  auto [a, b] = Pair();  // b is never read
  Channel ch(std::move(a), 300);
  auto frame = Frames(1 << 20);
  auto start = Clock::now();
  Status s;
  for (int i = 0; i < 64 && s.ok(); ++i) s = ch.Send(frame);
  auto took = Clock::now() - start;
  EXPECT_EQ(s.code(), Code::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("took no byte for 300 ms"), std::string::npos) << s.ToString();
  EXPECT_GE(took, milliseconds(280));
  EXPECT_LT(took, milliseconds(2000));
}

TEST(Channel, CancelInterruptsABlockedSendAndAWaitingReceive) {
  auto [a, b] = Pair();
  Channel ch(std::move(a), 60000);
  std::atomic<bool> cancel{false};
  ch.set_interrupt([&] { return cancel.load(); });
  auto frame = Frames(1 << 20);
  auto sender = std::async(std::launch::async, [&] {
    Status s;
    while (s.ok()) s = ch.Send(frame);
    return s;
  });
  std::this_thread::sleep_for(milliseconds(300));
  auto start = Clock::now();
  cancel = true;
  Status s = sender.get();
  EXPECT_LT(Clock::now() - start, milliseconds(1000));
  EXPECT_NE(s.message().find("interrupted"), std::string::npos) << s.ToString();

  std::vector<uint8_t> payload;
  start = Clock::now();
  auto r = ch.Receive(&payload, -1);  // waits for ever but for the interrupt
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("interrupted"), std::string::npos) << r.status().ToString();
  EXPECT_LT(Clock::now() - start, milliseconds(1000));
}

TEST(Channel, HalfAFrameThenSilenceFailsWithinTheIoTimeout) {
  auto [a, b] = Pair();
  Channel ch(std::move(a), 300);
  auto frame = Frames(4096);
  ASSERT_EQ(::write(b.get(), frame.data(), 100), 100);  // the header and a bit, then nothing
  std::vector<uint8_t> payload;
  auto start = Clock::now();
  auto r = ch.Receive(&payload, -1);
  auto took = Clock::now() - start;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kUnavailable) << r.status().ToString();
  EXPECT_GE(took, milliseconds(280));
  EXPECT_LT(took, milliseconds(2000));
}

// ---- a real partition ----

int Sh(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()); }

// A network namespace joined to this one by a veth pair: 10.251.N.1 here,
// 10.251.N.2 there. Named after this process ("timeouts-PID"), removed at the end.
class Veth {
 public:
  Veth() {
    const int pid = ::getpid();
    ns_ = "timeouts-" + std::to_string(pid);
    dev_ = "tmo" + std::to_string(pid) + "a";
    peer_ = "tmo" + std::to_string(pid) + "b";
    net_ = "10.251." + std::to_string(pid % 250) + ".";
    ok_ = Sh("ip netns add " + ns_) == 0 &&
          Sh("ip link add " + dev_ + " type veth peer name " + peer_ + " netns " + ns_) == 0 &&
          Sh("ip addr add " + net_ + "1/30 dev " + dev_) == 0 && Sh("ip link set " + dev_ + " up") == 0 &&
          Sh("ip -n " + ns_ + " addr add " + net_ + "2/30 dev " + peer_) == 0 &&
          Sh("ip -n " + ns_ + " link set " + peer_ + " up") == 0 && Sh("ip -n " + ns_ + " link set lo up") == 0;
  }
  ~Veth() {
    Sh("ip link del " + dev_);
    Sh("ip netns del " + ns_);
  }
  bool ok() const { return ok_; }
  // Listens in the namespace (a thread that joins it makes the socket there).
  Result<UniqueFd> ListenThere(uint16_t* port) {
    Result<UniqueFd> out = Internal("not run");
    std::thread t([&] {
      int nsfd = ::open(("/run/netns/" + ns_).c_str(), O_RDONLY | O_CLOEXEC);
      if (nsfd < 0 || ::setns(nsfd, CLONE_NEWNET) != 0) {
        out = ErrnoStatus("setns " + ns_);
        if (nsfd >= 0) ::close(nsfd);
        return;
      }
      ::close(nsfd);
      out = TcpListen(HostPort{net_ + "2", 0});
    });
    t.join();
    if (out.ok()) *port = BoundPort(out->get()).value();
    return out;
  }
  std::string there() const { return net_ + "2"; }
  void Cut() { Sh("ip link set " + dev_ + " down"); }

 private:
  std::string ns_, dev_, peer_, net_;
  bool ok_ = false;
};

TEST(ChannelPartition, LinkDownFailsASenderAndAnIdleReaderWithinTheirTimeouts) {
  if (::geteuid() != 0 || Sh("ip -V") != 0) GTEST_SKIP() << "needs root and iproute2 for a network namespace";
  Veth link;
  ASSERT_TRUE(link.ok()) << "could not make the namespace and veth pair";
  uint16_t port = 0;
  auto l = link.ListenThere(&port);
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  // Two connections over the link: one streams pages, one idles (a source
  // waiting for SWITCHOVER_ACK). The far side reads everything it gets.
  std::vector<UniqueFd> far;
  std::vector<UniqueFd> near;
  for (int i = 0; i < 2; ++i) {
    auto c = TcpConnect(HostPort{link.there(), port}, 2000);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    ASSERT_TRUE(SetTcpKeepalive(c->get(), 1, 1, 1500).ok());
    near.push_back(std::move(c).value());
    auto a = Accept(l->get());
    ASSERT_TRUE(a.ok());
    far.push_back(std::move(a).value());
  }
  std::atomic<bool> stop{false};
  std::thread drain([&] {
    char buf[65536];
    while (!stop) {
      pollfd p{far[0].get(), POLLIN, 0};
      if (::poll(&p, 1, 50) > 0 && ::recv(far[0].get(), buf, sizeof(buf), 0) <= 0) break;
    }
  });
  Channel sender(std::move(near[0]), 2000);
  Channel idle(std::move(near[1]), 2000);
  auto frame = Frames(256 << 10);
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(sender.Send(frame).ok());  // the link works

  auto reader = std::async(std::launch::async, [&] {
    std::vector<uint8_t> payload;
    auto start = Clock::now();
    auto r = idle.Receive(&payload, -1);
    return std::make_pair(r.status(), Clock::now() - start);
  });
  link.Cut();
  auto start = Clock::now();
  Status s;
  while (s.ok()) s = sender.Send(frame);
  auto took = Clock::now() - start;
  EXPECT_EQ(s.code(), Code::kUnavailable) << s.ToString();
  EXPECT_LT(took, milliseconds(5000)) << s.ToString();
  // The idle side: keepalive after 1 s, TCP_USER_TIMEOUT 1.5 s.
  auto [rs, waited] = reader.get();
  EXPECT_FALSE(rs.ok());
  EXPECT_LT(waited, milliseconds(8000)) << rs.ToString();
  stop = true;
  drain.join();
}

}  // namespace
}  // namespace agile::migrate
