// StoreReader against a real agile-memd (in-process server, real TCP) that
// is stopped and started again on the same port and store, as a kill -9 and
// restart on its data dir looks to a client: without a retry budget a read
// fails at once (before the commit point the source resumes); with one it
// rides out the outage and returns the page; an outage longer than the budget
// fails within it (docs/reliability.md, finding 4).
#include "migrate/store_reader.h"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <thread>

#include "offload/memd_swap_store.h"
#include "store/memd_server.h"
#include "store/page_store.h"

namespace agile::migrate {
namespace {

using Clock = std::chrono::steady_clock;

int64_t MsSince(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
}

class StoreReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    spdlog::set_level(spdlog::level::warn);
    memd::PageStore::Options o;
    o.capacity_bytes = 16 << 20;
    store_ = std::move(memd::PageStore::Open(o)).value();
    StartServer(0);
    port_ = server_->address().port;
    swap_ = std::make_unique<offload::MemdSwapStore>("127.0.0.1:" + std::to_string(port_), "host-a", "vm-1");
    swap_->SetTimeouts({1000, 1000});
    ASSERT_TRUE(swap_->Claim().ok());
    page_.assign(memd::kPageSize, 0x6b);
    memd::PageRef ref{7, page_.data()};
    ASSERT_TRUE(swap_->Put(std::span<const memd::PageRef>(&ref, 1)).ok());
  }
  void StartServer(uint16_t port) {
    auto s = memd::MemdServer::Start(store_.get(), HostPort{"127.0.0.1", port});
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(s).value();
  }
  // The store's pages survive (a data-dir memd's do); only the server goes.
  void KillServer() { server_.reset(); }
  Status Read(StoreReader& r, std::vector<uint8_t>* out) {
    uint64_t idx = 7;
    uint8_t present = 0;
    out->assign(memd::kPageSize, 0);
    Status s = r.Fetch(std::span<const uint64_t>(&idx, 1), out->data(), &present);
    if (s.ok() && !present) return Internal("page 7 not present");
    return s;
  }

  std::unique_ptr<memd::PageStore> store_;
  std::unique_ptr<memd::MemdServer> server_;
  uint16_t port_ = 0;
  std::unique_ptr<offload::MemdSwapStore> swap_;
  std::vector<uint8_t> page_;
};

TEST_F(StoreReaderTest, WithoutABudgetAnOutageFailsAtOnce) {
  StoreReader r(swap_.get());
  std::vector<uint8_t> out;
  ASSERT_TRUE(Read(r, &out).ok());
  KillServer();
  auto t0 = Clock::now();
  Status s = Read(r, &out);
  EXPECT_EQ(s.code(), Code::kUnavailable) << s.ToString();
  EXPECT_LT(MsSince(t0), 1500);
}

TEST_F(StoreReaderTest, WithABudgetAMemdRestartIsRiddenOut) {
  StoreReader r(swap_.get());
  std::vector<uint8_t> out;
  ASSERT_TRUE(Read(r, &out).ok());  // the bulk connection is up, then memd dies under it
  KillServer();
  r.set_retry_ms(10000);
  std::thread restart([this] {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    StartServer(port_);
  });
  auto t0 = Clock::now();
  Status s = Read(r, &out);
  int64_t ms = MsSince(t0);
  restart.join();
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(out, page_);
  EXPECT_GE(ms, 1400) << "the outage was not injected";
  EXPECT_LT(ms, 5000);
}

TEST_F(StoreReaderTest, AnOutageLongerThanTheBudgetFailsWithinIt) {
  StoreReader r(swap_.get());
  KillServer();
  r.set_retry_ms(800);
  auto t0 = Clock::now();
  std::vector<uint8_t> out;
  Status s = Read(r, &out);
  int64_t ms = MsSince(t0);
  EXPECT_EQ(s.code(), Code::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("after the commit point"), std::string::npos) << s.ToString();
  EXPECT_GE(ms, 750);
  EXPECT_LT(ms, 3000);
}

}  // namespace
}  // namespace agile::migrate
