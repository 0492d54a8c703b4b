#include "control/control_server.h"

#include <poll.h>
#include <sys/socket.h>

#include <spdlog/spdlog.h>

#include <algorithm>

#include "base/io.h"
#include "base/json_depth.h"
#include "base/socket.h"

namespace agile::control {
using nlohmann::json;

Result<ControlRequest> ParseControlRequest(std::string_view line) {
  static constexpr char kShape[] = "request must be a JSON object with a string \"op\"";
  if (!JsonDepthWithin(line)) return InvalidArgument(std::string(kShape) + " (nested at most 64 deep)");
  json req = json::parse(line, nullptr, false);
  if (req.is_discarded() || !req.is_object() || !req.contains("op") || !req["op"].is_string())
    return InvalidArgument(kShape);
  ControlRequest r;
  r.op = req["op"].get<std::string>();
  if (auto a = req.find("args"); a != req.end()) r.args = std::move(*a);
  return r;
}

ControlServer::~ControlServer() { Shutdown(); }

void ControlServer::Serve(UniqueFd listen_fd, ListenerOptions opts) {
  int fd = listen_fd.get();
  listeners_.push_back(std::move(listen_fd));
  listener_opts_.push_back(std::make_unique<ListenerOptions>(std::move(opts)));
  const ListenerOptions* o = listener_opts_.back().get();
  threads_.emplace_back([this, fd, o] { AcceptLoop(fd, o); });
}

void ControlServer::Shutdown() {
  if (stop_.exchange(true)) return;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (int c : conns_) ::shutdown(c, SHUT_RDWR);
  }
  for (auto& l : listeners_) ::shutdown(l.get(), SHUT_RDWR);
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  // Connection threads are detached (a daemon serves many short connections);
  // wait for the last one to leave before members go away.
  std::unique_lock<std::mutex> l(mu_);
  idle_.wait(l, [this] { return conns_.empty(); });
}

void ControlServer::AcceptLoop(int fd, const ListenerOptions* opts) {
  while (!stop_) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    auto conn = Accept(fd);
    if (!conn.ok()) {
      if (!stop_) spdlog::warn("control: {}", conn.status().ToString());
      continue;
    }
    if (!opts->local) {
      Status ka = SetTcpKeepalive(conn->get(), opts->keepalive_idle_s, opts->keepalive_interval_s,
                                  opts->tcp_user_timeout_ms);
      if (!ka.ok()) spdlog::warn("control: {}", ka.ToString());
    }
    std::lock_guard<std::mutex> l(mu_);
    if (stop_) return;
    if (conns_.size() >= kMaxConnections) {  // one thread each: refuse rather than grow without bound
      spdlog::warn("control: {} connections open; refusing another", conns_.size());
      continue;  // closes it
    }
    conns_.push_back(conn->get());
    std::thread([this, opts, c = std::move(conn).value()]() mutable { ServeConnection(std::move(c), *opts); }).detach();
  }
}

void ControlServer::ServeConnection(UniqueFd conn, const ListenerOptions& opts) {
  Caller caller;
  caller.local = opts.local;
  if (opts.tls) {
    // Handshake first; the plaintext side replaces the TCP socket (which the
    // relay keeps) in conns_, so Shutdown() still wakes this thread.
    int tcp = conn.get();
    auto sec = tls::ServerHandshake(tcp, opts.tls);
    bool allowed = sec.ok() && (opts.allow.empty() || std::find(opts.allow.begin(), opts.allow.end(), sec->peer) !=
                                                          opts.allow.end());
    if (!sec.ok()) spdlog::warn("control: TLS connection refused: {}", sec.status().ToString());
    else if (!allowed) spdlog::warn("control: TLS peer '{}' is not in --allow: connection refused", sec->peer);
    std::lock_guard<std::mutex> l(mu_);
    conns_.erase(std::remove(conns_.begin(), conns_.end(), tcp), conns_.end());
    if (!allowed || stop_) {
      idle_.notify_all();
      return;
    }
    caller.identity = sec->peer;
    conn = std::move(sec->fd);
    conns_.push_back(conn.get());
  } else if (opts.warn_insecure) {
    spdlog::warn("control: unauthenticated TCP connection (--insecure: anyone who can reach this port controls "
                 "agiled)");
  }
  char first = 0;
  ssize_t n;
  do {
    n = ::recv(conn.get(), &first, 1, MSG_PEEK);
  } while (n < 0 && errno == EINTR);
  if (n == 1 && first != '{' && binary_) {
    int fd = conn.get();
    binary_(std::move(conn), caller);
    std::lock_guard<std::mutex> l(mu_);
    conns_.erase(std::remove(conns_.begin(), conns_.end(), fd), conns_.end());
    idle_.notify_all();
    return;
  }
  LineReader reader(conn.get());
  std::mutex write_mu;
  Progress progress = [&](const json& p) {
    std::string out = json{{"progress", p}}.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
    std::lock_guard<std::mutex> l(write_mu);
    (void)WriteFull(conn.get(), out.data(), out.size());
  };
  for (;;) {
    auto line = reader.Next();
    if (!line.ok()) break;
    json resp;
    auto req = ParseControlRequest(*line);
    if (!req.ok()) {
      resp = {{"ok", false}, {"error", {{"code", "invalid-argument"}, {"message", req.status().message()}}}};
    } else {
      const std::string& op = req->op;
      const json& args = req->args;
      Reply reply(Internal("unhandled"));
      try {
        reply = handler_(op, args, progress, caller);
      } catch (const std::exception& e) {
        reply = Reply(InvalidArgument(std::string("bad arguments: ") + e.what()));
      }
      const Result<json>& r = reply.result;
      if (r.ok()) {
        resp = {{"ok", true}, {"result", *r}};
      } else {
        resp = {{"ok", false}, {"error", {{"code", CodeName(r.status().code())}, {"message", r.status().message()}}}};
        if (reply.detail.is_object()) resp["error"].update(reply.detail);
      }
    }
    // replace: guest text (console, status line) need not be UTF-8, and a
    // throwing dump() here would end the daemon.
    std::string out = resp.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
    std::lock_guard<std::mutex> l(write_mu);
    if (!WriteFull(conn.get(), out.data(), out.size()).ok()) break;
  }
  std::lock_guard<std::mutex> l(mu_);
  conns_.erase(std::remove(conns_.begin(), conns_.end(), conn.get()), conns_.end());
  idle_.notify_all();
}

}  // namespace agile::control
