// The ownership token a swap store holds for its VM's namespace, shared by
// both backends: set by Claim() or Adopt() (a token handed over at
// migration), void after Transfer() or Release(). Thread-safe (own mutex):
// the fault thread reads it while the offloader or a migration changes it.
#pragma once

#include <mutex>
#include <optional>

#include "wire/memd_proto.h"

namespace agile::offload {

class OwnerSlot {
 public:
  void Adopt(memd::OwnerToken t) {
    std::lock_guard<std::mutex> l(mu_);
    token_ = t;
    claimed_ = true;
  }
  // The token went to another host, or the namespace was released.
  void Void() {
    std::lock_guard<std::mutex> l(mu_);
    claimed_ = false;
  }
  bool claimed() const {
    std::lock_guard<std::mutex> l(mu_);
    return claimed_;
  }
  // The token while this host owns the namespace.
  std::optional<memd::OwnerToken> owned() const {
    std::lock_guard<std::mutex> l(mu_);
    if (!claimed_) return std::nullopt;
    return token_;
  }
  // The last token held, owned or not (the store refuses a void one itself).
  memd::OwnerToken last() const {
    std::lock_guard<std::mutex> l(mu_);
    return token_;
  }

 private:
  mutable std::mutex mu_;
  memd::OwnerToken token_{};
  bool claimed_ = false;
};

}  // namespace agile::offload
