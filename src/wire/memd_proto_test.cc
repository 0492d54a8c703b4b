#include "wire/memd_proto.h"

#include <gtest/gtest.h>

#include <cstring>

namespace agile::memd {
namespace {

std::vector<uint8_t> Page(uint8_t fill) { return std::vector<uint8_t>(kPageSize, fill); }

// The payload of the first frame in `frame` (whose header is not checked here).
std::pair<uint16_t, std::vector<uint8_t>> Split(const std::vector<uint8_t>& frame) {
  auto h = wire::DecodeFrameHeader(frame.data(), kMagic, kVersion, kMaxPayload);
  EXPECT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_TRUE(wire::VerifyFrame(frame.data(), *h, frame.data() + wire::kFrameHeaderSize).ok());
  EXPECT_EQ(frame.size(), wire::kFrameHeaderSize + h->length);
  return {h->type, std::vector<uint8_t>(frame.begin() + wire::kFrameHeaderSize, frame.end())};
}

template <typename T>
T DecodeAs(const std::vector<uint8_t>& frame, uint64_t want_id) {
  auto [type, payload] = Split(frame);
  auto r = DecodeRequest(type, payload.data(), payload.size());
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->id, want_id);
  EXPECT_TRUE(std::holds_alternative<T>(r->body));
  return std::get<T>(r->body);
}

ResponseView DecodeResp(const std::vector<uint8_t>& frame, std::vector<uint8_t>* keep) {
  auto [type, payload] = Split(frame);
  *keep = payload;
  auto r = DecodeResponse(type, keep->data(), keep->size());
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return *r;
}

TEST(MemdProto, FrameBuilderMatchesWireFrame) {
  std::vector<uint8_t> payload = {1, 2, 3, 4, 5};
  std::vector<uint8_t> built;
  FrameBuilder fb(&built, 42);
  fb.enc().Bytes(payload.data(), payload.size());
  fb.Finish();
  EXPECT_EQ(built, wire::MakeFrame(kMagic, kVersion, 42, payload));
}

TEST(MemdProto, HelloRoundTrip) {
  std::vector<uint8_t> f;
  AppendHello(&f, 7, "host-a");
  EXPECT_EQ(DecodeAs<HelloRequest>(f, 7).host_id, "host-a");
}

TEST(MemdProto, ClaimRoundTrip) {
  std::vector<uint8_t> f;
  AppendClaim(&f, 8, "vm-1", "host-a");
  auto r = DecodeAs<ClaimRequest>(f, 8);
  EXPECT_EQ(r.vm, "vm-1");
  EXPECT_EQ(r.host_id, "host-a");
}

TEST(MemdProto, PutRoundTrip) {
  auto a = Page(0xaa), b = Page(0xbb);
  std::vector<PageRef> pages = {{5, a.data()}, {1ull << 40, b.data()}};
  std::vector<uint8_t> f;
  AppendPut(&f, 9, "vm-1", OwnerToken{3, 0x1234}, pages);
  auto [type, payload] = Split(f);
  auto r = DecodeRequest(type, payload.data(), payload.size());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const auto& put = std::get<PutRequest>(r->body);
  EXPECT_EQ(put.vm, "vm-1");
  EXPECT_EQ(put.token, (OwnerToken{3, 0x1234}));
  ASSERT_EQ(put.pages.size(), 2u);
  EXPECT_EQ(put.pages[0].index, 5u);
  EXPECT_EQ(put.pages[1].index, 1ull << 40);
  EXPECT_EQ(std::memcmp(put.pages[0].data, a.data(), kPageSize), 0);
  EXPECT_EQ(std::memcmp(put.pages[1].data, b.data(), kPageSize), 0);
}

TEST(MemdProto, GetAndDeleteRoundTrip) {
  std::vector<uint64_t> idx = {1, 2, 99};
  std::vector<uint8_t> f;
  AppendGet(&f, 10, "vm-1", OwnerToken{1, 2}, idx);
  auto g = DecodeAs<GetRequest>(f, 10);
  EXPECT_EQ(g.indexes, idx);
  EXPECT_EQ(g.token, (OwnerToken{1, 2}));
  f.clear();
  AppendDelete(&f, 11, "vm-1", OwnerToken{1, 2}, idx);
  EXPECT_EQ(DecodeAs<DeleteRequest>(f, 11).indexes, idx);
}

TEST(MemdProto, TransferReleaseStatRoundTrip) {
  std::vector<uint8_t> f;
  AppendTransfer(&f, 12, "vm-1", OwnerToken{1, 2}, "host-b");
  auto t = DecodeAs<TransferRequest>(f, 12);
  EXPECT_EQ(t.new_host, "host-b");
  EXPECT_EQ(t.token, (OwnerToken{1, 2}));
  f.clear();
  AppendRelease(&f, 13, "vm-1", OwnerToken{4, 5});
  EXPECT_EQ(DecodeAs<ReleaseRequest>(f, 13).token, (OwnerToken{4, 5}));
  f.clear();
  AppendStat(&f, 14);
  DecodeAs<StatRequest>(f, 14);
}

TEST(MemdProto, ErrorResponseRoundTrip) {
  std::vector<uint8_t> f, keep;
  AppendErrorResponse(&f, ResponseType(MsgType::kPut), 21, ResourceExhausted("store full"));
  ResponseView r = DecodeResp(f, &keep);
  EXPECT_EQ(r.type, ResponseType(MsgType::kPut));
  EXPECT_EQ(r.id, 21u);
  EXPECT_EQ(r.status.code(), Code::kResourceExhausted);
  EXPECT_EQ(r.status.message(), "store full");
  EXPECT_FALSE(DecodeCountReply(r).ok());  // an error has no body
}

TEST(MemdProto, ReplyRoundTrips) {
  std::vector<uint8_t> f, keep;
  AppendHelloReply(&f, 1, HelloReply{"agile-memd", 256, kMaxPayload});
  auto h = DecodeHelloReply(DecodeResp(f, &keep));
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->server_id, "agile-memd");
  EXPECT_EQ(h->max_batch_pages, 256u);
  EXPECT_EQ(h->max_payload, kMaxPayload);

  f.clear();
  AppendTokenReply(&f, MsgType::kTransfer, 2, OwnerToken{2, 77, 0xABCDEF0123456789});
  ResponseView tr = DecodeResp(f, &keep);
  EXPECT_EQ(tr.type, ResponseType(MsgType::kTransfer));
  EXPECT_EQ(*DecodeTokenReply(tr), (OwnerToken{2, 77, 0xABCDEF0123456789}));  // all 128 secret bits travel

  f.clear();
  AppendCountReply(&f, MsgType::kDelete, 3, 12345);
  EXPECT_EQ(*DecodeCountReply(DecodeResp(f, &keep)), 12345u);

  f.clear();
  StatReply s;
  s.pages = 10;
  s.bytes = 40960;
  s.capacity_bytes = 1 << 20;
  s.persistent = 1;
  s.vm_count = 1;
  s.vms = {VmStat{"vm-1", "host-a", 3, 10}};
  s.counters = {{"requests.PUT", 4}, {"errors", 1}};
  AppendStatReply(&f, 4, s);
  auto st = DecodeStatReply(DecodeResp(f, &keep));
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->pages, 10u);
  EXPECT_EQ(st->bytes, 40960u);
  EXPECT_EQ(st->capacity_bytes, 1u << 20);
  EXPECT_EQ(st->persistent, 1);
  ASSERT_EQ(st->vms.size(), 1u);
  EXPECT_EQ(st->vms[0].owner, "host-a");
  EXPECT_EQ(st->vms[0].epoch, 3u);
  EXPECT_EQ(st->counters, s.counters);
}

TEST(MemdProto, GetReplyRoundTripWithAbsentPages) {
  std::vector<uint8_t> f, keep;
  GetReplyWriter w(&f, 5, 3);
  w.present()[0] = 1;
  w.present()[1] = 0;
  w.present()[2] = 1;
  std::memset(w.pages(), 0x11, kPageSize);
  std::memset(w.pages() + kPageSize, 0x33, kPageSize);
  w.Finish(2);
  auto v = DecodeGetReply(DecodeResp(f, &keep), 3);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->present[0], 1);
  EXPECT_EQ(v->present[1], 0);
  EXPECT_EQ(v->pages[0], 0x11);
  EXPECT_EQ(v->pages[kPageSize], 0x33);
  EXPECT_EQ(f.size(), wire::kFrameHeaderSize + 8 + 2 + 4 + 4 + 3 + 2 * kPageSize);
}

TEST(MemdProto, GetReplyFailBecomesErrorResponse) {
  std::vector<uint8_t> f, keep;
  AppendStat(&f, 1);  // something before it must survive
  size_t before = f.size();
  GetReplyWriter w(&f, 6, 4);
  w.Fail(PermissionDenied("wrong token"));
  std::vector<uint8_t> tail(f.begin() + static_cast<ptrdiff_t>(before), f.end());
  ResponseView r = DecodeResp(tail, &keep);
  EXPECT_EQ(r.id, 6u);
  EXPECT_EQ(r.status.code(), Code::kPermissionDenied);
}

TEST(MemdProto, EveryStatusCodeSurvivesTheWire) {
  for (Code c : {Code::kOk, Code::kInvalidArgument, Code::kNotFound, Code::kAlreadyExists, Code::kUnavailable,
                 Code::kCorruption, Code::kPermissionDenied, Code::kResourceExhausted, Code::kUnsupported,
                 Code::kInternal, Code::kNoSpace})
    EXPECT_EQ(StatusFromWire(StatusToWire(c)), c);
  EXPECT_EQ(StatusToWire(Code::kNoSpace), 10);
  EXPECT_EQ(StatusFromWire(999), Code::kInternal);
}

TEST(MemdProto, ReclaimRoundTrip) {
  std::vector<uint8_t> f;
  AppendReclaim(&f, 9, "vm-1", OwnerToken{2, 3, 4});
  auto h = wire::DecodeFrameHeader(f.data(), kMagic, kVersion, kMaxPayload);
  ASSERT_TRUE(h.ok());
  auto req = DecodeRequest(h->type, f.data() + wire::kFrameHeaderSize, h->length);
  ASSERT_TRUE(req.ok()) << req.status().ToString();
  const auto& r = std::get<ReclaimRequest>(req->body);
  EXPECT_EQ(r.vm, "vm-1");
  EXPECT_EQ(r.token, (OwnerToken{2, 3, 4}));

  std::vector<uint8_t> out;
  AppendReclaimReply(&out, 9, ReclaimReply{100, false, {3, 17, 99}});
  auto rh = wire::DecodeFrameHeader(out.data(), kMagic, kVersion, kMaxPayload);
  ASSERT_TRUE(rh.ok());
  auto resp = DecodeResponse(rh->type, out.data() + wire::kFrameHeaderSize, rh->length);
  ASSERT_TRUE(resp.ok());
  auto rep = DecodeReclaimReply(*resp);
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_EQ(rep->pages, 100u);
  EXPECT_FALSE(rep->lost_unknown);
  EXPECT_EQ(rep->lost, (std::vector<uint64_t>{3, 17, 99}));
}

// ---- Malformed requests: each is kCorruption, never a crash ----------------

std::vector<uint8_t> PutPayload(uint32_t count_field, size_t real_pages) {
  std::vector<uint8_t> p;
  wire::Encoder e(&p);
  e.U64(1);
  e.Str("vm-1");
  e.U64(1);  // token: epoch, 128-bit secret
  e.U64(2);
  e.U64(3);
  e.U32(count_field);
  for (size_t i = 0; i < real_pages; ++i) {
    e.U64(i);
    std::vector<uint8_t> page(kPageSize, 0x5a);
    e.Bytes(page.data(), page.size());
  }
  return p;
}

void ExpectCorrupt(uint16_t type, const std::vector<uint8_t>& payload, const std::string& needle) {
  auto r = DecodeRequest(type, payload.data(), payload.size());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kCorruption);
  EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().message();
}

TEST(MemdProto, RejectsUnknownType) {
  std::vector<uint8_t> p(8, 0);
  ExpectCorrupt(0, p, "unknown request type");
  ExpectCorrupt(10, p, "unknown request type");
  ExpectCorrupt(ResponseType(MsgType::kPut), p, "unknown request type");
}

TEST(MemdProto, RejectsEveryTruncation) {
  auto full = PutPayload(2, 2);
  for (size_t n = 0; n < full.size(); n += (n < 64 ? 1 : 997)) {
    std::vector<uint8_t> cut(full.begin(), full.begin() + static_cast<ptrdiff_t>(n));
    auto r = DecodeRequest(static_cast<uint16_t>(MsgType::kPut), cut.data(), cut.size());
    EXPECT_EQ(r.status().code(), Code::kCorruption) << "cut at " << n;
  }
}

TEST(MemdProto, RejectsTrailingBytes) {
  std::vector<uint8_t> f;
  AppendRelease(&f, 1, "vm-1", OwnerToken{1, 2});
  auto [type, payload] = Split(f);
  payload.push_back(0);
  ExpectCorrupt(type, payload, "trailing");
  auto put = PutPayload(1, 1);
  put.push_back(7);
  ExpectCorrupt(static_cast<uint16_t>(MsgType::kPut), put, "does not match");
}

TEST(MemdProto, RejectsBadPageCounts) {
  uint16_t put = static_cast<uint16_t>(MsgType::kPut);
  ExpectCorrupt(put, PutPayload(3, 2), "does not match");   // says 3, has 2
  ExpectCorrupt(put, PutPayload(1, 2), "does not match");   // says 1, has 2
  ExpectCorrupt(put, PutPayload(kMaxBatchPages + 1, 0), "exceeds the limit");
  ExpectCorrupt(put, PutPayload(0xffffffff, 0), "exceeds the limit");

  std::vector<uint8_t> g;
  wire::Encoder e(&g);
  e.U64(1);
  e.Str("vm-1");
  e.U64(1);  // token
  e.U64(2);
  e.U64(3);
  e.U32(4);
  e.U64(1);  // one index where four were announced
  ExpectCorrupt(static_cast<uint16_t>(MsgType::kGet), g, "does not match");
}

TEST(MemdProto, RejectsOversizeIds) {
  std::vector<uint8_t> f;
  AppendHello(&f, 1, std::string(kMaxIdLen + 1, 'h'));
  auto [type, payload] = Split(f);
  ExpectCorrupt(type, payload, "truncated payload or oversize field");
}

TEST(MemdProto, AcceptsEmptyBatch) {
  std::vector<uint8_t> f;
  AppendGet(&f, 3, "vm-1", OwnerToken{}, {});
  EXPECT_TRUE(DecodeAs<GetRequest>(f, 3).indexes.empty());
}

// ---- Malformed responses -----------------------------------------------------

TEST(MemdProto, RejectsMalformedResponses) {
  std::vector<uint8_t> p;
  wire::Encoder e(&p);
  e.U64(1);
  e.U16(0);
  e.Str("");
  EXPECT_EQ(DecodeResponse(0x4242, p.data(), p.size()).status().code(), Code::kCorruption);
  EXPECT_EQ(DecodeResponse(ResponseType(MsgType::kGet), p.data(), 5).status().code(), Code::kCorruption);

  // An ok GET reply whose flags and pages disagree.
  auto get_reply = [](uint32_t count, std::vector<uint8_t> flags, size_t page_bytes) {
    std::vector<uint8_t> b;
    wire::Encoder enc(&b);
    enc.U64(1);
    enc.U16(0);
    enc.Str("");
    enc.U32(count);
    enc.Bytes(flags.data(), flags.size());
    b.resize(b.size() + page_bytes);
    return b;
  };
  auto check = [](const std::vector<uint8_t>& b, uint32_t expect, const char* needle) {
    auto r = DecodeResponse(ResponseType(MsgType::kGet), b.data(), b.size());
    ASSERT_TRUE(r.ok());
    auto v = DecodeGetReply(*r, expect);
    ASSERT_FALSE(v.ok());
    EXPECT_NE(v.status().message().find(needle), std::string::npos) << v.status().message();
  };
  check(get_reply(2, {1, 2}, 2 * kPageSize), 2, "presence flag");
  check(get_reply(2, {1, 1}, kPageSize), 2, "page bytes");
  check(get_reply(2, {1, 0}, kPageSize), 3, "flags for 3");
  check(get_reply(2, {1}, 0), 2, "truncated");
}

TEST(MemdProto, ValidatesIds) {
  EXPECT_TRUE(ValidateVmId("vm-1_a.b").ok());
  EXPECT_FALSE(ValidateVmId("").ok());
  EXPECT_FALSE(ValidateVmId("../etc").ok());
  EXPECT_FALSE(ValidateVmId("a/b").ok());
  EXPECT_FALSE(ValidateVmId(".hidden").ok());
  EXPECT_FALSE(ValidateVmId(std::string(kMaxIdLen + 1, 'a')).ok());
  EXPECT_TRUE(ValidateHostId("host-a@10.0.0.1").ok());
  EXPECT_FALSE(ValidateHostId("with space").ok());
  EXPECT_FALSE(ValidateHostId("").ok());
}

TEST(MemdProtoTest, SameTokenComparesEveryBit) {
  OwnerToken t{3, 0x1111, 0x2222};
  EXPECT_TRUE(SameToken(t, t));
  EXPECT_FALSE(SameToken(t, OwnerToken{4, 0x1111, 0x2222}));
  EXPECT_FALSE(SameToken(t, OwnerToken{3, 0x1110, 0x2222}));
  EXPECT_FALSE(SameToken(t, OwnerToken{3, 0x1111, 0x2223}));  // the high word counts too
}

}  // namespace
}  // namespace agile::memd
