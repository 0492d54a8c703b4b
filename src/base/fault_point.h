// Named fault points for tests that must fail a daemon at one exact step
// (as CRIU_FAULT does): `AGILE_FAULT=NAME` in a daemon's environment makes
// FaultPoint(NAME) true there. Unset (production), every point is false and
// costs one cached comparison. The points are listed in docs/timeouts.md.
#pragma once

#include <cstdlib>
#include <string_view>

namespace agile {

inline bool FaultPoint(std::string_view name) {
  static const char* const env = std::getenv("AGILE_FAULT");
  return env != nullptr && name == env;
}

}  // namespace agile
