#include "store/memd_server.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>
#include <unordered_map>

#include "base/socket.h"
#include "wire/frame_stream.h"
#include "store/memd_client.h"
#include "store/testing/memd_process.h"
#include "tls/tls.h"

namespace agile::memd {
namespace {

uint64_t Counter(const StatReply& s, const std::string& name) {
  for (const auto& [n, v] : s.counters)
    if (n == name) return v;
  ADD_FAILURE() << "no counter " << name;
  return 0;
}

class MemdServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    spdlog::set_level(spdlog::level::warn);
    PageStore::Options o;
    o.capacity_bytes = 256 << 20;
    store_ = std::move(PageStore::Open(o)).value();
    auto s = MemdServer::Start(store_.get(), HostPort{"127.0.0.1", 0});
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(s).value();
    addr_ = server_->address().ToString();
  }
  std::unique_ptr<MemdClient> Client(const std::string& host) {
    auto c = MemdClient::Connect(addr_, host);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return std::move(c).value();
  }

  std::unique_ptr<PageStore> store_;
  std::unique_ptr<MemdServer> server_;
  std::string addr_;
};

TEST_F(MemdServerTest, TenThousandRandomPagesPipelined) {
  auto c = Client("host-a");
  auto t = c->Claim("vm-1");
  ASSERT_TRUE(t.ok()) << t.status().ToString();

  std::mt19937_64 rng(1234);
  constexpr size_t kN = 10000;
  std::unordered_map<uint64_t, size_t> seen;
  std::vector<uint64_t> idx;
  while (idx.size() < kN) {
    uint64_t i = rng() % (1ull << 30);
    if (seen.emplace(i, idx.size()).second) idx.push_back(i);
  }
  std::vector<uint8_t> data(kN * kPageSize);
  for (size_t i = 0; i < data.size(); i += 8) {
    uint64_t v = rng();
    std::memcpy(&data[i], &v, 8);
  }
  std::vector<PageRef> refs(kN);
  for (size_t i = 0; i < kN; ++i) refs[i] = PageRef{idx[i], &data[i * kPageSize]};
  ASSERT_TRUE(c->Put("vm-1", *t, refs).ok());

  // Read back in a different order, with absent indexes mixed in.
  std::vector<uint64_t> ask(idx.rbegin(), idx.rend());
  ask.push_back(1ull << 31);
  ask.insert(ask.begin() + 17, (1ull << 31) + 1);
  std::vector<uint8_t> got(ask.size() * kPageSize);
  std::vector<uint8_t*> out(ask.size());
  for (size_t i = 0; i < ask.size(); ++i) out[i] = &got[i * kPageSize];
  std::vector<uint8_t> present(ask.size());
  ASSERT_TRUE(c->Get("vm-1", *t, ask, out, present).ok());
  for (size_t i = 0; i < ask.size(); ++i) {
    auto it = seen.find(ask[i]);
    if (it == seen.end()) {
      EXPECT_EQ(present[i], 0) << ask[i];
      continue;
    }
    ASSERT_EQ(present[i], 1) << ask[i];
    ASSERT_EQ(std::memcmp(out[i], &data[it->second * kPageSize], kPageSize), 0) << "page " << ask[i];
  }

  auto stat = c->Stat();
  ASSERT_TRUE(stat.ok()) << stat.status().ToString();
  EXPECT_EQ(stat->pages, kN);
  EXPECT_EQ(Counter(*stat, "requests.PUT"), (kN + kMaxBatchPages - 1) / kMaxBatchPages);
  EXPECT_EQ(Counter(*stat, "pages.got"), kN);
  EXPECT_EQ(Counter(*stat, "pages.absent"), 2u);

  auto del = c->Delete("vm-1", *t, idx);
  ASSERT_TRUE(del.ok());
  EXPECT_EQ(*del, kN);
  EXPECT_EQ(*c->Release("vm-1", *t), 0u);
}

// Page contents derived from (index, version): a page whose first word
// names one version must hold that version whole.
void FillPage(uint8_t* p, uint64_t index, uint64_t version) {
  for (size_t i = 0; i < kPageSize; i += 8) {
    uint64_t v = index * 0x9e3779b97f4a7c15ull + i + (version << 48);
    std::memcpy(p + i, &v, 8);
  }
}
uint64_t VersionOf(const uint8_t* p, uint64_t index) {
  uint64_t w;
  std::memcpy(&w, p, 8);
  return (w - index * 0x9e3779b97f4a7c15ull) >> 48;
}

// GET replies are sent from the store's slots (ReplyBatch, PinnedPages).
// Another connection PUTs the same pages again and again meanwhile, batched
// and 1-page GETs interleaved with them. Every reply must pass its frame
// checksum (the client checks it) and hold, per page, one version whole,
// never older than the last PUT acknowledged before the GET was sent. (Here
// the replies rarely wait in sendmsg, so this checks the versions; the test
// below forces replies to wait while their slots are reused.)
TEST_F(MemdServerTest, GetRepliesStayWholeUnderConcurrentPutsOfTheSamePages) {
  auto getter = Client("host-a");
  auto t = getter->Claim("vm-1");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  constexpr uint64_t kN = kMaxBatchPages;
  std::vector<uint8_t> data(kN * kPageSize);
  std::vector<PageRef> refs(kN);
  auto put_version = [&](MemdClient& c, uint64_t v) {
    for (uint64_t i = 0; i < kN; ++i) {
      FillPage(&data[i * kPageSize], i, v);
      refs[i] = PageRef{i, &data[i * kPageSize]};
    }
    return c.Put("vm-1", *t, refs);
  };
  ASSERT_TRUE(put_version(*getter, 1).ok());

  // One page per PUT, cycling over the pages: each PUT retires the slot of
  // the page's last version and the next PUT (of the next page) takes that
  // very slot, so an unpinned slot being sent is overwritten within
  // microseconds. `acked`: every page has at least this version.
  std::atomic<uint64_t> acked{1};
  std::atomic<bool> stop{false};
  Status put_status;
  std::thread putter([&] {
    auto c = Client("host-a");
    std::vector<uint8_t> page(kPageSize);
    for (uint64_t v = 2; !stop.load(); ++v) {
      for (uint64_t i = 0; i < kN && !stop.load(); ++i) {
        FillPage(page.data(), i, v);
        PageRef ref{i, page.data()};
        put_status = c->Put("vm-1", *t, {&ref, 1});
        if (!put_status.ok()) return;
      }
      if (!stop.load()) acked.store(v);
    }
  });

  std::vector<uint8_t> buf(kN * kPageSize);
  std::vector<uint8_t*> outs(kN);
  std::vector<uint8_t> present(kN);
  std::vector<uint64_t> idx(kN);
  for (uint64_t i = 0; i < kN; ++i) {
    idx[i] = i;
    outs[i] = &buf[i * kPageSize];
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  int gets = 0;
  uint64_t versions_seen_max = 0;
  while (std::chrono::steady_clock::now() < deadline || gets < 200) {
    uint64_t floor = acked.load();
    // Whole batches and single pages (a refault's shape).
    size_t n = gets % 2 == 0 ? kN : 1;
    std::span<const uint64_t> ask(idx.data() + (gets % kN) * (n == 1), n);
    std::span<uint8_t* const> into(outs.data(), n);
    Status st = getter->Get("vm-1", *t, ask, into, std::span<uint8_t>(present.data(), n));
    ASSERT_TRUE(st.ok()) << "GET " << gets << ": " << st.ToString();
    for (size_t k = 0; k < n; ++k) {
      ASSERT_TRUE(present[k]);
      uint64_t v = VersionOf(outs[k], ask[k]);
      ASSERT_GE(v, floor) << "page " << ask[k] << " older than the last acknowledged PUT";
      ASSERT_LE(v, acked.load() + 1) << "page " << ask[k] << " names a version never PUT";
      std::vector<uint8_t> want(kPageSize);
      FillPage(want.data(), ask[k], v);
      ASSERT_EQ(0, std::memcmp(outs[k], want.data(), kPageSize)) << "page " << ask[k] << " torn (version " << v << ")";
      versions_seen_max = std::max(versions_seen_max, v);
    }
    ++gets;
  }
  stop = true;
  putter.join();
  ASSERT_TRUE(put_status.ok()) << put_status.ToString();
  // The race was real: the PUTs moved on while the GETs ran.
  EXPECT_GT(acked.load(), 3u);
  EXPECT_GT(versions_seen_max, 3u);
}

// The decisive case for sending from the slots: GET replies stuck in
// sendmsg while every one of their pages is PUT again twice, one page per
// PUT, so each PUT takes the slot the previous one retired. A reader with a
// 4 KiB receive buffer asks for 12 full GETs (12 MiB) and reads nothing: the
// server's send queue (tcp_wmem, at most 4 MiB here) fills and its thread
// blocks in sendmsg with a reply whose pages it points to. Unpinned, those
// pages would be overwritten by other pages' bytes before the kernel copies
// them: the frame checksum or the contents would fail. Pinned, each reply
// holds, per page, one version whole: 1 for the GETs handled before the
// PUTs, up to 3 for those handled after.
TEST_F(MemdServerTest, GetRepliesStuckInSendKeepTheirPagesWhilePutsReuseTheirSlots) {
  auto owner = Client("host-a");
  auto t = owner->Claim("vm-1");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  constexpr uint64_t kN = kMaxBatchPages;
  constexpr int kGets = 12;
  std::vector<uint8_t> data(kN * kPageSize);
  std::vector<PageRef> refs(kN);
  std::vector<uint64_t> idx(kN);
  for (uint64_t i = 0; i < kN; ++i) {
    FillPage(&data[i * kPageSize], i, 1);
    refs[i] = PageRef{i, &data[i * kPageSize]};
    idx[i] = i;
  }
  ASSERT_TRUE(owner->Put("vm-1", *t, refs).ok());

  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(fd);
  int small = 4096;
  ASSERT_EQ(::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(server_->address().port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  wire::FrameReader reader(fd.get(), kMagic, kVersion, kMaxPayload);
  std::vector<uint8_t> out;
  AppendHello(&out, 1, "host-a");
  ASSERT_TRUE(wire::SendAll(fd.get(), out.data(), out.size()).ok());
  ASSERT_TRUE(reader.Next().ok());
  out.clear();
  for (int g = 0; g < kGets; ++g) AppendGet(&out, 2 + g, "vm-1", *t, idx);
  ASSERT_TRUE(wire::SendAll(fd.get(), out.data(), out.size()).ok());
  // Let the server handle what it can and fill its send queue; it then blocks.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));

  std::vector<uint8_t> page(kPageSize);
  for (uint64_t v = 2; v <= 3; ++v)
    for (uint64_t i = 0; i < kN; ++i) {
      FillPage(page.data(), i, v);
      PageRef ref{i, page.data()};
      ASSERT_TRUE(owner->Put("vm-1", *t, {&ref, 1}).ok());
    }

  std::vector<uint8_t> want(kPageSize);
  int old_replies = 0;
  for (int g = 0; g < kGets; ++g) {
    auto frame = reader.Next();  // checks the frame checksum
    ASSERT_TRUE(frame.ok()) << "reply " << g << ": " << frame.status().ToString();
    auto resp = DecodeResponse(frame->header.type, frame->payload, frame->header.length);
    ASSERT_TRUE(resp.ok()) << resp.status().ToString();
    ASSERT_TRUE(resp->status.ok()) << resp->status.ToString();
    auto get = DecodeGetReply(*resp, kN);
    ASSERT_TRUE(get.ok()) << get.status().ToString();
    bool all_old = true;
    for (uint64_t i = 0; i < kN; ++i) {
      ASSERT_EQ(get->present[i], 1);
      const uint8_t* p = get->pages + i * kPageSize;
      uint64_t v = VersionOf(p, i);
      ASSERT_TRUE(v >= 1 && v <= 3) << "reply " << g << " page " << i << " names version " << v;
      FillPage(want.data(), i, v);
      ASSERT_EQ(0, std::memcmp(p, want.data(), kPageSize)) << "reply " << g << " page " << i << " torn";
      all_old = all_old && v == 1;
    }
    old_replies += all_old;
  }
  // The race was real: replies were built before the PUTs (and sent after).
  EXPECT_GE(old_replies, 2) << "no reply was stuck in send during the PUTs";
}

TEST_F(MemdServerTest, MigrationHandsOwnershipOver) {
  auto a = Client("host-a");
  auto b = Client("host-b");
  auto ta = *a->Claim("vm-1");
  std::vector<uint8_t> page(kPageSize, 0x77);
  PageRef ref{42, page.data()};
  ASSERT_TRUE(a->Put("vm-1", ta, {&ref, 1}).ok());

  auto tb = a->Transfer("vm-1", ta, "host-b");
  ASSERT_TRUE(tb.ok());
  std::vector<uint8_t> buf(kPageSize);
  uint8_t* out[] = {buf.data()};
  uint8_t present[1] = {0};
  uint64_t idx[] = {42};
  ASSERT_TRUE(b->Get("vm-1", *tb, idx, out, present).ok());
  EXPECT_EQ(present[0], 1);
  EXPECT_EQ(buf, page);

  Status stale = a->Get("vm-1", ta, idx, out, present);
  EXPECT_EQ(stale.code(), Code::kPermissionDenied);
  EXPECT_NE(stale.message().find("stale token"), std::string::npos) << stale.message();
  EXPECT_EQ(a->Get("vm-1", *tb, idx, out, present).code(), Code::kPermissionDenied);  // not host-b
  EXPECT_EQ(a->Claim("vm-1").status().code(), Code::kAlreadyExists);
  // A refusal leaves the connection usable.
  EXPECT_TRUE(a->Stat().ok());
  EXPECT_TRUE(b->Release("vm-1", *tb).ok());
}

TEST_F(MemdServerTest, FullStoreOverTheWire) {
  PageStore::Options o;
  o.capacity_bytes = 300 * kPageSize;
  auto small = std::move(PageStore::Open(o)).value();
  auto server = std::move(MemdServer::Start(small.get(), HostPort{"127.0.0.1", 0})).value();
  auto c = std::move(MemdClient::Connect(server->address().ToString(), "host-a")).value();
  auto t = *c->Claim("vm-1");
  std::vector<uint8_t> page(kPageSize, 1);
  std::vector<PageRef> refs(400);
  for (size_t i = 0; i < refs.size(); ++i) refs[i] = PageRef{i, page.data()};
  // Two batches (256 + 144): the first fits, the second does not and stores nothing.
  Status st = c->Put("vm-1", t, refs);
  EXPECT_EQ(st.code(), Code::kResourceExhausted);
  EXPECT_EQ(c->Stat()->pages, 256u);
}

// A peer that opens connections in a loop gets the ones past the cap closed
// at once; the clients already in keep working, and a slot freed is reusable.
TEST_F(MemdServerTest, ConnectionsPastTheCapAreClosedAndTheOthersKeepWorking) {
  MemdServerOptions so;
  so.max_connections = 2;
  auto server = std::move(MemdServer::Start(store_.get(), HostPort{"127.0.0.1", 0}, so)).value();
  std::string addr = server->address().ToString();
  auto a = std::move(MemdClient::Connect(addr, "host-a")).value();
  auto b = std::move(MemdClient::Connect(addr, "host-b")).value();
  // The third: accepted by the kernel, closed by the server (EOF, no HELLO reply).
  EXPECT_FALSE(MemdClient::Connect(addr, "host-c").ok());
  EXPECT_TRUE(a->Stat().ok());
  EXPECT_TRUE(b->Stat().ok());
  EXPECT_GE(server->counters().connections_refused.load(), 1u);
  b.reset();
  // The server reaps b's thread at its next accept; a retry or two gets in.
  bool in = false;
  for (int i = 0; i < 50 && !in; ++i) {
    in = MemdClient::Connect(addr, "host-c").ok();
    if (!in) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(in);
}

// Sends raw bytes; expects a protocol-error frame naming the problem, then EOF.
void ExpectProtocolError(const std::string& addr, const std::vector<uint8_t>& bytes, const std::string& needle,
                         bool half_close = false) {
  SCOPED_TRACE(needle);
  auto fd = ConnectAddress(addr);
  ASSERT_TRUE(fd.ok());
  ASSERT_TRUE(wire::SendAll(fd->get(), bytes.data(), bytes.size()).ok());
  if (half_close) ::shutdown(fd->get(), SHUT_WR);
  wire::FrameReader r(fd->get(), kMagic, kVersion, kMaxPayload);
  auto f = r.Next();
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->header.type, kProtocolErrorType);
  auto resp = DecodeResponse(f->header.type, f->payload, f->header.length);
  ASSERT_TRUE(resp.ok());
  EXPECT_EQ(resp->status.code(), Code::kCorruption);
  EXPECT_NE(resp->status.message().find(needle), std::string::npos) << resp->status.message();
  EXPECT_EQ(r.Next().status().code(), Code::kNotFound);  // then the server closed
}

TEST_F(MemdServerTest, MalformedFramesCloseTheConnectionOnly) {
  std::vector<uint8_t> stat;
  AppendStat(&stat, 1);

  auto bad_magic = stat;
  bad_magic[0] ^= 1;
  ExpectProtocolError(addr_, bad_magic, "bad magic");

  auto bad_sum = stat;
  bad_sum.back() ^= 1;
  ExpectProtocolError(addr_, bad_sum, "checksum mismatch");

  auto oversize = stat;
  uint32_t huge = kMaxPayload + 1;
  std::memcpy(&oversize[8], &huge, 4);
  ExpectProtocolError(addr_, oversize, "exceeds limit");

  std::vector<uint8_t> id(8, 0);
  ExpectProtocolError(addr_, wire::MakeFrame(kMagic, kVersion, 99, id), "unknown request type");

  std::vector<uint8_t> trailing(9, 0);  // STAT is a u64 id and nothing more
  ExpectProtocolError(addr_, wire::MakeFrame(kMagic, kVersion, static_cast<uint16_t>(MsgType::kStat), trailing),
                      "trailing");

  std::vector<uint8_t> bad_count;
  wire::Encoder e(&bad_count);
  e.U64(1);
  e.Str("vm-1");
  e.U64(1);  // token: epoch, 128-bit secret
  e.U64(1);
  e.U64(1);
  e.U32(5000);
  ExpectProtocolError(addr_, wire::MakeFrame(kMagic, kVersion, static_cast<uint16_t>(MsgType::kPut), bad_count),
                      "exceeds the limit");

  std::vector<uint8_t> truncated(stat.begin(), stat.end() - 3);
  ExpectProtocolError(addr_, truncated, "closed mid-frame", /*half_close=*/true);

  // Good requests before the bad frame are answered first.
  std::vector<uint8_t> two = stat;
  two.insert(two.end(), bad_magic.begin(), bad_magic.end());
  auto fd = ConnectAddress(addr_);
  ASSERT_TRUE(wire::SendAll(fd->get(), two.data(), two.size()).ok());
  wire::FrameReader r(fd->get(), kMagic, kVersion, kMaxPayload);
  EXPECT_EQ(r.Next()->header.type, ResponseType(MsgType::kStat));
  EXPECT_EQ(r.Next()->header.type, kProtocolErrorType);

  // The server is fine and counted them all.
  auto c = Client("host-a");
  auto s = c->Stat();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(Counter(*s, "errors.protocol"), 8u);
}

TEST_F(MemdServerTest, RequestsBeforeHelloAreRefused) {
  auto fd = ConnectAddress(addr_);
  ASSERT_TRUE(fd.ok());
  std::vector<uint8_t> req;
  AppendClaim(&req, 5, "vm-1", "host-a");
  AppendHello(&req, 6, "host-a");
  AppendClaim(&req, 7, "vm-1", "host-b");  // claiming for another host
  AppendClaim(&req, 8, "vm-1", "host-a");
  ASSERT_TRUE(wire::SendAll(fd->get(), req.data(), req.size()).ok());
  wire::FrameReader r(fd->get(), kMagic, kVersion, kMaxPayload);
  Code want[] = {Code::kPermissionDenied, Code::kOk, Code::kPermissionDenied, Code::kOk};
  for (uint64_t i = 0; i < 4; ++i) {
    auto f = r.Next();
    ASSERT_TRUE(f.ok());
    auto resp = DecodeResponse(f->header.type, f->payload, f->header.length);
    ASSERT_TRUE(resp.ok());
    EXPECT_EQ(resp->id, 5 + i);
    EXPECT_EQ(resp->status.code(), want[i]) << resp->status.ToString();
  }
}

TEST_F(MemdServerTest, StopClosesClients) {
  auto c = Client("host-a");
  server_->Stop();
  EXPECT_EQ(c->Stat().status().code(), Code::kUnavailable);
  EXPECT_EQ(c->Stat().status().code(), Code::kUnavailable);  // stays broken
}

// ---- The agile-memd binary ----------------------------------------------------

using testing::MemdProcess;

// A hand-written server that answers HELLO, then one GET of 256 pages with a
// reply whose 200th page has one flipped bit. The client receives pages
// straight into the caller's buffers, so the checksum is checked after they
// land: the call must fail and say nothing about presence.
TEST(MemdClientTest, CorruptPageInAGetReplyFailsTheCall) {
  spdlog::set_level(spdlog::level::warn);
  auto listener = TcpListen(HostPort{"127.0.0.1", 0});
  ASSERT_TRUE(listener.ok());
  uint16_t port = *BoundPort(listener->get());
  std::thread server([&] {
    auto fd = Accept(listener->get());
    ASSERT_TRUE(fd.ok());
    wire::FrameReader r(fd->get(), kMagic, kVersion, kMaxPayload);
    std::vector<uint8_t> out;
    auto hello = r.Next();
    ASSERT_TRUE(hello.ok());
    auto req = DecodeRequest(hello->header.type, hello->payload, hello->header.length);
    AppendHelloReply(&out, req->id, HelloReply{"fake", kMaxBatchPages, kMaxPayload});
    ASSERT_TRUE(wire::SendAll(fd->get(), out.data(), out.size()).ok());
    auto get = r.Next();
    ASSERT_TRUE(get.ok());
    req = DecodeRequest(get->header.type, get->payload, get->header.length);
    out.clear();
    GetReplyWriter w(&out, req->id, kMaxBatchPages);
    for (uint32_t k = 0; k < kMaxBatchPages; ++k) {
      w.present()[k] = 1;
      std::memset(w.pages() + size_t{k} * kPageSize, static_cast<int>(k), kPageSize);
    }
    w.Finish(kMaxBatchPages);
    out[out.size() - 56 * kPageSize + 100] ^= 0x10;  // inside page 200
    ASSERT_TRUE(wire::SendAll(fd->get(), out.data(), out.size()).ok());
    char c;
    (void)::recv(fd->get(), &c, 1, 0);  // until the client hangs up
  });
  auto c = MemdClient::Connect("127.0.0.1:" + std::to_string(port), "host-a");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  std::vector<uint64_t> idx(kMaxBatchPages);
  std::vector<uint8_t> buf(kMaxBatchPages * kPageSize);
  std::vector<uint8_t*> outs(kMaxBatchPages);
  for (size_t k = 0; k < idx.size(); ++k) {
    idx[k] = k;
    outs[k] = &buf[k * kPageSize];
  }
  std::vector<uint8_t> present(kMaxBatchPages, 7);
  Status st = (*c)->Get("vm", OwnerToken{1, 2}, idx, outs, present);
  EXPECT_EQ(st.code(), Code::kUnavailable) << st.ToString();
  EXPECT_NE(st.message().find("checksum"), std::string::npos) << st.message();
  for (uint8_t p : present) EXPECT_NE(p, 1);  // no page reported present
  c->reset();
  server.join();
}

TEST(MemdBinary, ServesAndKeepsPagesAcrossRestart) {
  std::string dir = std::filesystem::temp_directory_path() / ("memd-bin-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::vector<uint8_t> page(kPageSize, 0x3c);
  uint64_t idx[] = {7};
  OwnerToken t;
  {
    MemdProcess p({"--data-dir", dir, "--capacity", "16M"});
    ASSERT_FALSE(p.addr().empty()) << "first line: " << p.line();
    EXPECT_NE(p.addr(), "127.0.0.1:0");
    auto c = MemdClient::Connect(p.addr(), "host-a");
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    t = *(*c)->Claim("vm-1");
    PageRef ref{7, page.data()};
    ASSERT_TRUE((*c)->Put("vm-1", t, {&ref, 1}).ok());
    int status = p.Stop();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  }
  {
    MemdProcess p({"--data-dir", dir});
    auto c = MemdClient::Connect(p.addr(), "host-a");
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    std::vector<uint8_t> buf(kPageSize);
    uint8_t* out[] = {buf.data()};
    uint8_t present[1] = {0};
    ASSERT_TRUE((*c)->Get("vm-1", t, idx, out, present).ok());
    EXPECT_EQ(present[0], 1);
    EXPECT_EQ(buf, page);
  }
  std::filesystem::remove_all(dir);
}

TEST(MemdBinary, RejectsBadFlags) {
  MemdProcess p({"--capacity", "lots"});
  EXPECT_TRUE(p.addr().empty());
  int status = p.Wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0);
}

// agile-memd with --tls-dir: hosts a and b (one CA), x (another CA).
class MemdTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    spdlog::set_level(spdlog::level::off);
    dir_ = "/tmp/agile-memd-tls-test-" + std::to_string(::getpid());
    std::string pki = std::string(AGILE_SOURCE_DIR) + "/scripts/agile-pki";
    ASSERT_EQ(std::system((pki + " " + dir_ + "/one memd a b >/dev/null").c_str()), 0);
    ASSERT_EQ(std::system((pki + " " + dir_ + "/two x >/dev/null").c_str()), 0);
    PageStore::Options o;
    o.capacity_bytes = 64 << 20;
    store_ = std::move(PageStore::Open(o)).value();
    MemdServerOptions so;
    so.tls = Creds("one/memd");
    auto s = MemdServer::Start(store_.get(), HostPort{"127.0.0.1", 0}, so);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(s).value();
    addr_ = server_->address().ToString();
  }
  void TearDown() override {
    server_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::shared_ptr<const tls::Credentials> Creds(const std::string& sub) {
    auto c = tls::Credentials::Load(dir_ + "/" + sub);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? *c : nullptr;
  }
  Result<std::unique_ptr<MemdClient>> Client(const std::string& sub, const std::string& host) {
    MemdClientOptions o;
    o.tls = Creds(sub);
    return MemdClient::Connect(addr_, host, o);
  }
  std::string dir_, addr_;
  std::unique_ptr<PageStore> store_;
  std::unique_ptr<MemdServer> server_;
};

TEST_F(MemdTlsTest, OwnerWorksOthersAreRefused) {
  auto a = Client("one/a", "a");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto ta = (*a)->Claim("vm-1");
  ASSERT_TRUE(ta.ok()) << ta.status().ToString();
  std::vector<uint8_t> page(kPageSize, 0x5a);
  PageRef ref{7, page.data()};
  ASSERT_TRUE((*a)->Put("vm-1", *ta, {&ref, 1}).ok());
  std::vector<uint8_t> buf(kPageSize);
  uint8_t* out[] = {buf.data()};
  uint8_t present[1] = {0};
  uint64_t idx[] = {7};
  ASSERT_TRUE((*a)->Get("vm-1", *ta, idx, out, present).ok());
  EXPECT_EQ(buf, page);

  // Host b, authenticated, even holding a's token: not its namespace.
  auto b = Client("one/b", "b");
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ((*b)->Get("vm-1", *ta, idx, out, present).code(), Code::kPermissionDenied);
  EXPECT_EQ((*b)->Transfer("vm-1", *ta, "b").status().code(), Code::kPermissionDenied);
  EXPECT_EQ((*b)->Release("vm-1", *ta).status().code(), Code::kPermissionDenied);
  // STAT shows each host its own namespaces only.
  auto sb = (*b)->Stat();
  ASSERT_TRUE(sb.ok());
  EXPECT_TRUE(sb->vms.empty());
  auto sa = (*a)->Stat();
  ASSERT_TRUE(sa.ok());
  ASSERT_EQ(sa->vms.size(), 1u);
  EXPECT_EQ(sa->vms[0].vm, "vm-1");

  // b's certificate cannot say HELLO as a (the client checks; so does the server).
  EXPECT_FALSE(Client("one/b", "a").ok());
  auto raw = tls::Connect(server_->address(), Creds("one/b"));
  ASSERT_TRUE(raw.ok()) << raw.status().ToString();
  std::vector<uint8_t> hello;
  AppendHello(&hello, 1, "a");
  ASSERT_TRUE(wire::SendAll(raw->fd.get(), hello.data(), hello.size()).ok());
  wire::FrameReader r(raw->fd.get(), kMagic, kVersion, kMaxPayload);
  auto f = r.Next();
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  auto resp = DecodeResponse(f->header.type, f->payload, f->header.length);
  ASSERT_TRUE(resp.ok());
  EXPECT_EQ(resp->status.code(), Code::kPermissionDenied) << resp->status.ToString();
}

TEST_F(MemdTlsTest, NoCertificateOrAnotherCaIsRefused) {
  // Another CA: the handshake fails.
  EXPECT_FALSE(Client("two/x", "x").ok());
  // Plain TCP: the server never answers HELLO.
  auto plain = MemdClient::Connect(addr_, "a");
  EXPECT_FALSE(plain.ok());
}

}  // namespace
}  // namespace agile::memd
