#include "wire/frame.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cstdio>
#include <new>

#include "base/io.h"
#include "wire/codec.h"
#include "wire/xxh3_avx2.h"

namespace agile::wire {
namespace {

std::string Hex32(uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof(b), "0x%08x", v);
  return b;
}

XXH3_state_t* State(unsigned char* storage) { return reinterpret_cast<XXH3_state_t*>(storage); }

// Same hash either way; the AVX2 build is about twice as fast on pages.
// Asked on first use, not in a static initialiser: the shim's code may run
// before constructors have, and the CPU probe must be initialised explicitly.
bool HaveAvx2() {
  static const bool have = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return have;
}

}  // namespace

uint32_t FrameChecksum(const uint8_t* header12, const uint8_t* payload, size_t len) {
  XXH64_hash_t seed = XXH3_64bits(header12, 12);
  if (HaveAvx2()) return static_cast<uint32_t>(avx2::Xxh3Seeded(payload, len, seed));
  return static_cast<uint32_t>(XXH3_64bits_withSeed(payload, len, seed));
}

FrameHasher::FrameHasher(const uint8_t* header12) {
  static_assert(sizeof(XXH3_state_t) <= sizeof(state_) && alignof(XXH3_state_t) <= 64,
                "FrameHasher::state_ must hold an XXH3_state_t");
  XXH3_state_t* st = new (state_) XXH3_state_t;
  XXH3_INITSTATE(st);
  XXH3_64bits_reset_withSeed(st, XXH3_64bits(header12, 12));
}

void FrameHasher::Update(const uint8_t* p, size_t n) {
  if (HaveAvx2()) avx2::Xxh3Update(state_, p, n);
  else XXH3_64bits_update(State(state_), p, n);
}

uint32_t FrameHasher::Digest() const {
  if (HaveAvx2()) return static_cast<uint32_t>(avx2::Xxh3Digest(state_));
  return static_cast<uint32_t>(XXH3_64bits_digest(reinterpret_cast<const XXH3_state_t*>(state_)));
}

void AppendFrame(std::vector<uint8_t>* out, uint32_t magic, uint16_t version, uint16_t type,
                 const uint8_t* payload, size_t len) {
  size_t start = out->size();
  Encoder e(out);
  e.U32(magic);
  e.U16(version);
  e.U16(type);
  e.U32(static_cast<uint32_t>(len));
  e.U32(FrameChecksum(out->data() + start, payload, len));
  out->insert(out->end(), payload, payload + len);
}

Result<FrameHeader> DecodeFrameHeader(const uint8_t* bytes, uint32_t magic, uint16_t version,
                                      uint32_t max_payload) {
  Decoder d(bytes, kFrameHeaderSize);
  FrameHeader h;
  h.magic = d.U32();
  h.version = d.U16();
  h.type = d.U16();
  h.length = d.U32();
  h.checksum = d.U32();
  if (h.magic != magic) return Corruption("bad magic " + Hex32(h.magic) + " (expected " + Hex32(magic) + ")");
  if (h.version != version)
    return Unsupported("protocol version " + std::to_string(h.version) + " not supported (speaking " +
                       std::to_string(version) + ")");
  if (h.length > max_payload)
    return Corruption("frame payload of " + std::to_string(h.length) + " bytes exceeds limit of " +
                      std::to_string(max_payload));
  return h;
}

Status VerifyFrame(const uint8_t* header_bytes, const FrameHeader& h, const uint8_t* payload) {
  uint32_t want = FrameChecksum(header_bytes, payload, h.length);
  if (want != h.checksum)
    return Corruption("frame checksum mismatch: got " + Hex32(h.checksum) + ", computed " + Hex32(want));
  return Status::Ok();
}

Result<FrameHeader> ReadFrame(int fd, uint32_t magic, uint16_t version, uint32_t max_payload,
                              std::vector<uint8_t>* payload) {
  uint8_t hb[kFrameHeaderSize];
  AGILE_RETURN_IF_ERROR(ReadFull(fd, hb, sizeof(hb)));
  AGILE_ASSIGN_OR_RETURN(FrameHeader h, DecodeFrameHeader(hb, magic, version, max_payload));
  payload->resize(h.length);
  if (h.length > 0) {
    Status st = ReadFull(fd, payload->data(), h.length);
    if (!st.ok()) return st.code() == Code::kNotFound ? Corruption("connection closed mid-frame") : st;
  }
  AGILE_RETURN_IF_ERROR(VerifyFrame(hb, h, payload->data()));
  return h;
}

}  // namespace agile::wire
