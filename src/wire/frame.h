// The frame every agile wire protocol shares (shim<->agiled, agiled<->memd,
// agiled<->agiled). All integers little-endian.
//
//   0        4        6        8                12               16
//   +--------+--------+--------+----------------+----------------+----------
//   | magic  |version | type   | payload length | checksum       | payload..
//   |  u32   |  u16   |  u16   |      u32       |      u32       |
//   +--------+--------+--------+----------------+----------------+----------
//
// checksum = XXH32(payload, seed = XXH32(bytes 0..11 of the header, seed 0)),
// so a flipped bit anywhere in header or payload is caught. Each protocol has
// its own magic; a receiver rejects a foreign magic, a different major version,
// an unknown type and a payload over its own size limit before reading it.
#pragma once

#include <cstdint>
#include <vector>

#include "base/status.h"

namespace agile::wire {

constexpr size_t kFrameHeaderSize = 16;

struct FrameHeader {
  uint32_t magic = 0;
  uint16_t version = 0;
  uint16_t type = 0;
  uint32_t length = 0;
  uint32_t checksum = 0;
};

// Appends header + payload to *out.
void AppendFrame(std::vector<uint8_t>* out, uint32_t magic, uint16_t version, uint16_t type,
                 const uint8_t* payload, size_t len);
inline std::vector<uint8_t> MakeFrame(uint32_t magic, uint16_t version, uint16_t type,
                                      const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> out;
  AppendFrame(&out, magic, version, type, payload.data(), payload.size());
  return out;
}

// Parses and checks a header: magic, version, and length against max_payload.
Result<FrameHeader> DecodeFrameHeader(const uint8_t* bytes, uint32_t magic, uint16_t version,
                                      uint32_t max_payload);
// Verifies the checksum over header and payload.
Status VerifyFrame(const uint8_t* header_bytes, const FrameHeader& h, const uint8_t* payload);

// Blocking read of one whole frame from fd into *payload. Clean EOF before the
// header is kNotFound.
Result<FrameHeader> ReadFrame(int fd, uint32_t magic, uint16_t version, uint32_t max_payload,
                              std::vector<uint8_t>* payload);

}  // namespace agile::wire
