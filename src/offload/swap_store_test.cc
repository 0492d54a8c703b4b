// The swap store's bounded waits and the lost-TRANSFER resolution, against a
// real agile-memd server (in-process, real TCP) behind a proxy that cuts or
// silences the link on command.
#include "offload/memd_swap_store.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "base/socket.h"
#include "store/memd_client.h"
#include "store/memd_server.h"
#include "store/page_store.h"

namespace agile::offload {
namespace {

// A TCP relay between clients and agile-memd that can fail the link:
// kCutOnReply closes both ends when the server's next bytes arrive (the
// request got there, its reply is lost), then goes back to passing;
// kSilent drops every byte either way and keeps the sockets open (a silent
// partition: no RST, no FIN, nothing delivered later).
class LinkProxy {
 public:
  enum Mode { kPass, kCutOnReply, kSilent };
  explicit LinkProxy(HostPort upstream) : upstream_(std::move(upstream)) {
    listen_ = std::move(TcpListen(HostPort{"127.0.0.1", 0})).value();
    port_ = BoundPort(listen_.get()).value();
    accept_ = std::thread([this] { AcceptLoop(); });
  }
  ~LinkProxy() {
    stop_ = true;
    accept_.join();
    for (auto& t : pumps_) t.join();
  }
  std::string addr() const { return "127.0.0.1:" + std::to_string(port_); }
  void set_mode(Mode m) { mode_ = m; }
  int cuts() const { return cuts_; }
  int accepted() const { return accepted_; }

 private:
  void AcceptLoop() {
    while (!stop_) {
      pollfd p{listen_.get(), POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      auto c = Accept(listen_.get());
      if (!c.ok()) continue;
      auto s = TcpConnect(upstream_);
      if (!s.ok()) continue;
      ++accepted_;
      pumps_.emplace_back([this, c = std::move(c).value(), s = std::move(s).value()]() mutable {
        Pump(std::move(c), std::move(s));
      });
    }
  }
  void Pump(UniqueFd client, UniqueFd server) {
    char buf[65536];
    while (!stop_) {
      pollfd p[2] = {{client.get(), POLLIN, 0}, {server.get(), POLLIN, 0}};
      if (::poll(p, 2, 50) <= 0) continue;
      for (int i = 0; i < 2; ++i) {
        if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        int from = i == 0 ? client.get() : server.get(), to = i == 0 ? server.get() : client.get();
        if (mode_ == kSilent) {  // lost on the way, as packets on a dead link
          if (::recv(from, buf, sizeof(buf), 0) <= 0) return;
          continue;
        }
        if (i == 1 && mode_ == kCutOnReply) {
          mode_ = kPass;
          ++cuts_;
          return;  // both sockets close: the reply never reaches the client
        }
        ssize_t n = ::recv(from, buf, sizeof(buf), 0);
        if (n <= 0) return;
        if (::send(to, buf, static_cast<size_t>(n), MSG_NOSIGNAL) != n) return;
      }
    }
  }

  HostPort upstream_;
  UniqueFd listen_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<Mode> mode_{kPass};
  std::atomic<int> cuts_{0};
  std::atomic<int> accepted_{0};
  std::thread accept_;
  std::vector<std::thread> pumps_;
};

class SwapStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    spdlog::set_level(spdlog::level::off);
    memd::PageStore::Options o;
    o.capacity_bytes = 64 << 20;
    store_ = std::move(memd::PageStore::Open(o)).value();
    server_ = std::move(memd::MemdServer::Start(store_.get(), HostPort{"127.0.0.1", 0})).value();
    proxy_ = std::make_unique<LinkProxy>(server_->address());
  }
  std::unique_ptr<SwapStore> Store(const std::string& host, int request_ms = 1000) {
    auto s = std::make_unique<MemdSwapStore>(proxy_->addr(), host, "vm-1");
    s->SetTimeouts({request_ms, request_ms});
    return s;
  }
  static std::vector<uint8_t> Page(uint8_t fill) { return std::vector<uint8_t>(memd::kPageSize, fill); }

  std::unique_ptr<memd::PageStore> store_;
  std::unique_ptr<memd::MemdServer> server_;
  std::unique_ptr<LinkProxy> proxy_;
};

TEST_F(SwapStoreTest, LostTransferReplyIsResolvedByAskingAgain) {
  auto src = Store("host-a");
  ASSERT_TRUE(src->Claim().ok());
  auto page = Page(0x5a);
  memd::PageRef ref{7, page.data()};
  ASSERT_TRUE(src->Put(std::span<const memd::PageRef>(&ref, 1)).ok());

  proxy_->set_mode(LinkProxy::kCutOnReply);  // TRANSFER reaches memd, its reply does not come back
  auto token = src->Transfer("host-b");
  ASSERT_TRUE(token.ok()) << token.status().ToString();
  EXPECT_EQ(proxy_->cuts(), 1) << "the fault was not injected";
  EXPECT_EQ(token->epoch, 2u) << "transferred once, not twice";

  // The token the source got on the retry is the destination's, and works there.
  auto dst = memd::MemdClient::Connect(server_->address().ToString(), "host-b");
  ASSERT_TRUE(dst.ok());
  uint64_t idx = 7;
  std::vector<uint8_t> out(memd::kPageSize);
  uint8_t* outs[1] = {out.data()};
  uint8_t present = 0;
  ASSERT_TRUE((*dst)->Get("vm-1", *token, std::span<const uint64_t>(&idx, 1), outs, std::span<uint8_t>(&present, 1)).ok());
  EXPECT_EQ(present, 1);
  EXPECT_EQ(out, page);
  // The lease moved: the source is told so when it asks.
  auto mine = src->OwnedHere();
  ASSERT_TRUE(mine.ok()) << mine.status().ToString();
  EXPECT_FALSE(*mine);
}

// An incoming VM dials before switchover (Prepare), so the first refault
// after the token arrives is one request on that connection: no dial, no
// RECLAIM inside the downtime.
TEST_F(SwapStoreTest, PrepareDialsAheadAndTheAdoptedTokenWorksOnThatConnection) {
  auto src = Store("host-a");
  ASSERT_TRUE(src->Claim().ok());
  auto page = Page(0x3c);
  memd::PageRef ref{9, page.data()};
  ASSERT_TRUE(src->Put(std::span<const memd::PageRef>(&ref, 1)).ok());

  auto dst = Store("host-b");
  const int before = proxy_->accepted();
  dst->Prepare();
  for (int i = 0; i < 100 && proxy_->accepted() == before; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(proxy_->accepted(), before + 1) << "Prepare did not dial";

  uint64_t idx = 9;
  std::vector<uint8_t> out(memd::kPageSize);
  uint8_t present = 0;
  EXPECT_EQ(dst->Fetch(std::span<const uint64_t>(&idx, 1), out.data(), &present).code(), Code::kPermissionDenied)
      << "not this host's before the token arrives";
  auto token = src->Transfer("host-b");
  ASSERT_TRUE(token.ok()) << token.status().ToString();
  dst->Adopt(*token);
  ASSERT_TRUE(dst->Fetch(std::span<const uint64_t>(&idx, 1), out.data(), &present).ok());
  EXPECT_EQ(present, 1);
  EXPECT_EQ(out, page);
  EXPECT_EQ(proxy_->accepted(), before + 1) << "the refault dialled again instead of using the prepared connection";
}

TEST_F(SwapStoreTest, OwnedHereWhileTheTokenStaysAndUnknownWhenMemdIsSilent) {
  auto src = Store("host-a", 500);
  ASSERT_TRUE(src->Claim().ok());
  auto mine = src->OwnedHere();
  ASSERT_TRUE(mine.ok());
  EXPECT_TRUE(*mine);

  proxy_->set_mode(LinkProxy::kSilent);
  auto start = std::chrono::steady_clock::now();
  auto t = src->Transfer("host-b");
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), Code::kUnavailable) << t.status().ToString();
  // Two tries (the retry redials through the same silent link), each bounded.
  EXPECT_LT(took, std::chrono::milliseconds(3000));
  auto unknown = src->OwnedHere();
  EXPECT_FALSE(unknown.ok());

  proxy_->set_mode(LinkProxy::kPass);
  // The request never got through the silent link: the source still owns it.
  auto again = src->OwnedHere();
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(*again);
}

TEST_F(SwapStoreTest, RefaultOnASilentStoreFailsWithinTheRequestTimeout) {
  auto src = Store("host-a", 400);
  ASSERT_TRUE(src->Claim().ok());
  auto page = Page(1);
  memd::PageRef ref{3, page.data()};
  ASSERT_TRUE(src->Put(std::span<const memd::PageRef>(&ref, 1)).ok());
  uint64_t idx = 3;
  std::vector<uint8_t> out(memd::kPageSize);
  uint8_t present = 0;
  ASSERT_TRUE(src->Fetch(std::span<const uint64_t>(&idx, 1), out.data(), &present).ok());  // connection up

  proxy_->set_mode(LinkProxy::kSilent);
  auto start = std::chrono::steady_clock::now();
  Status s = src->Fetch(std::span<const uint64_t>(&idx, 1), out.data(), &present);
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(s.code(), Code::kUnavailable) << s.ToString();
  EXPECT_GE(took, std::chrono::milliseconds(350));
  EXPECT_LT(took, std::chrono::milliseconds(2000));
}

TEST(MemdClientTimeout, HelloUnansweredFailsWithinTheConnectTimeout) {
  // A listener that accepts (the kernel does) and never answers.
  auto l = TcpListen(HostPort{"127.0.0.1", 0});
  ASSERT_TRUE(l.ok());
  memd::MemdClientOptions o;
  o.connect_timeout_ms = 300;
  auto start = std::chrono::steady_clock::now();
  auto c = memd::MemdClient::Connect("127.0.0.1:" + std::to_string(BoundPort(l->get()).value()), "host-a", o);
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kUnavailable) << c.status().ToString();
  EXPECT_LT(took, std::chrono::milliseconds(2000));
}

}  // namespace
}  // namespace agile::offload
