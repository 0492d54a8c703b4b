// The frame every agile wire protocol shares (shim<->agiled, agiled<->memd,
// agiled<->agiled). All integers little-endian.
//
//   0        4        6        8                12               16
//   +--------+--------+--------+----------------+----------------+----------
//   | magic  |version | type   | payload length | checksum       | payload..
//   |  u32   |  u16   |  u16   |      u32       |      u32       |
//   +--------+--------+--------+----------------+----------------+----------
//
// checksum = low 32 bits of XXH3_64bits_withSeed(payload,
//                               seed = XXH3_64bits(bytes 0..11 of the header)),
// so a flipped bit anywhere in header or payload is caught. (Protocol versions
// before the switch used XXH32 here; XXH3 hashes a page several times faster,
// which the swap store's bulk GET/PUT paths are bound by.) The hash is
// Debian's libxxhash through its x86 dispatcher (AVX2/AVX-512 where the CPU
// has them; bench/checksum_bench measures it). Each protocol has its own magic;
// a receiver rejects a foreign magic, a different major version, an unknown
// type and a payload over its own size limit before reading it.
//
// Every format in src/wire is written through FrameBuilder + Encoder and read
// through Decoder (codec.h); frames come off a socket through FrameReader
// (frame_stream.h). docs/wire-formats.md lists the formats.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "base/status.h"
#include "wire/codec.h"

namespace agile::wire {

constexpr size_t kFrameHeaderSize = 16;

struct FrameHeader {
  uint32_t magic = 0;
  uint16_t version = 0;
  uint16_t type = 0;
  uint32_t length = 0;
  uint32_t checksum = 0;
};

// The checksum field of a frame whose header bytes 0..11 are header12.
uint32_t FrameChecksum(const uint8_t* header12, const uint8_t* payload, size_t len);

// The same checksum over a payload that arrives in pieces (a receiver placing
// pages straight into their destinations). Feed the payload in order with
// Update(); Digest() equals FrameChecksum over the concatenation.
// Not thread-safe; cheap to construct (no allocation).
class FrameHasher {
 public:
  explicit FrameHasher(const uint8_t* header12);
  void Update(const uint8_t* p, size_t n);
  uint32_t Digest() const;

 private:
  // xxhash's XXH3_state_t, kept opaque so this header does not pull in
  // xxhash.h; frame.cc checks that it fits.
  alignas(64) unsigned char state_[640];
};

// Writes one frame in place: room for the header first, the payload encoded
// behind it through enc(), then Finish() fills in length and checksum. No
// payload is built apart and copied (a PAGES or PUT frame is 256 KiB-1 MiB).
// Finish() once; the frame is out->[start(), out->size()).
class FrameBuilder {
 public:
  FrameBuilder(std::vector<uint8_t>* out, uint32_t magic, uint16_t version, uint16_t type);
  Encoder& enc() { return enc_; }
  size_t start() const { return start_; }
  void Finish();

 private:
  std::vector<uint8_t>* out_;
  size_t start_;
  uint32_t magic_;
  uint16_t version_, type_;
  Encoder enc_;
};

// Appends header + an already encoded payload to *out.
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

}  // namespace agile::wire
