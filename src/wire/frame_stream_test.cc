#include "wire/frame_stream.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstring>
#include <thread>

#include "base/fd.h"
#include "wire/memd_proto.h"

// The reader is protocol-neutral; memd's frames serve as the sample traffic.
namespace agile::memd {
namespace {

using wire::FrameReader;
using wire::SendAll;

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

// Two large frames arriving in odd pieces: the first is read with Peek and
// ReceiveRest into scattered buffers, the second with Next, so the bytes of
// the second that the first's receive may have buffered are not lost.
TEST(FrameStream, ReceiveRestScattersTheRestAndKeepsTheNextFrame) {
  std::vector<uint8_t> payload(300000);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(i * 7 + i / 251);
  std::vector<uint8_t> bytes = wire::MakeFrame(kMagic, kVersion, 9, payload);
  std::vector<uint8_t> second = wire::MakeFrame(kMagic, kVersion, 10, std::vector<uint8_t>(5000, 0x5a));
  bytes.insert(bytes.end(), second.begin(), second.end());
  Pair p = SocketPair();
  std::thread writer([&] {
    for (size_t off = 0; off < bytes.size(); off += 7001)
      ASSERT_TRUE(SendAll(p.a.get(), bytes.data() + off, std::min<size_t>(7001, bytes.size() - off)).ok());
  });
  FrameReader r(p.b.get(), kMagic, kVersion, kMaxPayload);
  auto pre = r.Peek(100);
  ASSERT_TRUE(pre.ok()) << pre.status().ToString();
  EXPECT_EQ(pre->len, 100u);
  EXPECT_EQ(pre->header.type, 9);
  EXPECT_EQ(std::memcmp(pre->payload, payload.data(), 100), 0);
  // Uneven pieces: 1 byte, then 4096-byte pages, then the tail.
  std::vector<uint8_t> one(1), pages(73 * 4096), tail(payload.size() - 100 - 1 - pages.size());
  std::vector<iovec> iov = {{one.data(), one.size()}, {pages.data(), pages.size()}, {tail.data(), tail.size()}};
  ASSERT_TRUE(r.ReceiveRest(*pre, iov).ok());
  std::vector<uint8_t> got(payload.begin(), payload.begin() + 100);
  for (const auto* v : {&one, &pages, &tail}) got.insert(got.end(), v->begin(), v->end());
  EXPECT_EQ(got, payload);
  auto f = r.Next();
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->header.type, 10);
  EXPECT_EQ(f->header.length, 5000u);
  writer.join();
}

// A frame already whole in the buffer is copied out of it, and a corrupted
// byte in the scattered part fails the checksum.
TEST(FrameStream, ReceiveRestChecksTheChecksum) {
  std::vector<uint8_t> payload(20000, 0x33);
  for (bool corrupt : {false, true}) {
    std::vector<uint8_t> bytes = wire::MakeFrame(kMagic, kVersion, 9, payload);
    if (corrupt) bytes[wire::kFrameHeaderSize + 15000] ^= 0x01;
    Pair p = SocketPair();
    ASSERT_TRUE(SendAll(p.a.get(), bytes.data(), bytes.size()).ok());
    FrameReader r(p.b.get(), kMagic, kVersion, kMaxPayload);
    auto pre = r.Peek(10);
    ASSERT_TRUE(pre.ok());
    std::vector<uint8_t> rest(payload.size() - 10);
    std::vector<iovec> iov = {{rest.data(), rest.size()}};
    Status st = r.ReceiveRest(*pre, iov);
    EXPECT_EQ(st.code(), corrupt ? Code::kCorruption : Code::kOk) << st.ToString();
    if (!corrupt) {
      EXPECT_EQ(rest, std::vector<uint8_t>(payload.begin() + 10, payload.end()));
    }
  }
}

TEST(FrameStream, ReceiveRestRefusesRoomThatDoesNotFit) {
  std::vector<uint8_t> bytes = wire::MakeFrame(kMagic, kVersion, 9, std::vector<uint8_t>(100, 1));
  Pair p = SocketPair();
  ASSERT_TRUE(SendAll(p.a.get(), bytes.data(), bytes.size()).ok());
  FrameReader r(p.b.get(), kMagic, kVersion, kMaxPayload);
  auto pre = r.Peek(10);
  ASSERT_TRUE(pre.ok());
  std::vector<uint8_t> rest(89);
  std::vector<iovec> iov = {{rest.data(), rest.size()}};
  EXPECT_EQ(r.ReceiveRest(*pre, iov).code(), Code::kInternal);
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

TEST(FrameStream, NextIntoFillsTheCallersBufferAndKeepsTheNextFrame) {
  std::vector<uint8_t> payload(100000);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(i * 7);
  std::vector<uint8_t> bytes = wire::MakeFrame(kMagic, kVersion, 9, payload);
  AppendStat(&bytes, 77);
  Pair p = SocketPair();
  std::thread writer([&] { EXPECT_TRUE(SendAll(p.a.get(), bytes.data(), bytes.size()).ok()); });
  FrameReader r(p.b.get(), kMagic, kVersion, kMaxPayload);
  std::vector<uint8_t> got;
  auto h = r.NextInto(&got);
  writer.join();
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->type, 9);
  EXPECT_EQ(got, payload);
  auto next = r.Next();
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_EQ(DecodeRequest(next->header.type, next->payload, next->header.length)->id, 77u);
}

// ReadFrame never takes a byte of the following frame off the socket: the
// shim and its link poll() the fd between frames.
TEST(FrameStream, ReadFrameDoesNotReadAhead) {
  std::vector<uint8_t> bytes;
  AppendStat(&bytes, 1);
  AppendStat(&bytes, 2);
  Pair p = SocketPair();
  ASSERT_TRUE(SendAll(p.a.get(), bytes.data(), bytes.size()).ok());
  std::vector<uint8_t> payload;
  for (uint64_t id : {1u, 2u}) {
    auto h = wire::ReadFrame(p.b.get(), kMagic, kVersion, kMaxPayload, &payload);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    EXPECT_EQ(DecodeRequest(h->type, payload.data(), payload.size())->id, id);
  }
}

TEST(FrameStream, ReadFrameDetectsTruncation) {
  std::vector<uint8_t> f;
  AppendStat(&f, 1);
  Pair p = SocketPair();
  ASSERT_TRUE(SendAll(p.a.get(), f.data(), f.size() - 2).ok());
  p.a.Reset();
  std::vector<uint8_t> payload;
  auto h = wire::ReadFrame(p.b.get(), kMagic, kVersion, kMaxPayload, &payload);
  EXPECT_EQ(h.status().code(), Code::kCorruption);
}

TEST(FrameStream, ReadFrameCleanCloseIsNotFound) {
  Pair p = SocketPair();
  p.a.Reset();
  std::vector<uint8_t> payload;
  EXPECT_EQ(wire::ReadFrame(p.b.get(), kMagic, kVersion, kMaxPayload, &payload).status().code(), Code::kNotFound);
}

}  // namespace
}  // namespace agile::memd
