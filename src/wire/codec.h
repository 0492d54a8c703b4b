// Explicit little-endian encoding of fixed-width fields. No raw structs go on
// the wire: padding and byte order would leak into the protocol.
//
// The one encode/decode style of every format in src/wire (frames, migration,
// memd, shim, memd's journal): an Encoder appends fields in order, a Decoder
// reads them back in the same order and is checked once with Finish().
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace agile::wire {

class Encoder {
 public:
  explicit Encoder(std::vector<uint8_t>* out) : out_(out) {}
  void U8(uint8_t v) { out_->push_back(v); }
  void U16(uint16_t v) { Put(v, 2); }
  void U32(uint32_t v) { Put(v, 4); }
  void U64(uint64_t v) { Put(v, 8); }
  void Bytes(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    out_->insert(out_->end(), b, b + n);
  }
  // u32 length, then bytes.
  void Str(std::string_view s) {
    U32(static_cast<uint32_t>(s.size()));
    Bytes(s.data(), s.size());
  }
  // Leaves n zero bytes for a field known only once what follows is written
  // (a length, a checksum); returns their offset in *out for the Patch calls.
  size_t Skip(size_t n) {
    size_t at = out_->size();
    out_->resize(at + n);
    return at;
  }
  void PatchU16(size_t at, uint16_t v) { Store(at, v, 2); }
  void PatchU32(size_t at, uint32_t v) { Store(at, v, 4); }

 private:
  void Put(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_->push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  void Store(size_t at, uint64_t v, int n) {
    for (int i = 0; i < n; ++i) (*out_)[at + static_cast<size_t>(i)] = static_cast<uint8_t>(v >> (8 * i));
  }
  std::vector<uint8_t>* out_;
};

// Reads fields in order; any read past the end sets a sticky failure that the
// caller checks once at the end (ok()). Values read after a failure are 0.
class Decoder {
 public:
  Decoder(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  uint8_t U8() { return static_cast<uint8_t>(Get(1)); }
  uint16_t U16() { return static_cast<uint16_t>(Get(2)); }
  uint32_t U32() { return static_cast<uint32_t>(Get(4)); }
  uint64_t U64() { return Get(8); }
  // Returns a pointer to n bytes inside the buffer, or nullptr on underflow.
  const uint8_t* Bytes(size_t n) {
    if (!Need(n)) return nullptr;
    const uint8_t* r = p_ + off_;
    off_ += n;
    return r;
  }
  std::string Str(size_t max_len = 1 << 16) {
    uint32_t len = U32();
    if (len > max_len) {
      failed_ = true;
      return {};
    }
    const uint8_t* b = Bytes(len);
    return b ? std::string(reinterpret_cast<const char*>(b), len) : std::string();
  }
  bool ok() const { return !failed_; }
  size_t remaining() const { return failed_ ? 0 : n_ - off_; }
  bool AtEnd() const { return ok() && off_ == n_; }
  // The check every decoder ends with: kCorruption "<what>: truncated payload
  // or oversize field" after a failed read, "<what>: N trailing bytes" when
  // bytes are left over.
  Status Finish(std::string_view what) const {
    if (!ok()) return Corruption(std::string(what) + ": truncated payload or oversize field");
    if (!AtEnd()) return Corruption(std::string(what) + ": " + std::to_string(remaining()) + " trailing bytes");
    return Status::Ok();
  }

 private:
  bool Need(size_t n) {
    if (failed_ || n > n_ - off_) {
      failed_ = true;
      return false;
    }
    return true;
  }
  uint64_t Get(int n) {
    if (!Need(static_cast<size_t>(n))) return 0;
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= static_cast<uint64_t>(p_[off_ + i]) << (8 * i);
    off_ += static_cast<size_t>(n);
    return v;
  }
  const uint8_t* p_;
  size_t n_;
  size_t off_ = 0;
  bool failed_ = false;
};

}  // namespace agile::wire
