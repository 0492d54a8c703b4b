// Unix and TCP sockets, all O_CLOEXEC, and fd passing over unix sockets.
#pragma once

#include <string>
#include <vector>

#include "base/fd.h"
#include "base/status.h"

namespace agile {

// Listens on a unix socket path, replacing a stale socket file.
Result<UniqueFd> UnixListen(const std::string& path, int backlog = 16);
Result<UniqueFd> UnixConnect(const std::string& path);

// A "HOST:PORT" endpoint; HOST may be a name or IPv4 address. Port 0 = any.
struct HostPort {
  std::string host;
  uint16_t port = 0;
  std::string ToString() const { return host + ":" + std::to_string(port); }
};
Result<HostPort> ParseHostPort(const std::string& s);

Result<UniqueFd> TcpListen(const HostPort& hp, int backlog = 64);
// The port a listening socket is bound to (for port 0 listens).
Result<uint16_t> BoundPort(int fd);
// Connects with a timeout; sets TCP_NODELAY.
Result<UniqueFd> TcpConnect(const HostPort& hp, int timeout_ms = 5000);

// Dead-peer detection on a TCP socket: keepalive probes after idle_s idle
// seconds, then every interval_s; the connection ends when data or a probe
// stays unacknowledged for user_timeout_ms (TCP_USER_TIMEOUT). Without this a
// silent partition holds a blocked write for the kernel's ~15 minutes of
// retransmissions. user_timeout_ms <= 0 leaves the socket as it is.
Status SetTcpKeepalive(int fd, int idle_s, int interval_s, int user_timeout_ms);
// Bounds each blocking recv()/send() on fd (SO_RCVTIMEO/SO_SNDTIMEO): one
// that moves no byte for ms fails with EAGAIN. 0 = no bound.
Status SetIoTimeouts(int fd, int recv_ms, int send_ms);

// Accepts one connection (blocking), O_CLOEXEC.
Result<UniqueFd> Accept(int listen_fd);

// Sends bytes plus file descriptors in one SCM_RIGHTS message.
Status SendWithFds(int sock, const void* buf, size_t len, const std::vector<int>& fds);
// Receives exactly len bytes; any fds that came with them are appended to *fds.
Status RecvWithFds(int sock, void* buf, size_t len, std::vector<UniqueFd>* fds);

// Connection from a "unix:PATH" or "HOST:PORT" address string.
Result<UniqueFd> ConnectAddress(const std::string& addr, int timeout_ms = 5000);

}  // namespace agile
