#include "base/clock.h"

namespace agile {
namespace {
class SystemClock : public Clock {
 public:
  uint64_t NowNs() const override { return MonotonicNs(); }
};
}  // namespace

const Clock& Clock::System() {
  static const SystemClock clock;
  return clock;
}

}  // namespace agile
