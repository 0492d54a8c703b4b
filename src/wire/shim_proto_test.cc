#include "wire/shim_proto.h"

#include <gtest/gtest.h>

namespace agile::wire {
namespace {

TEST(ShimProtoTest, HelloRoundTrip) {
  ShimHello h{1234, 0x7f0000000000, 1ull << 29, 0, 0xABCD, 0x55, "/dev/shm/agile/a/vm1/ram"};
  auto d = DecodeShimHello(Encode(h));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->pid, 1234u);
  EXPECT_EQ(d->base, 0x7f0000000000u);
  EXPECT_EQ(d->length, 1ull << 29);
  EXPECT_EQ(d->features, 0xABCDu);
  EXPECT_EQ(d->ioctls, 0x55u);
  EXPECT_EQ(d->ram_path, h.ram_path);
}

TEST(ShimProtoTest, OtherMessagesRoundTrip) {
  auto a = DecodeShimHelloAck(Encode(ShimHelloAck{1, "no"}));
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->status, 1u);
  EXPECT_EQ(a->message, "no");
  auto r = DecodeShimDropPtes(Encode(ShimDropPtes{9, 4096, 8192}));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->seq, 9u);
  EXPECT_EQ(r->offset, 4096u);
  EXPECT_EQ(r->length, 8192u);
  auto dn = DecodeShimDropPtesDone(Encode(ShimDropPtesDone{9, 22, 1000}));
  ASSERT_TRUE(dn.ok());
  EXPECT_EQ(dn->err, 22u);
  EXPECT_EQ(dn->elapsed_ns, 1000u);
}

TEST(ShimProtoTest, TruncatedAndTrailingRejected) {
  auto p = Encode(ShimHello{1, 2, 3, 4, 5, 6, "x"});
  for (size_t n = 0; n < p.size(); ++n) {
    std::vector<uint8_t> t(p.begin(), p.begin() + static_cast<long>(n));
    EXPECT_FALSE(DecodeShimHello(t).ok()) << n;
  }
  p.push_back(0);
  EXPECT_FALSE(DecodeShimHello(p).ok());
}

TEST(ShimProtoTest, OverlongPathRejected) {
  ShimHello h;
  h.ram_path = std::string(5000, 'a');
  EXPECT_FALSE(DecodeShimHello(Encode(h)).ok());
}

}  // namespace
}  // namespace agile::wire
