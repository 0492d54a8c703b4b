#include "wire/frame.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "base/io.h"
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

TEST(FrameTest, ReadFrameDetectsTruncation) {
  auto f = Sample();
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  ASSERT_TRUE(WriteFull(p[1], f.data(), f.size() - 2).ok());
  ::close(p[1]);
  std::vector<uint8_t> payload;
  auto h = ReadFrame(p[0], kMagic, 1, 1024, &payload);
  ::close(p[0]);
  EXPECT_EQ(h.status().code(), Code::kCorruption);
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

}  // namespace
}  // namespace agile::wire
