// Human sizes: "512M", "1G", "4096", "1.5GiB" <-> bytes.
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"

namespace agile {

// Accepts an integer or decimal with an optional suffix K, M, G, T (powers of
// 1024), optionally followed by "B" or "iB". Rejects negatives and overflow.
Result<uint64_t> ParseSize(const std::string& s);
std::string FormatSize(uint64_t bytes);

// A rate in bytes/s: "1gbit", "500mbit" (bits, powers of 1000, as tc writes
// them), or a size per second "100M", "1G/s" (bytes, powers of 1024).
Result<uint64_t> ParseRate(const std::string& s);

}  // namespace agile
