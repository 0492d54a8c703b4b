#include "store/reply_batch.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "base/fd.h"

namespace agile::memd {
namespace {

std::vector<uint8_t> Page(uint64_t index) {
  std::vector<uint8_t> p(kPageSize);
  for (size_t i = 0; i < kPageSize; i += 8) {
    uint64_t v = index * 0x9e3779b97f4a7c15ull + i;
    std::memcpy(&p[i], &v, 8);
  }
  return p;
}

struct MemoryStore {
  MemoryStore() {
    auto s = PageStore::Open(PageStore::Options{.capacity_bytes = 64 << 20});
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    store = std::move(s).value();
    token = *store->Claim("host-a", "vm-1");
  }
  void Put(uint64_t first, uint64_t n) {
    std::vector<std::vector<uint8_t>> data;
    std::vector<PageRef> refs;
    for (uint64_t i = first; i < first + n; ++i) data.push_back(Page(i));
    for (uint64_t i = 0; i < n; ++i) refs.push_back(PageRef{first + i, data[i].data()});
    ASSERT_TRUE(store->Put("host-a", "vm-1", token, refs).ok());
  }
  PinnedPages Pin(std::vector<uint64_t> idx) {
    std::vector<uint8_t> present(idx.size());
    auto p = store->GetPinned("host-a", "vm-1", token, idx, present.data());
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    return std::move(p).value();
  }
  std::unique_ptr<PageStore> store;
  OwnerToken token;
};

void Add(std::vector<uint8_t>* v, std::initializer_list<uint8_t> b) { v->insert(v->end(), b); }
void Add(std::vector<uint8_t>* v, const std::vector<uint8_t>& b) { v->insert(v->end(), b.begin(), b.end()); }

// Sends `batch` into one end of a socket pair with a small send buffer (so
// sendmsg returns short, often mid-piece) while a thread reads the other
// end in odd-sized bites; returns what arrived.
std::vector<uint8_t> SendThroughSmallSocket(ReplyBatch* batch, size_t expect) {
  int sv[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd tx(sv[0]), rx(sv[1]);
  int small = 4096;
  EXPECT_EQ(::setsockopt(tx.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
  std::vector<uint8_t> got;
  std::thread reader([&] {
    uint8_t buf[1000];
    for (;;) {
      ssize_t r = ::read(rx.get(), buf, sizeof(buf));
      if (r <= 0) return;
      got.insert(got.end(), buf, buf + r);
    }
  });
  Status st = batch->SendAll(tx.get());
  EXPECT_TRUE(st.ok()) << st.ToString();
  ::shutdown(tx.get(), SHUT_WR);
  reader.join();
  EXPECT_EQ(got.size(), expect);
  return got;
}

// Built bytes and borrowed pages go out interleaved in the order queued,
// also after Append moved a second batch behind the first (its byte pieces
// now at other offsets of the first's buffer).
TEST(ReplyBatch, BytesAndPagesGoOutInTheOrderQueued) {
  MemoryStore m;
  m.Put(0, 4);  // neighbouring slots: pages 0..3 in slots 0..3
  ReplyBatch a, b;
  Add(a.bytes(), {1, 2, 3});
  a.AddPages(m.Pin({2, 0, 1}));  // 2, then the run 0-1 as one piece
  Add(a.bytes(), {4});
  Add(b.bytes(), {5, 6});
  b.AddPages(m.Pin({3}));
  Add(b.bytes(), {7});
  a.Append(&b);
  EXPECT_TRUE(b.empty());
  std::vector<uint8_t> want;
  Add(&want, {1, 2, 3});
  for (uint64_t i : {2, 0, 1}) Add(&want, Page(i));
  Add(&want, {4, 5, 6});
  Add(&want, Page(3));
  Add(&want, {7});
  EXPECT_EQ(a.size(), want.size());
  EXPECT_TRUE(SendThroughSmallSocket(&a, want.size()) == want);
  EXPECT_TRUE(a.empty());
}

// More pieces than one sendmsg takes (IOV_MAX, 1024 on Linux): 1200 pages
// that are no neighbours, each behind 3 bytes of its own, with short sends.
TEST(ReplyBatch, MorePiecesThanIovMaxAndShortSends) {
  MemoryStore m;
  constexpr uint64_t kN = 1200;
  m.Put(0, kN);
  ReplyBatch batch;
  std::vector<uint8_t> want;
  for (uint64_t k = 0; k < kN; ++k) {
    uint64_t i = kN - 1 - k;  // backwards: no two slots neighbour in send order
    uint8_t tag = static_cast<uint8_t>(k);
    Add(batch.bytes(), {tag, 0xee, tag});
    Add(&want, {tag, 0xee, tag});
    batch.AddPages(m.Pin({i}));
    Add(&want, Page(i));
  }
  EXPECT_TRUE(SendThroughSmallSocket(&batch, want.size()) == want);
}

// A pinned slot is reusable once the batch holding the pin is sent: before
// it, a PUT of a new page takes a fresh slot; after it, the pinned one.
TEST(ReplyBatch, SendingDropsThePins) {
  MemoryStore m;
  m.Put(0, 1);
  PinnedPages pin = m.Pin({0});
  const uint8_t* slot = pin.pages()[0];
  ReplyBatch batch;
  batch.AddPages(std::move(pin));
  m.Put(0, 1);  // page 0 again: its old slot retires, held by the pin
  m.Put(1, 1);
  EXPECT_NE(m.Pin({1}).pages()[0], slot) << "a pinned slot was reused before its reply was sent";
  SendThroughSmallSocket(&batch, kPageSize);
  m.Put(2, 1);
  EXPECT_EQ(m.Pin({2}).pages()[0], slot) << "the slot stayed pinned after its reply was sent";
}

}  // namespace
}  // namespace agile::memd
