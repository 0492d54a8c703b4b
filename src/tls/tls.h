// Mutual TLS (GnuTLS) on agile's TCP links: agilectl -> agiled, agiled <->
// agiled (migration), agiled -> agile-memd. docs/security.md has the model.
//
// Credentials come from a folder laid out as QEMU's tls-creds-x509 wants it:
// ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem,
// client-key.pem (scripts/agile-pki makes one per host). Both sides present
// a certificate, both verify the other's against the CA; a peer's identity
// is its certificate's common name.
//
// A secured connection reaches the rest of agile as a plain socket: the
// handshake runs on the TCP socket, then a relay (two threads, one per
// direction) carries plaintext between the TLS session and one end of a
// unix socketpair, whose other end the caller gets. Every fd-based reader
// and writer (poll, MSG_PEEK, MSG_WAITALL, recvmsg into iovecs, shutdown()
// to wake a blocked reader) works on it unchanged. The relay ends when both
// directions have: the caller closing its end closes the TCP connection.
//
// Thread-safe: Credentials are immutable once loaded and shared.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/socket.h"
#include "base/status.h"

namespace agile::tls {

class Credentials {
 public:
  // Loads the five files of `dir`; any missing or unreadable one is an error
  // naming it.
  static Result<std::shared_ptr<const Credentials>> Load(const std::string& dir);
  ~Credentials();
  Credentials(const Credentials&) = delete;
  Credentials& operator=(const Credentials&) = delete;

  const std::string& dir() const { return dir_; }
  // This host's identity: the common name of its server certificate.
  const std::string& identity() const { return identity_; }

  struct Impl;
  const Impl& impl() const { return *impl_; }

 private:
  Credentials() = default;
  std::string dir_, identity_;
  std::unique_ptr<Impl> impl_;
};

// `flag` if set, else $AGILE_TLS_DIR, else "".
std::string DirFromFlagOrEnv(const std::string& flag);

// A connection after a successful handshake.
struct Secured {
  UniqueFd fd;       // plaintext: read and write it as the TCP socket
  std::string peer;  // the peer certificate's common name (verified against the CA)
};

// Handshakes as the server on a connected TCP socket, requiring a client
// certificate signed by the CA. tcp_fd is duplicated for the relay: the
// caller may close its copy once this returns. kPermissionDenied when the
// peer has no valid certificate; kUnavailable on timeout or a broken link.
Result<Secured> ServerHandshake(int tcp_fd, std::shared_ptr<const Credentials> creds, int timeout_ms = 10000);
// Handshakes as the client with this host's client certificate; the
// server's certificate must be signed by the CA and, unless expected_host is
// "", name expected_host (the DNS name or IP address dialled) among its
// subject alternative names - kPermissionDenied otherwise.
Result<Secured> ClientHandshake(int tcp_fd, std::shared_ptr<const Credentials> creds, int timeout_ms = 10000,
                                const std::string& expected_host = "");

// TcpConnect + ClientHandshake, expecting the server's certificate to name hp.host.
Result<Secured> Connect(const HostPort& hp, std::shared_ptr<const Credentials> creds, int timeout_ms = 5000);
// "unix:PATH"/"/path" connect plainly; HOST:PORT connects with TLS when
// creds is set, plainly otherwise. peer is "" for plain connections.
Result<Secured> ConnectAddress(const std::string& addr, std::shared_ptr<const Credentials> creds);

// 127.0.0.0/8, "localhost" and "::1".
bool IsLoopback(const std::string& host);
// A TCP listener's policy: with credentials, or bound to loopback, or
// explicitly --insecure. `what` names the flag for the error.
Status CheckListenPolicy(const std::string& what, const HostPort& hp, bool have_tls, bool insecure);

// "a,b,c" -> {"a","b","c"}; empty entries dropped.
std::vector<std::string> SplitList(const std::string& s);

}  // namespace agile::tls
