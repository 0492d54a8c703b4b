// agile-memd loses nothing it acknowledged (issue 11, item 2), with the
// faults injected for real: kill -9 of the real binary between PUTs, one
// corrupted byte in the journal on disk, a data directory on a tmpfs that
// fills up, and concurrent sessions sharing group commits.
#include <fcntl.h>
#include <poll.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>

#include "base/io.h"
#include "base/socket.h"
#include "base/testing/scratch_dir.h"
#include "wire/frame_stream.h"
#include "store/memd_client.h"
#include "store/memd_server.h"
#include "store/page_store.h"
#include "store/testing/memd_process.h"
#include "wire/journal_format.h"

namespace agile::memd {
namespace {

namespace fs = std::filesystem;

// Page contents derived from (index, version), so a stale or mixed-up page shows.
std::vector<uint8_t> MakePage(uint64_t index, uint32_t version = 0) {
  std::vector<uint8_t> p(kPageSize);
  for (size_t i = 0; i < kPageSize; i += 8) {
    uint64_t v = index * 0x9e3779b97f4a7c15ull + i + (uint64_t{version} << 48) + 1;
    std::memcpy(&p[i], &v, 8);
  }
  return p;
}

std::unique_ptr<PageStore> Open(const std::string& dir, uint64_t capacity = 256ull << 20) {
  PageStore::Options o;
  o.capacity_bytes = capacity;
  o.data_dir = dir;
  auto s = PageStore::Open(o);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(s).value() : nullptr;
}

Status PutOne(PageStore& s, OwnerToken t, uint64_t index, uint32_t version) {
  auto page = MakePage(index, version);
  PageRef ref{index, page.data()};
  return s.Put("host-a", "vm-1", t, {&ref, 1}).status();
}

// Fetches one page: nullopt when absent.
std::optional<std::vector<uint8_t>> GetOne(PageStore& s, OwnerToken t, uint64_t index) {
  std::vector<uint8_t> buf(kPageSize);
  uint8_t present = 0;
  auto n = s.Get("host-a", "vm-1", t, {&index, 1}, &present, buf.data());
  EXPECT_TRUE(n.ok()) << n.status().ToString();
  if (!n.ok() || !present) return std::nullopt;
  return buf;
}

// Offsets of the journal's records, in order (header skipped).
std::vector<std::pair<size_t, size_t>> RecordOffsets(const std::vector<uint8_t>& j) {
  std::string vm;
  size_t off = 0;
  EXPECT_TRUE(DecodeJournalHeader(j.data(), j.size(), &vm, &off).ok());
  std::vector<std::pair<size_t, size_t>> recs;
  while (off < j.size()) {
    const uint8_t* body = nullptr;
    size_t len = 0;
    size_t n = JournalRecordAt(j.data() + off, j.size() - off, &body, &len);
    if (n == 0) break;
    recs.emplace_back(off, n);
    off += n;
  }
  return recs;
}

std::vector<uint8_t> ReadFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  std::vector<uint8_t> b(fs::file_size(path));
  EXPECT_TRUE(PreadFull(fd.get(), b.data(), b.size(), 0).ok());
  return b;
}

void WriteFile(const std::string& path, const std::vector<uint8_t>& b) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
  ASSERT_TRUE(WriteFull(fd.get(), b.data(), b.size()).ok());
}

// Every byte of one SET record in the middle of the journal, damaged in turn:
// replay keeps every other page, drops exactly that one (never serving its
// older version), and RECLAIM names it.
TEST(MemdDurability, CorruptJournalByteLosesExactlyThatPage) {
  ScratchDir pristine("memd-durable");
  OwnerToken t;
  {
    auto s = Open(pristine.path());
    t = *s->Claim("host-a", "vm-1");
    for (uint64_t i = 0; i < 40; ++i) ASSERT_TRUE(PutOne(*s, t, i, 0).ok());
    ASSERT_TRUE(PutOne(*s, t, 17, 1).ok());  // the record we damage: page 17's second version
    for (uint64_t i = 40; i < 60; ++i) ASSERT_TRUE(PutOne(*s, t, i, 0).ok());
  }
  const std::string journal = "/vm-1.index";
  std::vector<uint8_t> good = ReadFile(pristine.path() + journal);
  auto recs = RecordOffsets(good);
  ASSERT_EQ(recs.size(), 1u + 61u);  // OWNER, then 61 SETs
  auto [at, size] = recs[1 + 40];    // page 17, version 1
  for (size_t b = 0; b < size; ++b) {
    SCOPED_TRACE("damaged byte " + std::to_string(b) + " of the record");
    ScratchDir dir("memd-durable");
    fs::copy(pristine.path(), dir.path(), fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    fs::remove(dir.path() + "/LOCK");
    auto bad = good;
    bad[at + b] ^= 0x41;
    WriteFile(dir.path() + journal, bad);
    auto s = Open(dir.path());
    ASSERT_NE(s, nullptr);
    for (uint64_t i = 0; i < 60; ++i) {
      if (i == 17) continue;
      auto p = GetOne(*s, t, i);
      ASSERT_TRUE(p.has_value()) << "page " << i;
      ASSERT_EQ(*p, MakePage(i, 0)) << "page " << i;
    }
    EXPECT_FALSE(GetOne(*s, t, 17).has_value()) << "a lost page must be absent, never its older version";
    auto r = s->Reclaim("host-a", "vm-1", t);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->lost, std::vector<uint64_t>{17});
    EXPECT_FALSE(r->lost_unknown);
    EXPECT_EQ(r->pages, 59u);
  }
}

// A loss is remembered across restarts and compaction until the page is
// stored again; a later PUT of it clears it.
TEST(MemdDurability, LossOutlivesRestartAndCompactionUntilStoredAgain) {
  ScratchDir dir("memd-durable");
  OwnerToken t;
  {
    auto s = Open(dir.path());
    t = *s->Claim("host-a", "vm-1");
    for (uint64_t i = 0; i < 10; ++i) ASSERT_TRUE(PutOne(*s, t, i, 0).ok());
  }
  auto j = ReadFile(dir.path() + "/vm-1.index");
  auto recs = RecordOffsets(j);
  j[recs[4].first + 12] ^= 0xff;  // page 3's SET: a byte of its slot
  WriteFile(dir.path() + "/vm-1.index", j);
  {
    auto s = Open(dir.path());
    EXPECT_EQ(s->Reclaim("host-a", "vm-1", t)->lost, std::vector<uint64_t>{3});
    // Enough churn to compact the journal (> 65,536 records; it is then
    // rewritten, with a LOST record for page 3).
    std::vector<std::vector<uint8_t>> data;
    std::vector<PageRef> refs;
    for (uint64_t i = 1000; i < 1256; ++i) {
      data.push_back(MakePage(i));
      refs.push_back(PageRef{i, data.back().data()});
    }
    for (int k = 0; k < 260; ++k) {
      ASSERT_TRUE(s->Put("host-a", "vm-1", t, refs).ok());
      ASSERT_TRUE(s->WaitDurable(s->LastWrite()).ok());
    }
    EXPECT_LT(fs::file_size(dir.path() + "/vm-1.index"), 260u * 256 * 45) << "the journal was never compacted";
  }
  {
    auto s = Open(dir.path());
    EXPECT_EQ(s->Reclaim("host-a", "vm-1", t)->lost, std::vector<uint64_t>{3});
    ASSERT_TRUE(PutOne(*s, t, 3, 5).ok());
    EXPECT_TRUE(s->Reclaim("host-a", "vm-1", t)->lost.empty());
  }
  auto s = Open(dir.path());
  EXPECT_TRUE(s->Reclaim("host-a", "vm-1", t)->lost.empty());
  EXPECT_EQ(*GetOne(*s, t, 3), MakePage(3, 5));
}

// A damaged record that names no page (its guard is gone too) is skipped,
// the rest kept, and the loss reported as unknown.
TEST(MemdDurability, UnattributableDamageIsReportedAsUnknown) {
  ScratchDir dir("memd-durable");
  OwnerToken t;
  {
    auto s = Open(dir.path());
    t = *s->Claim("host-a", "vm-1");
    for (uint64_t i = 0; i < 10; ++i) ASSERT_TRUE(PutOne(*s, t, i, 0).ok());
  }
  auto j = ReadFile(dir.path() + "/vm-1.index");
  auto recs = RecordOffsets(j);
  for (size_t b = 8; b < recs[5].second; ++b) j[recs[5].first + b] ^= 0x5a;  // page 4's SET, all of its body
  WriteFile(dir.path() + "/vm-1.index", j);
  auto s = Open(dir.path());
  auto r = s->Reclaim("host-a", "vm-1", t);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->lost_unknown);
  for (uint64_t i = 5; i < 10; ++i) EXPECT_EQ(*GetOne(*s, t, i), MakePage(i, 0)) << "page " << i;
}

using testing::MemdProcess;

// Two sessions PUT as fast as they can; agile-memd is killed with SIGKILL
// in the middle; the restarted one has every page whose PUT was acknowledged,
// with its acknowledged bytes.
TEST(MemdDurability, EveryAcknowledgedPageSurvivesKillDashNine) {
  ScratchDir dir("memd-durable");
  OwnerToken token;
  std::mutex mu;
  std::map<uint64_t, uint32_t> acked;  // index -> version acknowledged last
  {
    MemdProcess p({"--data-dir", dir.path(), "--capacity", "1G"});
    ASSERT_FALSE(p.addr().empty());
    auto c = MemdClient::Connect(p.addr(), "host-a");
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    token = *(*c)->Claim("vm-1");
    std::atomic<bool> stop{false};
    auto writer = [&](uint64_t base) {
      auto client = MemdClient::Connect(p.addr(), "host-a");
      if (!client.ok()) return;
      for (uint32_t round = 0; !stop; ++round) {
        // 64 pages per call, rewriting a window of 4096 pages: new pages and overwrites.
        std::vector<std::vector<uint8_t>> data;
        std::vector<PageRef> refs;
        uint64_t first = base + (round * 64) % 4096;
        for (uint64_t i = first; i < first + 64; ++i) {
          data.push_back(MakePage(i, round));
          refs.push_back(PageRef{i, data.back().data()});
        }
        if (!(*client)->Put("vm-1", token, refs).ok()) return;  // killed
        std::lock_guard l(mu);
        for (const auto& r : refs) acked[r.index] = round;
      }
    };
    std::thread a(writer, 0), b(writer, 1 << 20);
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    int status = p.Signal(SIGKILL);
    EXPECT_TRUE(WIFSIGNALED(status)) << status;
    stop = true;
    a.join();
    b.join();
  }
  ASSERT_GT(acked.size(), 1000u) << "too few PUTs were acknowledged to mean anything";
  MemdProcess p({"--data-dir", dir.path(), "--capacity", "1G"});
  auto c = MemdClient::Connect(p.addr(), "host-a");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  auto r = (*c)->Reclaim("vm-1", token);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->lost.empty());
  EXPECT_FALSE(r->lost_unknown);
  std::vector<uint64_t> idx;
  for (const auto& [i, v] : acked) idx.push_back(i);
  std::vector<uint8_t> buf(idx.size() * kPageSize);
  std::vector<uint8_t*> outs(idx.size());
  for (size_t k = 0; k < idx.size(); ++k) outs[k] = &buf[k * kPageSize];
  std::vector<uint8_t> present(idx.size());
  ASSERT_TRUE((*c)->Get("vm-1", token, idx, outs, present).ok());
  size_t k = 0, bad = 0;
  for (const auto& [i, v] : acked) {
    // The acknowledged version, or a later one whose PUT was in flight at the kill.
    bool ok = present[k] && (std::memcmp(outs[k], MakePage(i, v).data(), kPageSize) == 0 ||
                             std::memcmp(outs[k], MakePage(i, v + 64).data(), kPageSize) == 0);
    if (!ok && bad++ < 5) ADD_FAILURE() << "acknowledged page " << i << " (version " << v << ") lost or wrong";
    ++k;
  }
  EXPECT_EQ(bad, 0u) << "of " << acked.size() << " acknowledged pages";
}

// Concurrent sessions share fdatasyncs: far fewer group commits than PUTs.
TEST(MemdDurability, ConcurrentPutsShareGroupCommits) {
  ScratchDir dir("memd-durable");
  auto s = Open(dir.path());
  auto t = *s->Claim("host-a", "vm-1");
  constexpr int kThreads = 4, kPuts = 200;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int th = 0; th < kThreads; ++th)
    threads.emplace_back([&, th] {
      for (int k = 0; k < kPuts; ++k) {
        uint64_t i = static_cast<uint64_t>(th) * 100000 + static_cast<uint64_t>(k);
        if (!PutOne(*s, t, i, 0).ok() || !s->WaitDurable(s->LastWrite()).ok()) failures++;
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(s->commits(), 0u);
  EXPECT_LT(s->commits(), static_cast<uint64_t>(kThreads * kPuts)) << "every PUT paid its own sync";
}

// A gate the committer waits at before its fdatasyncs (PageStore's test
// hook): while it is closed no group commit can finish.
struct CommitGate {
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
  int arrived = 0;
  Status answer;  // what the commit gets once it passes
  Status Pass() {
    std::unique_lock l(mu);
    ++arrived;
    cv.notify_all();
    cv.wait(l, [&] { return open; });
    return answer;
  }
  void Open(Status with = Status::Ok()) {
    std::lock_guard l(mu);
    answer = std::move(with);
    open = true;
    cv.notify_all();
  }
  bool WaitArrived(std::chrono::milliseconds limit) {
    std::unique_lock l(mu);
    return cv.wait_for(l, limit, [&] { return arrived > 0; });
  }
};

std::unique_ptr<PageStore> OpenGated(const std::string& dir, CommitGate* gate) {
  PageStore::Options o;
  o.capacity_bytes = 256ull << 20;
  o.data_dir = dir;
  o.test_before_commit = [gate] { return gate->Pass(); };
  auto s = PageStore::Open(o);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(s).value() : nullptr;
}

// PUT frames for pages [first, first + n), as the client sends them.
std::vector<uint8_t> PutFrames(uint64_t first_id, OwnerToken t, uint64_t first, uint64_t n,
                               std::vector<std::vector<uint8_t>>* keep) {
  std::vector<uint8_t> bytes;
  for (uint64_t b = first; b < first + n; b += kMaxBatchPages) {
    std::vector<PageRef> refs;
    for (uint64_t i = b; i < std::min(first + n, b + kMaxBatchPages); ++i) {
      keep->push_back(MakePage(i));
      refs.push_back(PageRef{i, keep->back().data()});
    }
    AppendPut(&bytes, first_id++, "vm-1", t, refs);
  }
  return bytes;
}

// The acknowledgement of a PUT follows the group commit that makes it
// durable, never precedes it; and while that commit is held, the connection
// goes on reading and applying the PUTs pipelined behind it (so the next
// commit covers them all), with their replies held too, in order.
TEST(MemdDurability, APutIsAcknowledgedOnlyAfterItsCommit) {
  ScratchDir dir("memd-durable");
  CommitGate gate;
  auto store = OpenGated(dir.path(), &gate);
  ASSERT_NE(store, nullptr);
  auto server = MemdServer::Start(store.get(), HostPort{"127.0.0.1", 0});
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  OwnerToken t;
  {
    auto c = MemdClient::Connect((*server)->address().ToString(), "host-a");
    ASSERT_TRUE(c.ok());
    t = *(*c)->Claim("vm-1");  // CLAIM syncs on its own, not through the committer
  }
  auto fd = ConnectAddress((*server)->address().ToString());
  ASSERT_TRUE(fd.ok());
  std::vector<uint8_t> hello;
  AppendHello(&hello, 1, "host-a");
  ASSERT_TRUE(wire::SendAll(fd->get(), hello.data(), hello.size()).ok());
  wire::FrameReader r(fd->get(), kMagic, kVersion, kMaxPayload);
  ASSERT_TRUE(r.Next().ok());

  const std::string journal = dir.path() + "/vm-1.index";
  const auto journal_size = fs::file_size(journal);
  // Three PUTs of 256 pages and a STAT behind them, all at once.
  std::vector<std::vector<uint8_t>> keep;
  std::vector<uint8_t> req = PutFrames(2, t, 0, 3 * kMaxBatchPages, &keep);
  AppendStat(&req, 5);
  ASSERT_TRUE(wire::SendAll(fd->get(), req.data(), req.size()).ok());
  ASSERT_TRUE(gate.WaitArrived(std::chrono::seconds(10))) << "no group commit was started";
  // The connection applied every PUT while the commit waits...
  for (int i = 0; i < 500 && store->Stats().pages < 3 * kMaxBatchPages; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(store->Stats().pages, 3u * kMaxBatchPages) << "the connection stopped reading while a commit ran";
  // ...and answered none of them, nor the STAT queued behind them.
  pollfd p{fd->get(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 300), 0) << "a reply went out before the group commit covering it";
  EXPECT_EQ(store->commits(), 0u);
  // Their journal records wait in memory: a journal sync now (CLAIM,
  // TRANSFER) could not make durable a record whose page data is not.
  EXPECT_EQ(fs::file_size(journal), journal_size) << "SET records reached the journal before their data's sync";

  gate.Open();
  for (uint64_t id = 2; id <= 5; ++id) {
    auto f = r.Next();
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    auto resp = DecodeResponse(f->header.type, f->payload, f->header.length);
    ASSERT_TRUE(resp.ok()) << resp.status().ToString();
    EXPECT_EQ(resp->id, id) << "replies out of request order";
    EXPECT_TRUE(resp->status.ok()) << resp->status.ToString();
  }
  EXPECT_GE(store->commits(), 1u);
  EXPECT_GE(store->DurableThrough(), store->LastWrite());
  EXPECT_GE(fs::file_size(journal), journal_size + 3 * kMaxBatchPages * 33) << "the commit wrote no SET records";
}

// A group commit that fails (as an fdatasync with EIO would) acknowledges
// nothing it covered: the connection is dropped without the replies, and no
// later change is ever acknowledged either (the kernel reports a writeback
// error once and no longer knows which pages it lost).
TEST(MemdDurability, AFailedCommitAcknowledgesNothingEver) {
  ScratchDir dir("memd-durable");
  CommitGate gate;
  gate.Open(Internal("injected fdatasync failure (EIO)"));
  auto store = OpenGated(dir.path(), &gate);
  ASSERT_NE(store, nullptr);
  auto server = MemdServer::Start(store.get(), HostPort{"127.0.0.1", 0});
  ASSERT_TRUE(server.ok());
  std::string addr = (*server)->address().ToString();
  auto c = MemdClient::Connect(addr, "host-a");
  ASSERT_TRUE(c.ok());
  auto t = *(*c)->Claim("vm-1");
  std::vector<std::vector<uint8_t>> keep;
  std::vector<PageRef> refs;
  for (uint64_t i = 0; i < 300; ++i) {
    keep.push_back(MakePage(i));
    refs.push_back(PageRef{i, keep.back().data()});
  }
  Status st = (*c)->Put("vm-1", t, refs);
  EXPECT_EQ(st.code(), Code::kUnavailable) << st.ToString();
  {
    std::lock_guard l(gate.mu);
    EXPECT_GE(gate.arrived, 1);
  }
  // A fresh connection: reads still work, changes are never acknowledged.
  auto c2 = MemdClient::Connect(addr, "host-a");
  ASSERT_TRUE(c2.ok());
  EXPECT_TRUE((*c2)->Stat().ok());
  st = (*c2)->Put("vm-1", t, std::span(refs).first(1));
  EXPECT_EQ(st.code(), Code::kUnavailable) << st.ToString();
  EXPECT_FALSE(store->WaitDurable(store->LastWrite()).ok());
  EXPECT_EQ(store->commits(), 0u);
}

// A data directory on a tmpfs of 2 MiB: PUTs beyond it fail with no-space
// over the wire (not "store full", not a dropped connection), nothing of the
// failed batch is kept, and everything acknowledged before is still served,
// also after a restart.
TEST(MemdDurability, FullDiskIsNoSpaceOverTheWire) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
  ScratchDir mnt("memd-durable");
  ASSERT_EQ(::mount("durable-test", mnt.path().c_str(), "tmpfs", 0, "size=2m"), 0) << std::strerror(errno);
  struct Unmount {
    std::string p;
    ~Unmount() { ::umount2(p.c_str(), MNT_DETACH); }
  } unmount{mnt.path()};
  std::string dir = mnt.path() + "/data";
  auto store = Open(dir, 1ull << 30);  // capacity far above the disk
  auto server = MemdServer::Start(store.get(), HostPort{"127.0.0.1", 0});
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto c = MemdClient::Connect((*server)->address().ToString(), "host-a");
  ASSERT_TRUE(c.ok());
  auto t = *(*c)->Claim("vm-1");
  uint64_t stored = 0;
  Status st;
  for (uint64_t first = 0; first < 2048; first += 16) {
    std::vector<std::vector<uint8_t>> data;
    std::vector<PageRef> refs;
    for (uint64_t i = first; i < first + 16; ++i) {
      data.push_back(MakePage(i));
      refs.push_back(PageRef{i, data.back().data()});
    }
    st = (*c)->Put("vm-1", t, refs);
    if (!st.ok()) break;
    stored = first + 16;
  }
  ASSERT_EQ(st.code(), Code::kNoSpace) << st.ToString();
  EXPECT_NE(st.message().find("disk full"), std::string::npos) << st.message();
  ASSERT_GT(stored, 0u);
  // The connection is still good, and every acknowledged page is there.
  std::vector<uint64_t> idx;
  for (uint64_t i = 0; i < stored; ++i) idx.push_back(i);
  std::vector<uint8_t> buf(idx.size() * kPageSize);
  std::vector<uint8_t*> outs(idx.size());
  for (size_t k = 0; k < idx.size(); ++k) outs[k] = &buf[k * kPageSize];
  std::vector<uint8_t> present(idx.size());
  ASSERT_TRUE((*c)->Get("vm-1", t, idx, outs, present).ok());
  for (size_t k = 0; k < idx.size(); ++k) ASSERT_TRUE(present[k] && std::memcmp(outs[k], MakePage(idx[k]).data(), kPageSize) == 0) << k;
  auto stat = (*c)->Stat();
  ASSERT_TRUE(stat.ok());
  EXPECT_EQ(stat->pages, stored) << "the failed batch left pages behind";
  c->reset();
  (*server)->Stop();
  server->reset();
  store.reset();
  auto again = Open(dir, 1ull << 30);
  ASSERT_NE(again, nullptr);
  for (uint64_t i = 0; i < stored; ++i) ASSERT_EQ(*GetOne(*again, t, i), MakePage(i)) << i;
}

}  // namespace
}  // namespace agile::memd
