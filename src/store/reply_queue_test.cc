#include "store/reply_queue.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "base/fd.h"

namespace agile::memd {
namespace {

ReplyBatch Bytes(std::initializer_list<uint8_t> b) {
  ReplyBatch r;
  r.bytes()->insert(r.bytes()->end(), b);
  return r;
}
std::vector<uint8_t> V(std::initializer_list<uint8_t> b) { return b; }

TEST(ReplyQueue, RepliesGoOutInOrderOnlyOnceTheirTicketIsDurable) {
  ReplyQueue q;
  auto a = Bytes({1}), b = Bytes({2}), c = Bytes({3}), d = Bytes({4});
  q.Push(5, &a);
  EXPECT_TRUE(a.empty());
  q.Push(0, &b);  // a GET after the PUT: waits behind it
  q.Push(9, &c);
  q.Push(7, &d);  // never waits for less than the chunk before it
  EXPECT_EQ(q.waiting_for(), 9u);
  ReplyBatch out;
  EXPECT_EQ(q.TakeReady(4, &out), 0u);
  EXPECT_TRUE(out.empty());
  q.TakeReady(5, &out);
  EXPECT_EQ(*out.bytes(), V({1, 2}));
  q.TakeReady(8, &out);
  EXPECT_EQ(*out.bytes(), V({1, 2})) << "the chunk of ticket 9 went out before its commit";
  q.TakeReady(9, &out);
  EXPECT_EQ(*out.bytes(), V({1, 2, 3, 4}));
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.waiting_for(), 0u);
}

TEST(ReplyQueue, NothingQueuedWaitsForNothing) {
  ReplyQueue q;
  ReplyBatch none;
  q.Push(3, &none);
  EXPECT_TRUE(q.empty());
  auto a = Bytes({7});
  q.Push(0, &a);
  ReplyBatch out;
  q.TakeAll(&out);
  EXPECT_EQ(*out.bytes(), V({7}));
}

// A GET reply queued behind a change that waits for its commit keeps its
// pages pinned while it waits and until it is sent, not only until it
// leaves the queue: meanwhile an overwrite's retired slot is not reused.
TEST(ReplyQueue, AWaitingGetReplyKeepsItsPagesUntilSent) {
  auto opened = PageStore::Open(PageStore::Options{.capacity_bytes = 16 << 20});
  ASSERT_TRUE(opened.ok());
  PageStore& s = **opened;
  auto t = *s.Claim("host-a", "vm-1");
  std::vector<uint8_t> v0(kPageSize, 0xa0), v1(kPageSize, 0xa1), other(kPageSize, 0xb0);
  PageRef put0{0, v0.data()}, put1{0, v1.data()}, put_other{1, other.data()}, put_third{2, other.data()};
  ASSERT_TRUE(s.Put("host-a", "vm-1", t, {&put0, 1}).ok());
  uint64_t idx = 0;
  uint8_t present = 0;
  auto pin = s.GetPinned("host-a", "vm-1", t, {&idx, 1}, &present);
  ASSERT_TRUE(pin.ok());
  const uint8_t* slot = pin->pages()[0];

  ReplyQueue q;
  ReplyBatch get = Bytes({9});
  get.AddPages(std::move(pin).value());
  q.Push(5, &get);  // behind a PUT of ticket 5
  ASSERT_TRUE(s.Put("host-a", "vm-1", t, {&put1, 1}).ok());  // retires `slot`
  ASSERT_TRUE(s.Put("host-a", "vm-1", t, {&put_other, 1}).ok());
  ReplyBatch ready;
  EXPECT_EQ(q.TakeReady(4, &ready), 0u);
  EXPECT_EQ(q.TakeReady(5, &ready), 1u);
  EXPECT_EQ(0, std::memcmp(slot, v0.data(), kPageSize)) << "the waiting reply's page was overwritten";

  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd tx(sv[0]), rx(sv[1]);
  ASSERT_TRUE(ready.SendAll(tx.get()).ok());
  std::vector<uint8_t> got(1 + kPageSize);
  ASSERT_EQ(::recv(rx.get(), got.data(), got.size(), MSG_WAITALL), static_cast<ssize_t>(got.size()));
  EXPECT_EQ(got[0], 9);
  EXPECT_EQ(0, std::memcmp(&got[1], v0.data(), kPageSize));
  // Sent: the slot is free for the next new page.
  ASSERT_TRUE(s.Put("host-a", "vm-1", t, {&put_third, 1}).ok());
  uint64_t third = 2;
  auto pin3 = s.GetPinned("host-a", "vm-1", t, {&third, 1}, &present);
  ASSERT_TRUE(pin3.ok());
  EXPECT_EQ(pin3->pages()[0], slot);
}

}  // namespace
}  // namespace agile::memd
