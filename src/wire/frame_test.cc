#include "wire/frame.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include "wire/codec.h"

namespace agile::wire {
namespace {

constexpr uint32_t kMagic = 0x54534554;  // "TEST"

std::vector<uint8_t> Sample() {
  std::vector<uint8_t> payload = {1, 2, 3, 4, 5};
  return MakeFrame(kMagic, 1, 7, payload);
}

Result<FrameHeader> Parse(const std::vector<uint8_t>& f, uint32_t max = 1024) {
  auto h = DecodeFrameHeader(f.data(), kMagic, 1, max);
  if (!h.ok()) return h;
  if (f.size() < kFrameHeaderSize + h->length) return Corruption("short");
  AGILE_RETURN_IF_ERROR(VerifyFrame(f.data(), *h, f.data() + kFrameHeaderSize));
  return h;
}

TEST(FrameTest, RoundTrip) {
  auto f = Sample();
  auto h = Parse(f);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->type, 7);
  EXPECT_EQ(h->length, 5u);
}

TEST(FrameTest, EveryFlippedByteIsCaught) {
  auto good = Sample();
  for (size_t i = 0; i < good.size(); ++i) {
    auto f = good;
    f[i] ^= 0x40;
    EXPECT_FALSE(Parse(f).ok()) << "byte " << i;
  }
}

TEST(FrameTest, RejectsWrongVersionAndOversize) {
  auto f = Sample();
  EXPECT_EQ(DecodeFrameHeader(f.data(), kMagic, 2, 1024).status().code(), Code::kUnsupported);
  EXPECT_EQ(DecodeFrameHeader(f.data(), kMagic, 1, 4).status().code(), Code::kCorruption);
}

// Pins the checksum's definition (frame.h, docs/memd-protocol.md): changing it
// is a protocol change and needs a version bump on every protocol.
TEST(FrameTest, ChecksumIsXxh3SeededByTheHeader) {
  auto f = Sample();
  uint64_t seed = XXH3_64bits(f.data(), 12);
  uint32_t want = static_cast<uint32_t>(XXH3_64bits_withSeed(f.data() + kFrameHeaderSize, 5, seed));
  Decoder d(f.data() + 12, 4);
  EXPECT_EQ(d.U32(), want);
}

// The streaming hasher agrees with the one-shot checksum however the payload
// is cut, for payloads on both sides of XXH3's short-input paths.
TEST(FrameTest, HasherMatchesOneShotChecksum) {
  for (size_t len : {0u, 1u, 5u, 240u, 241u, 4096u, 70000u}) {
    std::vector<uint8_t> payload(len);
    for (size_t i = 0; i < len; ++i) payload[i] = static_cast<uint8_t>(i * 131 + len);
    auto f = MakeFrame(kMagic, 1, 9, payload);
    uint32_t want = FrameChecksum(f.data(), payload.data(), len);
    for (size_t piece : {1u, 7u, 256u, 4096u, 100000u}) {
      FrameHasher h(f.data());
      for (size_t at = 0; at < len; at += piece) h.Update(payload.data() + at, std::min(piece, len - at));
      EXPECT_EQ(h.Digest(), want) << "len " << len << " piece " << piece;
    }
  }
}

TEST(CodecTest, DecoderUnderflowIsSticky) {
  std::vector<uint8_t> b;
  Encoder e(&b);
  e.U32(5);
  Decoder d(b.data(), b.size());
  EXPECT_EQ(d.U32(), 5u);
  EXPECT_EQ(d.U64(), 0u);
  EXPECT_FALSE(d.ok());
  EXPECT_EQ(d.U8(), 0u);
}

TEST(CodecTest, FinishNamesTruncationAndTrailingBytes) {
  std::vector<uint8_t> b;
  Encoder e(&b);
  e.U32(5);
  e.U8(1);
  Decoder whole(b.data(), b.size());
  whole.U32();
  whole.U8();
  EXPECT_TRUE(whole.Finish("x").ok());
  Decoder trailing(b.data(), b.size());
  trailing.U32();
  Status t = trailing.Finish("x");
  EXPECT_EQ(t.code(), Code::kCorruption);
  EXPECT_NE(t.message().find("x: 1 trailing bytes"), std::string::npos) << t.ToString();
  Decoder shortd(b.data(), b.size());
  shortd.U64();
  EXPECT_NE(shortd.Finish("x").message().find("truncated"), std::string::npos);
}

TEST(CodecTest, PatchFillsSkippedBytes) {
  std::vector<uint8_t> b;
  Encoder e(&b);
  size_t at = e.Skip(6);
  e.U8(9);
  e.PatchU32(at, 0x04030201);
  e.PatchU16(at + 4, 0x0605);
  EXPECT_EQ(b, (std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 9}));
}

// FrameBuilder is the one writer of frame headers: its bytes are AppendFrame's.
TEST(FrameTest, BuilderMatchesAppendFrame) {
  std::vector<uint8_t> payload = {9, 8, 7};
  std::vector<uint8_t> built = {0xee};  // a frame may start mid-buffer
  FrameBuilder fb(&built, kMagic, 1, 7);
  fb.enc().Bytes(payload.data(), payload.size());
  fb.Finish();
  std::vector<uint8_t> want = {0xee};
  AppendFrame(&want, kMagic, 1, 7, payload.data(), payload.size());
  EXPECT_EQ(built, want);
  EXPECT_EQ(fb.start(), 1u);
}

}  // namespace
}  // namespace agile::wire
