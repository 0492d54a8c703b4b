#include "store/frame_stream.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstring>
#include <thread>

#include "base/fd.h"
#include "store/memd_proto.h"

namespace agile::memd {
namespace {

struct Pair {
  UniqueFd a, b;
};

Pair SocketPair() {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

std::vector<uint8_t> StatFrame(uint64_t id) {
  std::vector<uint8_t> f;
  AppendStat(&f, id);
  return f;
}

Status ReadAfterWriting(const std::vector<uint8_t>& bytes, bool close_after = true) {
  Pair p = SocketPair();
  EXPECT_TRUE(SendAll(p.a.get(), bytes.data(), bytes.size()).ok());
  if (close_after) p.a.Reset();
  FrameReader r(p.b.get(), kMagic, kVersion, kMaxPayload);
  return r.Next().status();
}

TEST(FrameStream, ReadsPipelinedFramesFromOneWrite) {
  std::vector<uint8_t> bytes;
  for (uint64_t id = 1; id <= 5; ++id) AppendStat(&bytes, id);
  Pair p = SocketPair();
  ASSERT_TRUE(SendAll(p.a.get(), bytes.data(), bytes.size()).ok());
  p.a.Reset();
  FrameReader r(p.b.get(), kMagic, kVersion, kMaxPayload);
  for (uint64_t id = 1; id <= 5; ++id) {
    auto f = r.Next();
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    auto req = DecodeRequest(f->header.type, f->payload, f->header.length);
    ASSERT_TRUE(req.ok());
    EXPECT_EQ(req->id, id);
    if (id < 5) {
      EXPECT_TRUE(r.HasFrame());
    }
  }
  EXPECT_FALSE(r.HasFrame());
  EXPECT_EQ(r.Next().status().code(), Code::kNotFound);  // clean close between frames
}

TEST(FrameStream, ReadsLargeFrameArrivingInPieces) {
  std::vector<uint8_t> page(kPageSize, 0x42);
  std::vector<PageRef> pages(kMaxBatchPages, PageRef{0, page.data()});
  for (size_t i = 0; i < pages.size(); ++i) pages[i].index = i;
  std::vector<uint8_t> bytes;
  AppendPut(&bytes, 1, "vm", OwnerToken{}, pages);
  AppendPut(&bytes, 2, "vm", OwnerToken{}, pages);
  Pair p = SocketPair();
  std::thread writer([&] {
    for (size_t off = 0; off < bytes.size(); off += 10007)
      ASSERT_TRUE(SendAll(p.a.get(), bytes.data() + off, std::min<size_t>(10007, bytes.size() - off)).ok());
  });
  FrameReader r(p.b.get(), kMagic, kVersion, kMaxPayload);
  for (uint64_t id = 1; id <= 2; ++id) {
    auto f = r.Next();
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    auto req = DecodeRequest(f->header.type, f->payload, f->header.length);
    ASSERT_TRUE(req.ok()) << req.status().ToString();
    EXPECT_EQ(std::get<PutRequest>(req->body).pages.size(), kMaxBatchPages);
  }
  writer.join();
}

TEST(FrameStream, RejectsBadMagic) {
  auto f = StatFrame(1);
  f[0] ^= 0xff;
  Status st = ReadAfterWriting(f);
  EXPECT_EQ(st.code(), Code::kCorruption);
  EXPECT_NE(st.message().find("bad magic"), std::string::npos) << st.message();
}

TEST(FrameStream, RejectsOtherVersion) {
  std::vector<uint8_t> payload(8, 0);
  EXPECT_EQ(ReadAfterWriting(wire::MakeFrame(kMagic, kVersion + 1, 8, payload)).code(), Code::kUnsupported);
}

TEST(FrameStream, RejectsEveryCorruptedByte) {
  // Flipping any byte after the magic and version (type, length, checksum,
  // payload) must be caught; a changed length shows as a mismatch or a short frame.
  auto good = StatFrame(77);
  for (size_t i = 6; i < good.size(); ++i) {
    auto f = good;
    f[i] ^= 0x01;
    Status st = ReadAfterWriting(f);
    EXPECT_EQ(st.code(), Code::kCorruption) << "byte " << i << ": " << st.ToString();
  }
}

TEST(FrameStream, RejectsOversizeLengthWithoutReadingPayload) {
  auto f = StatFrame(1);
  uint32_t huge = kMaxPayload + 1;
  std::memcpy(&f[8], &huge, 4);  // test host is little-endian, like the wire
  // Keep the writer open: the reader must fail on the header alone, not wait.
  Status st = ReadAfterWriting(f, /*close_after=*/false);
  EXPECT_EQ(st.code(), Code::kCorruption);
  EXPECT_NE(st.message().find("exceeds limit"), std::string::npos) << st.message();
}

TEST(FrameStream, RejectsTruncatedFrame) {
  auto f = StatFrame(1);
  for (size_t cut : {size_t{3}, wire::kFrameHeaderSize, f.size() - 1}) {
    std::vector<uint8_t> part(f.begin(), f.begin() + static_cast<ptrdiff_t>(cut));
    Status st = ReadAfterWriting(part);
    EXPECT_EQ(st.code(), Code::kCorruption) << "cut at " << cut << ": " << st.ToString();
  }
}

TEST(FrameStream, SendAllToClosedPeerIsAnErrorNotASignal) {
  Pair p = SocketPair();
  p.b.Reset();
  std::vector<uint8_t> bytes(1 << 16, 1);
  EXPECT_FALSE(SendAll(p.a.get(), bytes.data(), bytes.size()).ok());
}

}  // namespace
}  // namespace agile::memd
