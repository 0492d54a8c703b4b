// The input shape of the payload-level fuzz targets: a u16 message type
// (little-endian) then the payload. Frame checksums are left out on purpose:
// a fuzzer cannot forge them, and they guard against corruption, not against
// a hostile peer, so the decoders behind them are what must hold.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace agile::fuzz {

struct TypedPayload {
  uint16_t type = 0;
  std::vector<uint8_t> payload;
};

inline TypedPayload SplitTyped(const uint8_t* data, size_t size) {
  TypedPayload t;
  if (size >= 2) {
    t.type = static_cast<uint16_t>(data[0] | (data[1] << 8));
    t.payload.assign(data + 2, data + size);
  }
  return t;
}

}  // namespace agile::fuzz
