// The unix-socket protocol between libagile-shim.so (inside QEMU) and agiled.
// Frames as in wire/frame.h with magic "AGSH", version kShimVersion (2). One
// connection per VM:
//
//   shim -> agiled  HELLO  + SCM_RIGHTS(uffd)    after registering the RAM mapping
//   agiled -> shim  HELLO_ACK                     ok / refusal with a message
//   agiled -> shim  DROP_PTES {seq, offset, len}  madvise(MADV_DONTNEED) inside QEMU
//   shim -> agiled  DROP_PTES_DONE {seq, errno, ns}
//
// HELLO payload:
//   +-----+------+--------+-------------+----------+--------+----------+
//   | pid | base | length | file_offset | features | ioctls | ram_path |
//   | u32 | u64  |  u64   |     u64     |   u64    |  u64   | u32+str  |
//   +-----+------+--------+-------------+----------+--------+----------+
// HELLO_ACK:      | status u32 (0 = ok) | message u32+str |
// DROP_PTES:      | seq u64 | offset u64 | length u64 |   (offset in the RAM file)
// DROP_PTES_DONE: | seq u64 | err u32 (errno, 0 = ok) | elapsed_ns u64 |
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace agile::wire {

constexpr uint32_t kShimMagic = 0x48534741;  // "AGSH" little-endian
constexpr uint16_t kShimVersion = 2;  // 2: XXH3 frame checksum (was XXH32)
constexpr uint32_t kShimMaxPayload = 8192;

enum class ShimMsg : uint16_t { kHello = 1, kHelloAck = 2, kDropPtes = 3, kDropPtesDone = 4 };

struct ShimHello {
  uint32_t pid = 0;
  uint64_t base = 0;         // address of the RAM mapping in QEMU
  uint64_t length = 0;       // bytes mapped
  uint64_t file_offset = 0;  // offset of the mapping in the RAM file
  uint64_t features = 0;     // UFFDIO_API features the kernel granted
  uint64_t ioctls = 0;       // ioctls UFFDIO_REGISTER offered for the range
  std::string ram_path;
};
struct ShimHelloAck {
  uint32_t status = 0;
  std::string message;
};
struct ShimDropPtes {
  uint64_t seq = 0, offset = 0, length = 0;
};
struct ShimDropPtesDone {
  uint64_t seq = 0;
  uint32_t err = 0;
  uint64_t elapsed_ns = 0;
};

// A message's payload alone (tests); ShimFrame below is what goes on the wire.
// M is one of the four message structs above.
template <typename M>
std::vector<uint8_t> Encode(const M& m);

// Decoders take a frame's payload (already checksummed) and reject short or
// trailing bytes.
Result<ShimHello> DecodeShimHello(const std::vector<uint8_t>& p);
Result<ShimHelloAck> DecodeShimHelloAck(const std::vector<uint8_t>& p);
Result<ShimDropPtes> DecodeShimDropPtes(const std::vector<uint8_t>& p);
Result<ShimDropPtesDone> DecodeShimDropPtesDone(const std::vector<uint8_t>& p);

// Whole frame (header + payload) for a message.
template <typename M>
std::vector<uint8_t> ShimFrame(ShimMsg type, const M& m);

}  // namespace agile::wire
