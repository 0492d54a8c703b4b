#include "store/memd_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "store/reply_queue.h"
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
  // Acknowledge changes only once durable, without waiting here for the
  // commit: this thread goes on reading and applying pipelined requests
  // while the store's committer syncs, so one commit covers what every
  // connection sent meanwhile. Replies wait in `held` (request order) and go
  // out when the committer says (the eventfd) their commit is done. If a
  // commit fails they are never sent: the connection is dropped and the
  // client treats the requests as failed.
  // GET pages travel as pinned slots in the ReplyBatch (no copy), waiting
  // in `held` with the rest; their pins go once the batch is sent.
  UniqueFd wake(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  Status end;  // why the connection ended
  if (!wake) end = ErrnoStatus("eventfd");
  else store_->AddCommitListener(wake.get());
  ReplyBatch out;           // replies to requests handled since the last Push
  uint64_t out_ticket = 0;  // the change they must wait for; 0: none
  ReplyQueue held;
  ReplyBatch ready;
  bool readable = true;  // Next() will not wait for a peer that waits for us
  while (end.ok()) {
    if (readable || reader.HasFrame() || held.empty()) {
      auto frame = reader.Next();
      Status st = frame.status();
      if (st.ok()) {
        auto t0 = std::chrono::steady_clock::now();
        st = session.Handle(frame->header.type, frame->payload, frame->header.length, &out);
        if (frame->header.type < counters_.latency.size())
          counters_.latency[frame->header.type].Record(static_cast<uint64_t>(
              std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count()));
        if (session.TakeWrote()) out_ticket = store_->LastWrite();
      }
      if (!st.ok()) {
        end = st;
        break;
      }
      // More requests already here: answer them together.
      if (reader.HasFrame() && out.size() < kFlushBytes) continue;
      if (held.empty() && (out_ticket == 0 || out_ticket <= store_->DurableThrough())) {
        // Nothing to wait for (a GET, a memory-only store): send from `out`
        // itself, which keeps its buffers for the next replies.
        if (Status s = out.SendAll(fd); !s.ok()) {
          end = s;
          break;
        }
        out_ticket = 0;
        continue;
      }
      if (out_ticket != 0) store_->RequestCommit(out_ticket);
      held.Push(out_ticket, &out);
      out_ticket = 0;
    }
    // Send what is durable, in order.
    Status failed;
    uint64_t durable = store_->DurableThrough(&failed);
    held.TakeReady(durable, &ready);
    if (!ready.empty()) {
      if (Status s = ready.SendAll(fd); !s.ok()) {
        end = s;
        break;
      }
    }
    if (!held.empty() && !failed.ok()) {
      spdlog::error("{}: {}; dropping the connection without acknowledging", session.Describe(), failed.ToString());
      end = Unavailable("sync failed: " + failed.ToString());
      break;
    }
    readable = false;
    if (held.empty() || reader.HasFrame()) continue;
    // Replies wait for a commit: wait for it or for more requests, whichever
    // comes first. A frame begun is finished by Next(): the peer sends whole
    // frames.
    pollfd p[2] = {{fd, POLLIN, 0}, {wake.get(), POLLIN, 0}};
    if (::poll(p, 2, -1) < 0 && errno != EINTR) {
      end = ErrnoStatus("poll");
      break;
    }
    if (p[1].revents & POLLIN) {
      uint64_t n;
      (void)!::read(wake.get(), &n, sizeof(n));
    }
    readable = (p[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0;
  }
  if (wake) store_->RemoveCommitListener(wake.get());

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
    // The good requests before the bad frame are answered first, once durable.
    held.Push(out_ticket, &out);
    if (!held.empty() && store_->WaitDurable(held.waiting_for()).ok()) held.TakeAll(&out);
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
