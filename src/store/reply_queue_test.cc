#include "store/reply_queue.h"

#include <gtest/gtest.h>

namespace agile::memd {
namespace {

std::vector<uint8_t> Bytes(std::initializer_list<uint8_t> b) { return b; }

TEST(ReplyQueue, RepliesGoOutInOrderOnlyOnceTheirTicketIsDurable) {
  ReplyQueue q;
  auto a = Bytes({1}), b = Bytes({2}), c = Bytes({3}), d = Bytes({4});
  q.Push(5, &a);
  EXPECT_TRUE(a.empty());
  q.Push(0, &b);  // a GET after the PUT: waits behind it
  q.Push(9, &c);
  q.Push(7, &d);  // never waits for less than the chunk before it
  EXPECT_EQ(q.waiting_for(), 9u);
  std::vector<uint8_t> out;
  EXPECT_EQ(q.TakeReady(4, &out), 0u);
  EXPECT_TRUE(out.empty());
  q.TakeReady(5, &out);
  EXPECT_EQ(out, Bytes({1, 2}));
  q.TakeReady(8, &out);
  EXPECT_EQ(out, Bytes({1, 2})) << "the chunk of ticket 9 went out before its commit";
  q.TakeReady(9, &out);
  EXPECT_EQ(out, Bytes({1, 2, 3, 4}));
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.waiting_for(), 0u);
}

TEST(ReplyQueue, NothingQueuedWaitsForNothing) {
  ReplyQueue q;
  std::vector<uint8_t> none;
  q.Push(3, &none);
  EXPECT_TRUE(q.empty());
  auto a = Bytes({7});
  q.Push(0, &a);
  std::vector<uint8_t> out;
  q.TakeAll(&out);
  EXPECT_EQ(out, Bytes({7}));
}

}  // namespace
}  // namespace agile::memd
