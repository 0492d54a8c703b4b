// A floor for anything that asks a peer for a page over TCP: a raw loopback
// ping-pong measured in the same run. The client sends a 24-byte request,
// an in-process server thread answers with `reply_bytes` bytes; both sides
// use plain blocking sockets (TCP_NODELAY) or, with a busy-poll window, spin
// on non-blocking reads for up to that long before they sleep, as agile-memd
// and its client do. No framing, no store, no checksum.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace agile::bench {

struct RoundTrips {
  double p50_us = 0, p99_us = 0;  // 0 on error (the reason goes to stderr)
};

RoundTrips TcpPingPong(uint64_t iterations, size_t reply_bytes, std::chrono::microseconds busy_poll);

}  // namespace agile::bench
