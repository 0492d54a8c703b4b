// Post-copy recovery's protocol pieces, over real sockets: the destination's
// board admits a RESUME only for the same migration (id, source host,
// certificate); ReceiveMigration answers a refused RESUME on the wire and
// hands an accepted one to the paused migration; the page requester keeps
// the fault thread off a dead link and asks again on the new one.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "base/testing/scratch_dir.h"
#include "migrate/channel.h"
#include "migrate/page_requester.h"
#include "migrate/receiver.h"
#include "migrate/recovery_board.h"

namespace agile::migrate {
namespace {
using std::chrono::milliseconds;

std::pair<UniqueFd, UniqueFd> Pair() {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

std::unique_ptr<Channel> NewChannel() {
  auto [a, b] = Pair();
  (void)b.Release();  // never read: the test only checks who got the channel
  return std::make_unique<Channel>(std::move(a), 1000);
}

struct Waiting {
  RecoveryBoard board;
  std::unique_ptr<Channel> got;
  Waiting() {
    RecoveryBoard::Entry e;
    e.id_lo = 0x1111;
    e.id_hi = 0x2222;
    e.src_host = "hostA";
    e.deliver = [this](std::unique_ptr<Channel> ch) { got = std::move(ch); };
    EXPECT_TRUE(board.Register("vm1", std::move(e)).ok());
  }
};

TEST(RecoveryBoard, HandsTheConnectionToTheSameMigrationOnly) {
  Waiting w;
  auto ch = NewChannel();
  // Another migration id (a stale source, or a guess): refused, the channel stays with the caller.
  Status s = w.board.Offer({"vm1", "hostA", 0x1111, 0x2223}, "", &ch);
  EXPECT_EQ(s.code(), Code::kPermissionDenied) << s.ToString();
  EXPECT_NE(ch, nullptr);
  EXPECT_EQ(w.got, nullptr);
  // Another source host with the right id.
  s = w.board.Offer({"vm1", "hostB", 0x1111, 0x2222}, "", &ch);
  EXPECT_EQ(s.code(), Code::kPermissionDenied) << s.ToString();
  // A certificate naming another host than RESUME says.
  s = w.board.Offer({"vm1", "hostA", 0x1111, 0x2222}, "hostB", &ch);
  EXPECT_EQ(s.code(), Code::kPermissionDenied) << s.ToString();
  // Another VM.
  s = w.board.Offer({"vm2", "hostA", 0x1111, 0x2222}, "", &ch);
  EXPECT_EQ(s.code(), Code::kNotFound) << s.ToString();
  EXPECT_EQ(w.got, nullptr);
  // The same migration, from its certificate's host.
  Channel* raw = ch.get();
  s = w.board.Offer({"vm1", "hostA", 0x1111, 0x2222}, "hostA", &ch);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(w.got.get(), raw);
  // Unregistered (the migration ended or gave up): nobody waits any more.
  w.board.Unregister("vm1");
  auto again = NewChannel();
  EXPECT_EQ(w.board.Offer({"vm1", "hostA", 0x1111, 0x2222}, "", &again).code(), Code::kNotFound);
  // A migration that completed is remembered: its source (which lost the
  // DONE_ACK with the link) learns so; a stale id still does not.
  RecoveryBoard::Entry e2;
  e2.id_lo = 5;
  e2.id_hi = 6;
  e2.src_host = "hostA";
  e2.deliver = [](std::unique_ptr<Channel>) { ADD_FAILURE() << "delivered to a completed migration"; };
  ASSERT_TRUE(w.board.Register("vm3", std::move(e2)).ok());
  w.board.Completed("vm3");
  EXPECT_EQ(w.board.Offer({"vm3", "hostA", 5, 6}, "", &again).code(), Code::kAlreadyExists);
  EXPECT_EQ(w.board.Offer({"vm3", "hostA", 5, 7}, "", &again).code(), Code::kNotFound);
  RecoveryBoard::Entry dup;
  EXPECT_TRUE(w.board.Register("vm1", dup).ok());
  EXPECT_EQ(w.board.Register("vm1", dup).code(), Code::kAlreadyExists);
}

TEST(RecoveryBoard, ADroppedMigrationNeverRanForItsOwnSourceOnly) {
  RecoveryBoard board;
  ASSERT_TRUE(board.Dropped("vm1", {0x1111, 0x2222, "hostA", nullptr}).ok());
  EXPECT_TRUE(board.NeverRan({"vm1", "hostA", 0x1111, 0x2222}, ""));
  EXPECT_TRUE(board.NeverRan({"vm1", "hostA", 0x1111, 0x2222}, "hostA"));
  EXPECT_FALSE(board.NeverRan({"vm1", "hostA", 0x1111, 0x2222}, "hostB")) << "a certificate naming another host";
  EXPECT_FALSE(board.NeverRan({"vm1", "hostB", 0x1111, 0x2222}, "")) << "another source host";
  EXPECT_FALSE(board.NeverRan({"vm1", "hostA", 0x1111, 0x2223}, "")) << "another migration id";
  EXPECT_FALSE(board.NeverRan({"vm2", "hostA", 0x1111, 0x2222}, "")) << "another VM";
  // A migration of the VM waiting here switched over: it may run here.
  ASSERT_TRUE(board.Register("vm1", {0x1111, 0x2222, "hostA", [](std::unique_ptr<Channel>) {}}).ok());
  EXPECT_FALSE(board.NeverRan({"vm1", "hostA", 0x1111, 0x2222}, ""));
  board.Unregister("vm1");
  EXPECT_TRUE(board.NeverRan({"vm1", "hostA", 0x1111, 0x2222}, ""));
}

// The memory of dropped copies outlives agiled (STATE_DIR/recovery): a
// Dropped one is read again; an arrival still recorded (its agiled died
// before SWITCHOVER was taken) becomes a dropped one; one taken over
// (Arrived) is gone; a VM that runs here is never said to have never run.
TEST(RecoveryBoard, DroppedAndArrivingRecordsOutliveTheBoard) {
  namespace fs = std::filesystem;
  ScratchDir state_dir("agile-recovery-board");
  const std::string dir = state_dir / "recovery";  // created on first use
  {
    RecoveryBoard board(dir);
    ASSERT_TRUE(board.Dropped("vm1", {0x1111, 0x2222, "hostA", nullptr, "ns-1", wire::MigMode::kAgile}).ok());
    ASSERT_TRUE(board.Arriving("vm2", {5, 6, "hostB", nullptr, "", wire::MigMode::kPostcopy}).ok());
    ASSERT_TRUE(board.Arriving("vm3", {7, 8, "hostB", nullptr}).ok());
    ASSERT_TRUE(board.Arrived("vm3").ok());
    ASSERT_TRUE(board.Arriving("vm4", {9, 10, "hostB", nullptr}).ok());
    ASSERT_TRUE(board.Arriving("vm6", {11, 12, "hostB", nullptr}).ok());
    ASSERT_TRUE(board.Dropped("vm6", {11, 12, "hostB", nullptr}).ok());  // the receiver's Fail
    EXPECT_FALSE(board.NeverRan({"vm2", "hostB", 5, 6}, "")) << "an arrival in progress is no dropped copy";
    EXPECT_FALSE(fs::exists(dir + "/vm6.arriving")) << "Dropped leaves no arrival behind";
  }
  {
    std::ofstream bad(dir + "/vm5.dropped");
    bad << "AGMIGRC1 0000000000000000 2\n{}";
  }
  auto none = [](const std::string&) { return false; };
  RecoveryBoard again(dir);
  EXPECT_EQ(again.LoadDropped([](const std::string& vm) { return vm == "vm4"; }), 3u) << "vm1, vm2, vm6";
  std::string ns;
  EXPECT_TRUE(again.NeverRan({"vm1", "hostA", 0x1111, 0x2222}, "", &ns));
  EXPECT_EQ(ns, "ns-1") << "the namespace to hand back";
  EXPECT_TRUE(again.NeverRan({"vm2", "hostB", 5, 6}, "")) << "its agiled died before SWITCHOVER was taken";
  EXPECT_FALSE(again.NeverRan({"vm2", "hostB", 5, 7}, "")) << "another migration id";
  EXPECT_TRUE(again.NeverRan({"vm6", "hostB", 11, 12}, ""));
  EXPECT_FALSE(again.NeverRan({"vm3", "hostB", 7, 8}, "")) << "SWITCHOVER was taken: it may have run here";
  EXPECT_FALSE(again.NeverRan({"vm4", "hostB", 9, 10}, "")) << "a VM that runs here";
  EXPECT_FALSE(fs::exists(dir + "/vm2.arriving"));
  EXPECT_TRUE(fs::exists(dir + "/vm2.dropped"));
  EXPECT_FALSE(fs::exists(dir + "/vm4.arriving"));
  EXPECT_TRUE(fs::exists(dir + "/vm5.dropped")) << "a damaged record is left for the operator";
  RecoveryBoard third(dir);
  EXPECT_EQ(third.LoadDropped(none), 3u);
  EXPECT_TRUE(third.NeverRan({"vm2", "hostB", 5, 6}, ""));
  RecoveryBoard memory_only;
  EXPECT_TRUE(memory_only.Arriving("vm7", {1, 2, "hostA", nullptr}).ok());
  EXPECT_EQ(memory_only.LoadDropped(none), 0u);
}

TEST(RecoveryBoard, CloseTellsEveryWaitingMigrationToStopWaiting) {
  RecoveryBoard board;
  int told = 0;
  RecoveryBoard::Entry e;
  e.src_host = "hostA";
  e.deliver = [&](std::unique_ptr<Channel> ch) { told += ch == nullptr ? 1 : 100; };
  ASSERT_TRUE(board.Register("vm1", e).ok());
  board.Close();
  EXPECT_EQ(told, 1);
  EXPECT_EQ(board.Register("vm2", e).code(), Code::kUnavailable);
}

// The source's side of the handshake, by hand: RESUME out, RESUME_ACK in.
Result<wire::MigResumeAck> Resume(Channel& src, const wire::MigResume& r) {
  std::vector<uint8_t> f;
  wire::AppendResume(&f, r);
  AGILE_RETURN_IF_ERROR(src.Send(f));
  std::vector<uint8_t> payload;
  AGILE_ASSIGN_OR_RETURN(auto h, src.Receive(&payload, 5000));
  if (h.type != static_cast<uint16_t>(wire::MigMsg::kResumeAck)) return Corruption("not a RESUME_ACK");
  return wire::DecodeResumeAck(payload);
}

// A destination's connection handler on one end of a socket pair, the
// source's channel on the other; `dst` returns once the handler is done.
struct Handshake {
  std::future<void> dst;
  std::unique_ptr<Channel> src;
};
Handshake StartHandshake(const MigrationPeer& peer) {
  auto [src_fd, dst_fd] = Pair();
  Handshake hs;
  hs.dst = std::async(std::launch::async, [&peer, fd = std::move(dst_fd)]() mutable {
    ReceiveMigration(std::move(fd), nullptr, "127.0.0.1", peer);
  });
  hs.src = std::make_unique<Channel>(std::move(src_fd), 5000);
  return hs;
}

TEST(RecoveryHandshake, AWrongMigrationIdIsRefusedOnTheWire) {
  Waiting w;
  MigrationPeer peer;
  peer.recovery = &w.board;
  auto [dst, src_ch] = StartHandshake(peer);
  Channel& src = *src_ch;
  auto ack = Resume(src, {"vm1", "hostA", 0x1111, 0xdead});
  ASSERT_TRUE(ack.ok()) << ack.status().ToString();
  EXPECT_NE(ack->status, 0u);
  EXPECT_EQ(ack->message.rfind("permission-denied", 0), 0u) << ack->message;
  dst.get();
  EXPECT_EQ(w.got, nullptr) << "a wrong id took the paused migration over";
}

TEST(RecoveryHandshake, TheRightMigrationIdTakesThePausedMigrationOver) {
  Waiting w;
  MigrationPeer peer;
  peer.recovery = &w.board;
  auto [dst, src_ch] = StartHandshake(peer);
  Channel& src = *src_ch;
  std::vector<uint8_t> f;
  wire::AppendResume(&f, {"vm1", "hostA", 0x1111, 0x2222});
  ASSERT_TRUE(src.Send(f).ok());
  dst.get();  // returns once the connection went to the paused migration
  ASSERT_NE(w.got, nullptr);
  // The paused migration now talks on it: what it sends, the source reads.
  f.clear();
  wire::AppendResumeAck(&f, {0, "resumed", 3});
  wire::AppendLocations(&f, {{10, 3, wire::PageWhere::kAtSource}}, 0, 1);
  ASSERT_TRUE(w.got->Send(f).ok());
  std::vector<uint8_t> payload;
  auto h = src.Receive(&payload, 5000);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  auto ack = wire::DecodeResumeAck(payload);
  ASSERT_TRUE(ack.ok());
  EXPECT_EQ(ack->pages_remote, 3u);
  h = src.Receive(&payload, 5000);
  ASSERT_TRUE(h.ok());
  std::vector<wire::MigRun> runs;
  ASSERT_TRUE(wire::DecodeLocations(payload, &runs).ok());
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].first, 10u);
}

TEST(RecoveryHandshake, WithoutABoardRecoveryIsRefused) {
  MigrationPeer peer;  // recovery == nullptr
  auto [dst, src_ch] = StartHandshake(peer);
  Channel& src = *src_ch;
  auto ack = Resume(src, {"vm1", "hostA", 1, 2});
  ASSERT_TRUE(ack.ok()) << ack.status().ToString();
  EXPECT_NE(ack->status, 0u);
  dst.get();
}

// Reads PAGE_REQUEST frames until `want` pages were asked or 2 s passed.
std::vector<uint64_t> Requested(Channel& ch, size_t want) {
  std::vector<uint64_t> all, idx;
  std::vector<uint8_t> payload;
  while (all.size() < want) {
    auto h = ch.Receive(&payload, 2000);
    if (!h.ok()) break;
    EXPECT_TRUE(wire::DecodePageRequest(payload, &idx).ok());
    all.insert(all.end(), idx.begin(), idx.end());
  }
  return all;
}

TEST(PageRequester, AsksOnceDetachedAsksNothingAndAsksAgainOnTheNewLink) {
  auto [a1, b1] = Pair();
  Channel old_dst(std::move(a1), 1000), old_src(std::move(b1), 1000);
  PageRequester pager(&old_dst, 100);
  pager.Request(5);
  pager.Request(5);  // the fault thread retries every ms: asked once
  pager.Request(7);
  EXPECT_EQ(Requested(old_src, 2), (std::vector<uint64_t>{5, 7}));
  // The link breaks: the fault thread's requests must not block or go anywhere.
  old_dst.Shutdown();
  pager.Detach();
  auto t0 = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < 50; ++i) pager.Request(i);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(100)) << "Request blocked on a dead link";
  // A new link: what was asked may have been lost, so a retried fault asks again.
  auto [a2, b2] = Pair();
  Channel new_dst(std::move(a2), 1000), new_src(std::move(b2), 1000);
  pager.Attach(&new_dst);
  pager.Request(5);
  pager.Request(9);
  EXPECT_EQ(Requested(new_src, 2), (std::vector<uint64_t>{5, 9}));
  std::vector<uint8_t> payload;
  EXPECT_FALSE(new_src.Receive(&payload, 200).ok()) << "requests queued while detached leaked onto the new link";
}

}  // namespace
}  // namespace agile::migrate
