// A migration peer that breaks the protocol, against a live agiled that also
// runs a VM: each bad message ends only that migration (its incoming QEMU is
// removed), and the daemon and its other VM carry on. The state machine is
// unit-tested message by message in src/migrate/receiver_states_test.cc; this
// is the same promise end to end, on a real socket with a real incoming QEMU.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "agiled_fixture.h"
#include "base/socket.h"
#include "wire/frame_stream.h"
#include "wire/migrate_proto.h"

namespace agile::testing {
namespace {
using nlohmann::json;

class ReceiverAbuseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = FreeTcpPort();
    auto d = AgiledProcess::Start("abuse", {"--listen", "127.0.0.1:" + std::to_string(port_)});
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    d_ = std::move(d).value();
    // A bystander VM whose guest must not notice anything.
    ASSERT_TRUE(d_->Call("vm.start", VmArgs("by", 256, "memverify", {{"size_mib", "64"}, {"rate", "200"}})).ok());
    ASSERT_TRUE(WaitFor(90, [&] { return Guest("by").value("gen", 0ull) > 0; }));
  }
  json Guest(const std::string& vm) {
    auto s = d_->Call("vm.stat", {{"name", vm}});
    return s.ok() ? (*s)["guest"] : json::object();
  }
  // HELLO for a fresh VM; returns the connection once HELLO_ACK arrived (the
  // incoming QEMU is running at the destination by then).
  UniqueFd Hello(const std::string& vm) {
    auto fd = TcpConnect({"127.0.0.1", port_});
    EXPECT_TRUE(fd.ok());
    wire::MigHello h;
    h.mode = wire::MigMode::kPrecopy;
    h.page_count = (64 << 20) / 4096;
    h.spec_json = json{{"name", vm}, {"memory_bytes", 64 << 20}, {"vcpus", 1}, {"workload", "none"}}.dump();
    h.src_host = "abuser";
    std::vector<uint8_t> f;
    wire::AppendHello(&f, h);
    EXPECT_TRUE(wire::SendAll(fd->get(), f.data(), f.size()).ok());
    std::vector<uint8_t> payload;
    auto hdr = wire::ReadFrame(fd->get(), wire::kMigMagic, wire::kMigVersion, wire::kMigMaxPayload, &payload);
    EXPECT_TRUE(hdr.ok()) << hdr.status().ToString();
    if (hdr.ok()) {
      EXPECT_EQ(hdr->type, static_cast<uint16_t>(wire::MigMsg::kHelloAck)) << wire::MigMsgName(hdr->type);
    }
    EXPECT_TRUE(d_->Call("vm.stat", {{"name", vm}}).ok()) << "no incoming VM after HELLO_ACK";
    return std::move(fd).value();
  }
  // After a bad message: the destination answers ABORT naming the problem
  // (or just closes), and drops the incoming VM.
  void ExpectMigrationEnded(UniqueFd fd, const std::string& vm) {
    std::vector<uint8_t> payload;
    for (;;) {
      auto hdr = wire::ReadFrame(fd.get(), wire::kMigMagic, wire::kMigVersion, wire::kMigMaxPayload, &payload);
      if (!hdr.ok()) break;  // closed
      if (hdr->type == static_cast<uint16_t>(wire::MigMsg::kAbort)) {
        auto why = wire::DecodeAbort(payload);
        EXPECT_TRUE(why.ok());
        if (why.ok()) {
          EXPECT_NE(why->find("not valid"), std::string::npos) << *why;
        }
      }
    }
    EXPECT_TRUE(WaitFor(30, [&] { return d_->Call("vm.stat", {{"name", vm}}).status().code() == Code::kNotFound; }))
        << "the incoming VM of a broken migration was left behind";
  }
  void ExpectBystanderFine() {
    ASSERT_TRUE(d_->Call("host.info").ok()) << "agiled is gone";
    uint64_t gen = Guest("by").value("gen", 0ull);
    ASSERT_TRUE(WaitFor(30, [&] { return Guest("by").value("gen", 0ull) > gen; })) << Guest("by").dump();
    EXPECT_EQ(Guest("by")["errors"], 0);
  }
  uint16_t port_ = 0;
  std::unique_ptr<AgiledProcess> d_;
};

TEST_F(ReceiverAbuseTest, SecondHelloEndsOnlyThatMigration) {
  UniqueFd fd = Hello("in1");
  wire::MigHello h;
  h.src_host = "abuser";
  std::vector<uint8_t> f;
  wire::AppendHello(&f, h);
  ASSERT_TRUE(wire::SendAll(fd.get(), f.data(), f.size()).ok());
  ExpectMigrationEnded(std::move(fd), "in1");
  ExpectBystanderFine();
}

TEST_F(ReceiverAbuseTest, DoneBeforeSwitchoverEndsOnlyThatMigration) {
  UniqueFd fd = Hello("in2");
  std::vector<uint8_t> f;
  wire::AppendEmpty(&f, wire::MigMsg::kDone);
  ASSERT_TRUE(wire::SendAll(fd.get(), f.data(), f.size()).ok());
  ExpectMigrationEnded(std::move(fd), "in2");
  ExpectBystanderFine();
}

TEST_F(ReceiverAbuseTest, PeerVanishingMidMigrationEndsOnlyThatMigration) {
  UniqueFd fd = Hello("in3");
  fd.Reset();  // the source dies before sending a page
  EXPECT_TRUE(WaitFor(30, [&] { return d_->Call("vm.stat", {{"name", "in3"}}).status().code() == Code::kNotFound; }));
  ExpectBystanderFine();
}

}  // namespace
}  // namespace agile::testing
