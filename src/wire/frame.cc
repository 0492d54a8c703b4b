#include "wire/frame.h"

// XXH3_state_t's layout (for FrameHasher's in-place state) and the dispatcher
// that Debian's libxxhash exports: XXH3_64bits_withSeed_dispatch and
// XXH3_64bits_update_dispatch pick the widest vector unit the CPU has (a
// one-time cpuid on first use, no constructor: safe in the shim, whose code
// may run before constructors have). The plain XXH3_64bits_withSeed in the
// shared library is built for baseline x86-64 (SSE2) only.
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>
#define XXH_DISPATCH_DISABLE_REPLACE
#include <xxh_x86dispatch.h>

#include <cstdio>
#include <new>

namespace agile::wire {
namespace {

std::string Hex32(uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof(b), "0x%08x", v);
  return b;
}

XXH3_state_t* State(unsigned char* storage) { return reinterpret_cast<XXH3_state_t*>(storage); }

}  // namespace

uint32_t FrameChecksum(const uint8_t* header12, const uint8_t* payload, size_t len) {
  XXH64_hash_t seed = XXH3_64bits(header12, 12);
  return static_cast<uint32_t>(XXH3_64bits_withSeed_dispatch(payload, len, seed));
}

FrameHasher::FrameHasher(const uint8_t* header12) {
  static_assert(sizeof(XXH3_state_t) <= sizeof(state_) && alignof(XXH3_state_t) <= 64,
                "FrameHasher::state_ must hold an XXH3_state_t");
  XXH3_state_t* st = new (state_) XXH3_state_t;
  XXH3_INITSTATE(st);
  XXH3_64bits_reset_withSeed(st, XXH3_64bits(header12, 12));
}

void FrameHasher::Update(const uint8_t* p, size_t n) { XXH3_64bits_update_dispatch(State(state_), p, n); }

uint32_t FrameHasher::Digest() const {
  // Not dispatched (there is no digest_dispatch): it hashes at most the last
  // buffered stripe.
  return static_cast<uint32_t>(XXH3_64bits_digest(reinterpret_cast<const XXH3_state_t*>(state_)));
}

FrameBuilder::FrameBuilder(std::vector<uint8_t>* out, uint32_t magic, uint16_t version, uint16_t type)
    : out_(out), magic_(magic), version_(version), type_(type), enc_(out) {
  start_ = enc_.Skip(kFrameHeaderSize);
}

void FrameBuilder::Finish() {
  size_t len = out_->size() - start_ - kFrameHeaderSize;
  enc_.PatchU32(start_, magic_);
  enc_.PatchU16(start_ + 4, version_);
  enc_.PatchU16(start_ + 6, type_);
  enc_.PatchU32(start_ + 8, static_cast<uint32_t>(len));
  const uint8_t* head = out_->data() + start_;
  enc_.PatchU32(start_ + 12, FrameChecksum(head, head + kFrameHeaderSize, len));
}

void AppendFrame(std::vector<uint8_t>* out, uint32_t magic, uint16_t version, uint16_t type,
                 const uint8_t* payload, size_t len) {
  out->reserve(out->size() + kFrameHeaderSize + len);
  FrameBuilder fb(out, magic, version, type);
  fb.enc().Bytes(payload, len);
  fb.Finish();
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

}  // namespace agile::wire
