// The migration receiver over mutual TLS, against a real agiled (no VM is
// booted: every refusal here comes before the incoming QEMU would start).
#include <gtest/gtest.h>

#include <cstdlib>
#include <algorithm>
#include <filesystem>

#include "agiled_fixture.h"
#include "base/socket.h"
#include "tls/tls.h"
#include "wire/frame_stream.h"
#include "wire/migrate_proto.h"

namespace agile::testing {
namespace {

class TlsMigrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = "/tmp/agile-tls-mig-" + std::to_string(::getpid());
    std::string pki = std::string(AGILE_SOURCE_DIR) + "/scripts/agile-pki";
    ASSERT_EQ(std::system((pki + " " + dir_ + "/pki tlsmig-a tlsmig-b >/dev/null").c_str()), 0);
    ASSERT_EQ(std::system((pki + " " + dir_ + "/other tlsmig-b >/dev/null").c_str()), 0);
    port_ = FreeTcpPort();
    auto a = AgiledProcess::Start("tlsmig-a", {"--tls-dir", dir_ + "/pki/tlsmig-a", "--listen",
                                               "127.0.0.1:" + std::to_string(port_)});
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    agiled_ = std::move(a).value();
  }
  void TearDown() override {
    agiled_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::shared_ptr<const tls::Credentials> Creds(const std::string& sub) {
    auto c = tls::Credentials::Load(dir_ + "/" + sub);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? *c : nullptr;
  }
  // Sends a HELLO claiming to come from src_host; returns the destination's
  // answer (an ABORT's reason), or the connection's failure.
  Result<std::string> Hello(const std::shared_ptr<const tls::Credentials>& creds, const std::string& src_host) {
    AGILE_ASSIGN_OR_RETURN(auto sec, tls::Connect({"127.0.0.1", port_}, creds));
    wire::MigHello h;
    h.mode = wire::MigMode::kPrecopy;
    h.page_count = (64 << 20) / 4096;
    h.spec_json = R"({"name":"forged","memory_bytes":67108864,"vcpus":1,"workload":"none"})";
    h.src_host = src_host;
    std::vector<uint8_t> f;
    wire::AppendHello(&f, h);
    AGILE_RETURN_IF_ERROR(wire::SendAll(sec.fd.get(), f.data(), f.size()));
    std::vector<uint8_t> payload;
    AGILE_ASSIGN_OR_RETURN(auto hdr, wire::ReadFrame(sec.fd.get(), wire::kMigMagic, wire::kMigVersion,
                                                     wire::kMigMaxPayload, &payload));
    if (hdr.type != static_cast<uint16_t>(wire::MigMsg::kAbort))
      return Internal(std::string("expected ABORT, got ") + wire::MigMsgName(hdr.type));
    return wire::DecodeAbort(payload);
  }
  std::string dir_;
  uint16_t port_ = 0;
  std::unique_ptr<AgiledProcess> agiled_;
};

TEST_F(TlsMigrationTest, ForgedHelloIsRefused) {
  // b's certificate, a HELLO saying it comes from a: refused.
  auto r = Hello(Creds("pki/tlsmig-b"), "tlsmig-a");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_NE(r->find("certificate names 'tlsmig-b'"), std::string::npos) << *r;
}

TEST_F(TlsMigrationTest, NoOrForeignCertificateGetsNoMigration) {
  // Another CA's certificate of the same name: no handshake, no HELLO.
  EXPECT_FALSE(Hello(Creds("other/tlsmig-b"), "tlsmig-b").ok());
  // No TLS at all: the plain HELLO is not a TLS ClientHello; agiled drops it.
  auto plain = TcpConnect({"127.0.0.1", port_});
  ASSERT_TRUE(plain.ok());
  wire::MigHello h;
  h.src_host = "tlsmig-b";
  std::vector<uint8_t> f;
  wire::AppendHello(&f, h);
  (void)wire::SendAll(plain->get(), f.data(), f.size());
  std::vector<uint8_t> payload;
  EXPECT_FALSE(wire::ReadFrame(plain->get(), wire::kMigMagic, wire::kMigVersion, wire::kMigMaxPayload, &payload).ok());
  // agiled is unharmed.
  EXPECT_TRUE(agiled_->Call("host.info").ok());
}

}  // namespace
}  // namespace agile::testing

namespace agile::testing {
namespace {
using nlohmann::json;

// Whole migrations between two agileds and a memd that all speak only TLS:
// our page stream, memd and QEMU's own stream (device state, or all of RAM in
// a qemu-* mode) are encrypted and mutually authenticated, and the guest's
// integrity checker stays clean at the destination.
class TlsVmMigration : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = "/tmp/" + UniqueTestName("tlsvm");
    std::string pki = std::string(AGILE_SOURCE_DIR) + "/scripts/agile-pki";
    ASSERT_EQ(std::system((pki + " " + dir_ + " tlsvm-a tlsvm-b tlsvm-memd >/dev/null").c_str()), 0);
    auto m = MemdProcess::Start("", 0, {"--tls-dir", dir_ + "/tlsvm-memd"});
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    memd_ = std::move(m).value();
    port_b_ = FreeTcpPort();
    for (const char* h : {"a", "b"}) {
      std::string name = std::string("tlsvm-") + h;
      std::vector<std::string> args = {"--tls-dir", dir_ + "/" + name, "--memd", memd_->addr()};
      if (*h == 'b') args.insert(args.end(), {"--listen", "127.0.0.1:" + std::to_string(port_b_)});
      auto d = AgiledProcess::Start(name, args);
      ASSERT_TRUE(d.ok()) << d.status().ToString();
      (*h == 'a' ? a_ : b_) = std::move(d).value();
    }
  }
  void TearDown() override {
    a_.reset();
    b_.reset();
    memd_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::string dir_;
  uint16_t port_b_ = 0;
  std::unique_ptr<MemdProcess> memd_;
  std::unique_ptr<AgiledProcess> a_, b_;
};

TEST_P(TlsVmMigration, EveryStreamIsTlsAndTheGuestArrivesIntact) {
  const std::string mode = GetParam();
  json args = VmArgs("tv", 256, "memverify", {{"size_mib", "96"}, {"rate", "500"}});
  if (mode.rfind("qemu-", 0) == 0) args["stock"] = true;  // QEMU moves the RAM itself
  auto started = a_->Call("vm.start", args);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  ASSERT_TRUE(WaitFor(90, [&] {
    auto s = a_->Call("vm.stat", {{"name", "tv"}});
    return s.ok() && (*s)["guest"].value("gen", 0) > 0;
  })) << "workload never reported";
  if (mode == "agile") {
    // Some cold pages in memd (over TLS), so the destination reads them there.
    auto off = a_->Call("vm.offload", {{"name", "tv"}, {"resident_bytes", 48ull << 20}});
    ASSERT_TRUE(off.ok()) << off.status().ToString();
  }
  auto r = a_->Call("vm.migrate", {{"name", "tv"}, {"to", "127.0.0.1:" + std::to_string(port_b_)}, {"mode", mode}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)["qemu-stream"], "tls") << r->dump();
  // At the destination: running, errors=0, progress.
  auto stat = [&] {
    auto s = b_->Call("vm.stat", {{"name", "tv"}});
    return s.ok() ? *s : json::object();
  };
  ASSERT_TRUE(WaitFor(30, [&] { return stat()["guest"].contains("errors"); })) << "guest silent";
  uint64_t gen0 = stat()["guest"].value("gen", 0ull);
  ASSERT_TRUE(WaitFor(60, [&] { return stat()["guest"].value("gen", 0ull) > gen0; })) << stat().dump();
  json s = stat();
  EXPECT_EQ(s["state"], "running");
  EXPECT_EQ(s["guest"]["errors"], 0) << s["guest"].dump();
}

INSTANTIATE_TEST_SUITE_P(Modes, TlsVmMigration, ::testing::Values("agile", "qemu-precopy", "qemu-postcopy"),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

}  // namespace
}  // namespace agile::testing
