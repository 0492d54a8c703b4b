// One connection of a swap store and its redial rule, shared by the two
// backends (MemdSwapStore, RedisSwapStore), which each keep two: the fault
// thread's (refaults, latency-critical) and the offloader's (bulk).
// Not thread-safe by itself: callers hold `mu` around Get(), Drop() and every
// use of the client.
#pragma once

#include <spdlog/spdlog.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "base/clock.h"
#include "base/status.h"

namespace agile::offload {

template <typename Client>
struct StoreConn {
  std::mutex mu;
  std::unique_ptr<Client> client;
  uint64_t last_dial_ns = 0;

  // The connected client, or a new one from dial() (-> Result<unique_ptr<Client>>).
  // rate_limited: at most one dial every redial_ms, because a faulting vCPU
  // retries every millisecond while the store is down and a storm of connects
  // helps nobody; unlimited calls (the offloader, an operator) dial at once.
  // `store` names the store in errors.
  template <typename DialFn>
  Result<Client*> Get(bool rate_limited, int redial_ms, std::string_view store, DialFn&& dial) {
    if (client) return client.get();
    uint64_t now = MonotonicNs();
    if (rate_limited && last_dial_ns != 0 && now - last_dial_ns < static_cast<uint64_t>(redial_ms) * 1000000ULL)
      return Unavailable("swap store " + std::string(store) + " unreachable (retrying every " +
                         std::to_string(redial_ms) + " ms)");
    last_dial_ns = now;
    auto c = dial();
    if (!c.ok()) return c.status().Annotate("swap store " + std::string(store));
    client = std::move(c).value();
    return client.get();
  }

  // After a failed call: a broken connection (kUnavailable, as both clients
  // report one) is dropped so the next call redials; refusals (not owner,
  // store full, a bad page) leave it usable.
  void Drop(const Status& why, std::string_view store) {
    if (why.code() != Code::kUnavailable) return;
    if (client) spdlog::warn("swap store {}: connection lost ({})", store, why.ToString());
    client.reset();
  }
};

}  // namespace agile::offload
