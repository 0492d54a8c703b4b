#include "tls/tls.h"

#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <thread>

namespace agile::tls {

struct Credentials::Impl {
  gnutls_certificate_credentials_t server = nullptr;
  gnutls_certificate_credentials_t client = nullptr;
  ~Impl() {
    if (server) gnutls_certificate_free_credentials(server);
    if (client) gnutls_certificate_free_credentials(client);
  }
};

namespace {

Status TlsError(const std::string& what, int rc) { return Unavailable(what + ": " + gnutls_strerror(rc)); }

// The common name of a PEM certificate file.
Result<std::string> CommonNameOfFile(const std::string& path) {
  gnutls_datum_t data{};
  if (int rc = gnutls_load_file(path.c_str(), &data); rc < 0) return TlsError("read " + path, rc);
  gnutls_x509_crt_t crt;
  gnutls_x509_crt_init(&crt);
  int rc = gnutls_x509_crt_import(crt, &data, GNUTLS_X509_FMT_PEM);
  gnutls_free(data.data);
  std::string cn;
  if (rc >= 0) {
    char buf[256];
    size_t len = sizeof(buf);
    rc = gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, buf, &len);
    if (rc >= 0) cn.assign(buf, len);
  }
  gnutls_x509_crt_deinit(crt);
  if (rc < 0) return TlsError("common name of " + path, rc);
  return cn;
}

Status LoadPair(gnutls_certificate_credentials_t* c, const std::string& dir, const std::string& which) {
  gnutls_certificate_allocate_credentials(c);
  std::string ca = dir + "/ca-cert.pem", cert = dir + "/" + which + "-cert.pem", key = dir + "/" + which + "-key.pem";
  int n = gnutls_certificate_set_x509_trust_file(*c, ca.c_str(), GNUTLS_X509_FMT_PEM);
  if (n <= 0) return n < 0 ? TlsError("load " + ca, n) : InvalidArgument("no CA certificate in " + ca);
  if (int rc = gnutls_certificate_set_x509_key_file(*c, cert.c_str(), key.c_str(), GNUTLS_X509_FMT_PEM); rc < 0)
    return TlsError("load " + cert + " / " + key, rc);
  return Status::Ok();
}

// The verified peer's common name (its first DNS name when it has none).
Result<std::string> PeerName(gnutls_session_t s) {
  unsigned status = 0;
  if (int rc = gnutls_certificate_verify_peers2(s, &status); rc < 0)
    return PermissionDenied(std::string("peer certificate: ") + gnutls_strerror(rc));
  if (status != 0) {
    gnutls_datum_t out{};
    gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0);
    std::string why(reinterpret_cast<char*>(out.data), out.size);
    gnutls_free(out.data);
    return PermissionDenied("peer certificate rejected: " + why);
  }
  unsigned n = 0;
  const gnutls_datum_t* certs = gnutls_certificate_get_peers(s, &n);
  if (certs == nullptr || n == 0) return PermissionDenied("peer sent no certificate");
  gnutls_x509_crt_t crt;
  gnutls_x509_crt_init(&crt);
  std::string name;
  if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) >= 0) {
    char buf[256];
    size_t len = sizeof(buf);
    if (gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, buf, &len) >= 0) {
      name.assign(buf, len);
    } else {
      len = sizeof(buf);
      if (gnutls_x509_crt_get_subject_alt_name(crt, 0, buf, &len, nullptr) == GNUTLS_SAN_DNSNAME) name.assign(buf, len);
    }
  }
  gnutls_x509_crt_deinit(crt);
  if (name.empty()) return PermissionDenied("peer certificate names no host");
  return name;
}

// One secured connection's relay (see tls.h).
struct Relay {
  gnutls_session_t s = nullptr;
  UniqueFd tcp;
  UniqueFd app;  // the relay's end of the socketpair
  std::shared_ptr<const Credentials> creds;  // the session refers to them
  std::atomic<bool> down_done{false};
  ~Relay() {
    if (s) gnutls_deinit(s);
  }
};

constexpr size_t kChunk = 64 << 10;

// Caller's writes -> TLS records.
void RelayUp(std::shared_ptr<Relay> r) {
  std::unique_ptr<char[]> buf(new char[kChunk]);
  bool broken = false;
  for (;;) {
    ssize_t n = ::read(r->app.get(), buf.get(), kChunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    size_t off = 0;
    while (off < static_cast<size_t>(n)) {
      ssize_t w = gnutls_record_send(r->s, buf.get() + off, static_cast<size_t>(n) - off);
      if (w == GNUTLS_E_AGAIN || w == GNUTLS_E_INTERRUPTED) continue;
      if (w < 0) {
        broken = true;
        break;
      }
      off += static_cast<size_t>(w);
    }
    if (broken) break;
  }
  if (broken) {
    // The link is gone: make the caller see it at once, reading and writing.
    ::shutdown(r->app.get(), SHUT_RDWR);
  } else {
    gnutls_bye(r->s, GNUTLS_SHUT_WR);  // close_notify: the peer reads a clean EOF
  }
  ::shutdown(r->tcp.get(), SHUT_WR);
  // The caller may still read (a half-close). Once it has closed its end
  // entirely, or the peer's side is over, stop the other direction too.
  while (!r->down_done) {
    pollfd p{r->app.get(), 0, 0};
    if (::poll(&p, 1, 200) > 0 && (p.revents & (POLLHUP | POLLERR))) break;
  }
  ::shutdown(r->tcp.get(), SHUT_RDWR);
}

// TLS records -> the caller's reads.
void RelayDown(std::shared_ptr<Relay> r) {
  std::unique_ptr<char[]> buf(new char[kChunk]);
  for (;;) {
    ssize_t n = gnutls_record_recv(r->s, buf.get(), kChunk);
    if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED || n == GNUTLS_E_REHANDSHAKE) continue;
    if (n <= 0) {
      if (n < 0 && n != GNUTLS_E_PREMATURE_TERMINATION)
        spdlog::debug("tls: connection ended: {}", gnutls_strerror(static_cast<int>(n)));
      break;
    }
    size_t off = 0;
    bool gone = false;
    while (off < static_cast<size_t>(n)) {
      ssize_t w = ::send(r->app.get(), buf.get() + off, static_cast<size_t>(n) - off, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        gone = true;
        break;
      }
      off += static_cast<size_t>(w);
    }
    if (gone) break;
  }
  ::shutdown(r->app.get(), SHUT_WR);  // EOF for the caller
  r->down_done = true;
}

// expected_host (client only): the name or address the client dialled, which
// the server's certificate must carry (as a DNS or IP subject alternative
// name), as any TLS client checks; "" skips the check (callers that dial an
// fd they did not resolve themselves, and tests).
Result<Secured> Handshake(int tcp_fd, std::shared_ptr<const Credentials> creds, bool server, int timeout_ms,
                          const std::string& expected_host = "") {
  if (!creds) return Internal("TLS handshake without credentials");
  auto r = std::make_shared<Relay>();
  r->creds = creds;
  r->tcp = UniqueFd(::fcntl(tcp_fd, F_DUPFD_CLOEXEC, 0));
  if (!r->tcp) return ErrnoStatus("dup");
  gnutls_init(&r->s, server ? GNUTLS_SERVER : GNUTLS_CLIENT);
  gnutls_set_default_priority(r->s);
  gnutls_credentials_set(r->s, GNUTLS_CRD_CERTIFICATE,
                         server ? creds->impl().server : creds->impl().client);
  if (server) gnutls_certificate_server_set_request(r->s, GNUTLS_CERT_REQUIRE);
  // Verify the peer's chain (and, for a client, the server's name) during
  // the handshake: a bad certificate fails it.
  gnutls_session_set_verify_cert(r->s, server || expected_host.empty() ? nullptr : expected_host.c_str(), 0);
  gnutls_transport_set_int(r->s, r->tcp.get());
  gnutls_handshake_set_timeout(r->s, static_cast<unsigned>(timeout_ms));
  int rc;
  do {
    rc = gnutls_handshake(r->s);
  } while (rc < 0 && gnutls_error_is_fatal(rc) == 0);
  if (rc < 0) {
    if (rc == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
      // Say why (wrong CA, expired, or not for the address dialled).
      std::string why = gnutls_strerror(rc);
      gnutls_datum_t out{};
      if (gnutls_certificate_verification_status_print(gnutls_session_get_verify_cert_status(r->s),
                                                       GNUTLS_CRT_X509, &out, 0) == 0) {
        why = std::string(reinterpret_cast<const char*>(out.data), out.size);
        gnutls_free(out.data);
      }
      if (!expected_host.empty() && why.find("name") != std::string::npos)
        why += " (dialled '" + expected_host + "': the server's certificate must name it; scripts/agile-pki NAME=" +
               expected_host + " adds it)";
      return PermissionDenied("TLS handshake: " + why);
    }
    if (rc == GNUTLS_E_CERTIFICATE_ERROR ||
        rc == GNUTLS_E_NO_CERTIFICATE_FOUND || rc == GNUTLS_E_CERTIFICATE_REQUIRED)
      return PermissionDenied(std::string("TLS handshake: ") + gnutls_strerror(rc));
    if (rc == GNUTLS_E_WARNING_ALERT_RECEIVED || rc == GNUTLS_E_FATAL_ALERT_RECEIVED)
      return PermissionDenied(std::string("TLS handshake: peer sent alert '") +
                              gnutls_alert_get_name(gnutls_alert_get(r->s)) + "'");
    return TlsError("TLS handshake", rc);
  }
  gnutls_handshake_set_timeout(r->s, 0);
  AGILE_ASSIGN_OR_RETURN(std::string peer, PeerName(r->s));
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return ErrnoStatus("socketpair");
  r->app = UniqueFd(sv[1]);
  std::thread(RelayUp, r).detach();
  std::thread(RelayDown, r).detach();
  return Secured{UniqueFd(sv[0]), std::move(peer)};
}

}  // namespace

Credentials::~Credentials() = default;

Result<std::shared_ptr<const Credentials>> Credentials::Load(const std::string& dir) {
  for (const char* f : {"ca-cert.pem", "server-cert.pem", "server-key.pem", "client-cert.pem", "client-key.pem"})
    if (!std::filesystem::exists(dir + "/" + f))
      return NotFound("TLS credentials: missing " + dir + "/" + f + " (make them with scripts/agile-pki)");
  std::shared_ptr<Credentials> c(new Credentials());
  // Absolute: QEMU's tls-creds-x509 reads the same folder from its own cwd.
  c->dir_ = std::filesystem::absolute(dir).lexically_normal().string();
  c->impl_ = std::make_unique<Impl>();
  AGILE_RETURN_IF_ERROR(LoadPair(&c->impl_->server, dir, "server"));
  AGILE_RETURN_IF_ERROR(LoadPair(&c->impl_->client, dir, "client"));
  AGILE_ASSIGN_OR_RETURN(c->identity_, CommonNameOfFile(dir + "/server-cert.pem"));
  if (c->identity_.empty()) return InvalidArgument(dir + "/server-cert.pem has no common name");
  return std::shared_ptr<const Credentials>(std::move(c));
}

std::string DirFromFlagOrEnv(const std::string& flag) {
  if (!flag.empty()) return flag;
  const char* e = std::getenv("AGILE_TLS_DIR");
  return e != nullptr ? e : "";
}

Result<Secured> ServerHandshake(int tcp_fd, std::shared_ptr<const Credentials> creds, int timeout_ms) {
  return Handshake(tcp_fd, std::move(creds), /*server=*/true, timeout_ms);
}

Result<Secured> ClientHandshake(int tcp_fd, std::shared_ptr<const Credentials> creds, int timeout_ms,
                                const std::string& expected_host) {
  return Handshake(tcp_fd, std::move(creds), /*server=*/false, timeout_ms, expected_host);
}

Result<Secured> Connect(const HostPort& hp, std::shared_ptr<const Credentials> creds, int timeout_ms) {
  AGILE_ASSIGN_OR_RETURN(UniqueFd tcp, TcpConnect(hp, timeout_ms));
  auto s = ClientHandshake(tcp.get(), std::move(creds), timeout_ms < 10000 ? 10000 : timeout_ms, hp.host);
  if (!s.ok()) return s.status().Annotate(hp.ToString());
  return s;
}

Result<Secured> ConnectAddress(const std::string& addr, std::shared_ptr<const Credentials> creds) {
  bool is_unix = addr.rfind("unix:", 0) == 0 || (!addr.empty() && addr[0] == '/');
  if (is_unix || !creds) {
    AGILE_ASSIGN_OR_RETURN(UniqueFd fd, agile::ConnectAddress(addr));
    return Secured{std::move(fd), ""};
  }
  AGILE_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(addr));
  return Connect(hp, std::move(creds));
}

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

Status CheckListenPolicy(const std::string& what, const HostPort& hp, bool have_tls, bool insecure) {
  if (have_tls || insecure || IsLoopback(hp.host)) return Status::Ok();
  return PermissionDenied(what + " " + hp.ToString() +
                          ": a TCP listener off loopback needs --tls-dir (mutual TLS), or --insecure to run "
                          "without authentication (docs/security.md)");
}

std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(',', start);
    if (end == std::string::npos) end = s.size();
    std::string item = s.substr(start, end - start);
    if (!item.empty()) out.push_back(item);
    start = end + 1;
  }
  return out;
}

}  // namespace agile::tls
