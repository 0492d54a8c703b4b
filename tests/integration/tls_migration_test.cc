// The migration receiver over mutual TLS, against a real agiled (no VM is
// booted: every refusal here comes before the incoming QEMU would start).
#include <gtest/gtest.h>

#include <cstdlib>
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
