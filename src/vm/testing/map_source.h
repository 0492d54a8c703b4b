// A swap store for unit tests: pages in a map, thread-safe (the fault thread
// fetches while the test puts).
#pragma once

#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "base/page.h"
#include "vm/page_source.h"

namespace agile::vm::testing {

class MapSource : public PageSource {
 public:
  Status Fetch(std::span<const uint64_t> idx, uint8_t* out, uint8_t* present) override {
    std::lock_guard<std::mutex> l(mu_);
    for (size_t i = 0; i < idx.size(); ++i) {
      auto it = pages_.find(idx[i]);
      present[i] = it != pages_.end();
      if (present[i]) std::memcpy(out + i * kPageSize, it->second.data(), kPageSize);
    }
    return Status::Ok();
  }
  void Put(uint64_t idx, const uint8_t* data) {
    std::lock_guard<std::mutex> l(mu_);
    pages_[idx].assign(data, data + kPageSize);
  }

 private:
  std::mutex mu_;
  std::map<uint64_t, std::vector<uint8_t>> pages_;
};

}  // namespace agile::vm::testing
