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

// Accepts one connection (blocking), O_CLOEXEC.
Result<UniqueFd> Accept(int listen_fd);

// Sends bytes plus file descriptors in one SCM_RIGHTS message.
Status SendWithFds(int sock, const void* buf, size_t len, const std::vector<int>& fds);
// Receives exactly len bytes; any fds that came with them are appended to *fds.
Status RecvWithFds(int sock, void* buf, size_t len, std::vector<UniqueFd>* fds);

// Connection from a "unix:PATH" or "HOST:PORT" address string.
Result<UniqueFd> ConnectAddress(const std::string& addr);

}  // namespace agile
