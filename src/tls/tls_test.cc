#include "tls/tls.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstdlib>
#include <future>
#include <string>
#include <tuple>
#include <vector>

#include "base/io.h"
#include "base/socket.h"

namespace agile::tls {
namespace {

// Two independent CAs from scripts/agile-pki: hosts a and b under one, x under another.
class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string("/tmp/agile-tls-test-" + std::to_string(::getpid()));
    std::string pki = std::string(AGILE_SOURCE_DIR) + "/scripts/agile-pki";
    ASSERT_EQ(std::system((pki + " " + *dir_ + "/one a b c=10.9.8.7,c.example >/dev/null").c_str()), 0);
    ASSERT_EQ(std::system((pki + " " + *dir_ + "/two x >/dev/null").c_str()), 0);
  }
  static void TearDownTestSuite() {
    (void)std::system(("rm -rf " + *dir_).c_str());
    delete dir_;
  }
  static std::shared_ptr<const Credentials> Creds(const std::string& sub) {
    auto c = Credentials::Load(*dir_ + "/" + sub);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? *c : nullptr;
  }
  static std::string* dir_;
};
std::string* TlsTest::dir_ = nullptr;

struct Listener {
  UniqueFd fd;
  HostPort hp;
  Listener() {
    fd = std::move(TcpListen({"127.0.0.1", 0})).value();
    hp = {"127.0.0.1", BoundPort(fd.get()).value()};
  }
};

TEST_F(TlsTest, LoadsIdentity) {
  auto a = Creds("one/a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->identity(), "a");
  auto missing = Credentials::Load(*dir_ + "/nope");
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
}

TEST_F(TlsTest, MutualHandshakeCarriesBytesBothWays) {
  Listener l;
  auto server = std::async(std::launch::async, [&]() -> Result<Secured> {
    AGILE_ASSIGN_OR_RETURN(UniqueFd c, Accept(l.fd.get()));
    return ServerHandshake(c.get(), Creds("one/a"));
  });
  auto client = Connect(l.hp, Creds("one/b"));
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  auto srv = server.get();
  ASSERT_TRUE(srv.ok()) << srv.status().ToString();
  EXPECT_EQ(client->peer, "a");
  EXPECT_EQ(srv->peer, "b");
  // A megabyte one way, a reply the other, then a clean EOF after close.
  std::string big(1 << 20, 'x');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7);
  auto sent = std::async(std::launch::async, [&] { return WriteFull(client->fd.get(), big.data(), big.size()); });
  std::string got(big.size(), 0);
  ASSERT_TRUE(ReadFull(srv->fd.get(), got.data(), got.size()).ok());
  ASSERT_TRUE(sent.get().ok());
  EXPECT_EQ(got, big);
  ASSERT_TRUE(WriteFull(srv->fd.get(), "ok", 2).ok());
  char two[2];
  ASSERT_TRUE(ReadFull(client->fd.get(), two, 2).ok());
  EXPECT_EQ(std::string(two, 2), "ok");
  client->fd.Reset();
  char c;
  EXPECT_EQ(ReadFull(srv->fd.get(), &c, 1).code(), Code::kNotFound);  // clean EOF
}

TEST_F(TlsTest, CertificateFromAnotherCaIsRefused) {
  Listener l;
  auto server = std::async(std::launch::async, [&]() -> Result<Secured> {
    AGILE_ASSIGN_OR_RETURN(UniqueFd c, Accept(l.fd.get()));
    return ServerHandshake(c.get(), Creds("one/a"), 5000);
  });
  auto client = Connect(l.hp, Creds("two/x"));
  EXPECT_FALSE(client.ok());
  auto srv = server.get();
  EXPECT_FALSE(srv.ok());
}

// A client checks that the server's certificate names the address it
// dialled: every agile-pki certificate names localhost and 127.0.0.1, and the
// extra addresses given after '='; another name is refused before any byte.
TEST_F(TlsTest, ServerCertificateMustNameTheDialledAddress) {
  for (const auto& [server_creds, host, ok] :
       std::vector<std::tuple<std::string, std::string, bool>>{{"one/a", "127.0.0.1", true},
                                                               {"one/a", "localhost", true},
                                                               {"one/a", "a", true},
                                                               {"one/c", "c.example", true},
                                                               {"one/c", "10.9.8.7", true},
                                                               {"one/a", "b", false},
                                                               {"one/a", "10.9.8.7", false}}) {
    SCOPED_TRACE(server_creds + " dialled as " + host);
    Listener l;
    auto server = std::async(std::launch::async, [&]() -> Result<Secured> {
      AGILE_ASSIGN_OR_RETURN(UniqueFd c, Accept(l.fd.get()));
      return ServerHandshake(c.get(), Creds(server_creds), 5000);
    });
    auto tcp = TcpConnect(l.hp);
    ASSERT_TRUE(tcp.ok());
    auto client = ClientHandshake(tcp->get(), Creds("one/b"), 5000, host);
    if (ok) {
      EXPECT_TRUE(client.ok()) << client.status().ToString();
    } else {
      ASSERT_FALSE(client.ok());
      EXPECT_EQ(client.status().code(), Code::kPermissionDenied);
      EXPECT_NE(client.status().ToString().find("dialled '" + host + "'"), std::string::npos)
          << client.status().ToString();
    }
    tcp->Reset();
    (void)server.get();
  }
}

TEST_F(TlsTest, PlainClientIsRefused) {
  Listener l;
  auto server = std::async(std::launch::async, [&]() -> Result<Secured> {
    AGILE_ASSIGN_OR_RETURN(UniqueFd c, Accept(l.fd.get()));
    return ServerHandshake(c.get(), Creds("one/a"), 2000);
  });
  auto plain = TcpConnect(l.hp);
  ASSERT_TRUE(plain.ok());
  std::string hello = "{\"op\":\"host.info\"}\n";
  (void)WriteFull(plain->get(), hello.data(), hello.size());
  auto srv = server.get();
  EXPECT_FALSE(srv.ok());
}

TEST(TlsPolicy, ListenerOffLoopbackNeedsCredentialsOrInsecure) {
  EXPECT_TRUE(CheckListenPolicy("--listen", {"127.0.0.1", 1}, false, false).ok());
  EXPECT_TRUE(CheckListenPolicy("--listen", {"localhost", 1}, false, false).ok());
  EXPECT_EQ(CheckListenPolicy("--listen", {"0.0.0.0", 1}, false, false).code(), Code::kPermissionDenied);
  EXPECT_EQ(CheckListenPolicy("--listen", {"10.0.0.1", 1}, false, false).code(), Code::kPermissionDenied);
  EXPECT_TRUE(CheckListenPolicy("--listen", {"10.0.0.1", 1}, true, false).ok());
  EXPECT_TRUE(CheckListenPolicy("--listen", {"10.0.0.1", 1}, false, true).ok());
  EXPECT_EQ(SplitList("a,,b"), (std::vector<std::string>{"a", "b"}));
}

}  // namespace
}  // namespace agile::tls
