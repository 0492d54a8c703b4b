#include "store/memd_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <spdlog/spdlog.h>

#include "wire/frame_stream.h"

namespace agile::memd {
namespace {

// Responses to pipelined requests are gathered and sent together, up to this.
constexpr size_t kFlushBytes = 1 << 20;
// How much a misbehaving peer may still send us after its protocol error.
constexpr size_t kDrainLimit = 4 << 20;

std::string PeerName(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof(a);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0 || a.sin_family != AF_INET) return "?";
  char ip[INET_ADDRSTRLEN] = "?";
  ::inet_ntop(AF_INET, &a.sin_addr, ip, sizeof(ip));
  return std::string(ip) + ":" + std::to_string(ntohs(a.sin_port));
}

bool IsProtocolError(const Status& st) {
  return st.code() == Code::kCorruption || st.code() == Code::kUnsupported;
}

// After our last frame: send FIN, then read and drop what the peer still
// sends until it closes. Closing with unread input would reset the
// connection and could destroy the error frame before the peer reads it.
void CloseGracefully(int fd) {
  ::shutdown(fd, SHUT_WR);
  timeval tv{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char sink[16384];
  size_t drained = 0;
  while (drained < kDrainLimit) {
    ssize_t r = ::recv(fd, sink, sizeof(sink), 0);
    if (r <= 0 && !(r < 0 && errno == EINTR)) break;
    if (r > 0) drained += static_cast<size_t>(r);
  }
}

}  // namespace

MemdServer::MemdServer(PageStore* store, UniqueFd listen_fd, HostPort address, MemdServerOptions opts)
    : store_(store), opts_(opts), listen_fd_(std::move(listen_fd)), address_(std::move(address)) {}

Result<std::unique_ptr<MemdServer>> MemdServer::Start(PageStore* store, const HostPort& listen,
                                                      MemdServerOptions opts) {
  AGILE_ASSIGN_OR_RETURN(UniqueFd fd, TcpListen(listen));
  AGILE_ASSIGN_OR_RETURN(uint16_t port, BoundPort(fd.get()));
  HostPort bound{listen.host, port};
  std::unique_ptr<MemdServer> s(new MemdServer(store, std::move(fd), bound, opts));
  s->accept_thread_ = std::thread([p = s.get()] { p->AcceptLoop(); });
  return s;
}

MemdServer::~MemdServer() { Stop(); }

void MemdServer::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    // Wakes the blocked accept() (it fails with EINVAL) and every recv().
    ::shutdown(listen_fd_.get(), SHUT_RDWR);
    for (auto& c : conns_) ::shutdown(c->fd.get(), SHUT_RDWR);
  }
  if (accept_thread_.joinable()) accept_thread_.join();
  // No connection can be added now: the accept thread is gone.
  for (auto& c : conns_) c->thread.join();
  conns_.clear();
}

void MemdServer::ReapFinished() {
  std::lock_guard lock(mu_);
  for (auto it = conns_.begin(); it != conns_.end();) {
    if ((*it)->done) {
      (*it)->thread.join();
      it = conns_.erase(it);
    } else {
      ++it;
    }
  }
}

void MemdServer::AcceptLoop() {
  for (;;) {
    auto fd = Accept(listen_fd_.get());
    ReapFinished();
    if (!fd.ok()) {
      {
        std::lock_guard lock(mu_);
        if (stopping_) return;
      }
      // EMFILE and the like: say so, back off, keep serving existing connections.
      spdlog::error("accept failed: {}", fd.status().ToString());
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    std::lock_guard lock(mu_);
    if (stopping_) return;
    if (conns_.size() >= opts_.max_connections) {
      counters_.connections_refused++;
      spdlog::warn("{}: {} connections open (--max-connections); refusing another", PeerName(fd->get()),
                   conns_.size());
      continue;  // closes it
    }
    auto c = std::make_unique<Conn>();
    c->fd = std::move(fd).value();
    c->peer = PeerName(c->fd.get());
    Conn* raw = c.get();
    conns_.push_back(std::move(c));
    raw->thread = std::thread([this, raw] { Serve(raw); });
  }
}

void MemdServer::Serve(Conn* c) {
  counters_.connections++;
  counters_.connections_open++;
  spdlog::info("connection from {}", c->peer);
  std::string identity;
  if (opts_.tls) {
    auto sec = tls::ServerHandshake(c->fd.get(), opts_.tls);
    if (!sec.ok()) {
      spdlog::warn("{}: TLS connection refused: {}", c->peer, sec.status().ToString());
      ::shutdown(c->fd.get(), SHUT_RDWR);  // the peer must see the end now, not when the fd is reaped
      counters_.connections_open--;
      c->done = true;
      return;
    }
    identity = sec->peer;
    // From here the plaintext side is the connection (the relay keeps the
    // TCP socket); Stop() shuts it down like any other.
    std::lock_guard lock(mu_);
    c->fd = std::move(sec->fd);
    if (stopping_) ::shutdown(c->fd.get(), SHUT_RDWR);
  } else if (opts_.warn_insecure) {
    spdlog::warn("{}: unauthenticated connection (--insecure: any host id a client claims is believed)", c->peer);
  }
  int fd = c->fd.get();
  MemdSession session(store_, &counters_, c->peer, identity);
  session.set_copy_gets(opts_.copy_gets);
  wire::FrameReader reader(fd, kMagic, kVersion, kMaxPayload);
  reader.set_busy_poll(opts_.busy_poll);
  ReplyQueue out;  // GET pages go out from the store's slots, pinned until sent
  Status end;  // why the connection ended
  for (;;) {
    auto frame = reader.Next();
    Status st = frame.status();
    if (st.ok()) {
      auto t0 = std::chrono::steady_clock::now();
      st = session.Handle(frame->header.type, frame->payload, frame->header.length, &out);
      if (frame->header.type < counters_.latency.size())
        counters_.latency[frame->header.type].Record(static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count()));
    }
    if (!st.ok()) {
      end = st;
      break;
    }
    // Flush before we could block on reading: the peer may be waiting.
    if (!reader.HasFrame() || out.size() >= kFlushBytes) {
      // Acknowledge changes only once durable (group commit: one sync covers
      // what every session changed before it). If the sync fails, the
      // acknowledgements are never sent: the connection is dropped and the
      // client treats the requests as failed.
      if (session.TakeWrote()) {
        if (Status s = store_->WaitDurable(store_->LastWrite()); !s.ok()) {
          spdlog::error("{}: {}; dropping the connection without acknowledging", session.Describe(), s.ToString());
          end = Unavailable("sync failed: " + s.ToString());
          break;
        }
      }
      if (Status s = out.SendAll(fd); !s.ok()) {
        end = s;
        break;
      }
    }
  }

  bool stopping;
  {
    std::lock_guard lock(mu_);
    stopping = stopping_;
  }
  if (end.code() == Code::kNotFound || stopping) {
    spdlog::info("{}: connection closed", session.Describe());
  } else if (IsProtocolError(end)) {
    counters_.protocol_errors++;
    spdlog::warn("{}: protocol error, closing connection: {}", session.Describe(), end.message());
    AppendErrorResponse(out.bytes(), kProtocolErrorType, 0, end);
    (void)out.SendAll(fd);  // best effort: the peer may be gone
    CloseGracefully(fd);
  } else {
    spdlog::info("{}: connection lost: {}", session.Describe(), end.ToString());
  }
  ::shutdown(fd, SHUT_RDWR);
  counters_.connections_open--;
  c->done = true;
}

}  // namespace agile::memd
