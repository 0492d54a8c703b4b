// The destination's answer to SWITCHOVER when its QEMU does not resume the VM,
// over a real socket, with real guest memory (shm_guest under the real shim)
// and a QEMU stand-in answering QMP by script: `cont` refused by QEMU (an
// error reply: the guest never ran) is answered "not resumed" and the copy
// dropped; `cont` on a monitor that closed under it (it may have executed)
// is answered "failed" and the copy is not handed back; in post-copy, `cont`
// not answered in time (QEMU's main loop waits for a page only the source
// can send) goes on "running", and a RESUME after the link broke is taken
// while that `cont` still waits (soak seed 7, run 259).
// docs/migration.md ("Failure safety").
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <set>

#include "migrate/channel.h"
#include "migrate/receiver.h"
#include "migrate/recovery_board.h"
#include "migrate/testing/stand_in_vm.h"
#include "vm/testing/guest_process.h"

namespace agile::migrate {
namespace {
using nlohmann::json;

constexpr uint64_t kPages = (64ull << 20) / 4096;  // the smallest VM a spec allows

// An incoming VM whose QEMU answers every command, except `cont` as told.
class ScriptedVm : public testing::StandInVm {
 public:
  ScriptedVm(qemu::VmSpec spec, std::shared_ptr<vm::GuestMemory> mem, Status cont)
      : mem_(std::move(mem)), cont_(std::move(cont)) {
    spec_ = std::move(spec);
  }
  Result<json> Qmp(const std::string& cmd, const json&) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      sent_.insert(cmd);
    }
    if (cmd == "query-status") return json{{"status", "paused"}, {"running", false}};
    if (cmd == "cont") {
      if (hold_cont_) {
        // QEMU's main loop waiting for a page: `cont` is answered only once
        // it is free (released), or, as QMP's timeout, after 15 s.
        std::unique_lock<std::mutex> g(gate_mu_);
        if (!gate_cv_.wait_for(g, std::chrono::seconds(15), [&] { return released_; }))
          return Unavailable("QMP cont: no answer within 15000 ms");
      }
      if (!cont_.ok()) return cont_;
      return json::object();
    }
    return json::object();
  }
  void HoldCont() { hold_cont_ = true; }
  void ReleaseCont() {
    std::lock_guard<std::mutex> g(gate_mu_);
    released_ = true;
    gate_cv_.notify_all();
  }
  std::shared_ptr<vm::GuestMemory> memory() override { return mem_; }
  bool Sent(const std::string& cmd) {
    std::lock_guard<std::mutex> l(mu_);
    return sent_.count(cmd) != 0;
  }

 private:
  std::shared_ptr<vm::GuestMemory> mem_;
  Status cont_;
  std::mutex mu_;
  std::set<std::string> sent_;
  std::atomic<bool> hold_cont_{false};
  std::mutex gate_mu_;
  std::condition_variable gate_cv_;
  bool released_ = false;
};

class ScriptedHost : public IncomingHost {
 public:
  explicit ScriptedHost(std::shared_ptr<ScriptedVm> vm) : vm_(std::move(vm)) {}
  const std::string& host_id() const override { return id_; }
  bool has_store() const override { return false; }
  Result<std::shared_ptr<MigratingVm>> StartIncoming(const qemu::VmSpec&, const std::string&) override {
    return std::shared_ptr<MigratingVm>(vm_);
  }
  void DropIncoming(const std::string&) override { dropped = true; }
  Result<std::string> CreateDiskCopy(const std::string&, size_t, const std::string&, uint64_t) override {
    return Unsupported("no disks here");
  }
  void RemoveDiskCopies(const std::string&) override {}
  std::atomic<bool> dropped{false};

 private:
  std::string id_ = "hostB";
  std::shared_ptr<ScriptedVm> vm_;
};

// Frames on `ch` until one of `type` (PAGE_REQUESTs and LOCATIONS may come
// first); its payload in *payload.
bool ReceiveUntil(Channel& ch, wire::MigMsg type, std::vector<uint8_t>* payload, int timeout_ms) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    auto h = ch.Receive(payload, static_cast<int>(left.count()));
    if (!h.ok()) {
      ADD_FAILURE() << "waiting for " << wire::MigMsgName(static_cast<uint16_t>(type)) << ": "
                    << h.status().ToString();
      return false;
    }
    if (h->type == static_cast<uint16_t>(type)) return true;
  }
}

// The destination under test: real guest memory (shm_guest under the real
// shim, every page at the source), a scripted QEMU, and ReceiveMigration on
// one end of a socket pair; the test plays the source on the other, `src`.
// Members go in reverse: the source's link closes before `dst` is joined.
struct IncomingPostcopy {
  std::unique_ptr<vm::testing::GuestProcess> guest;
  std::shared_ptr<ScriptedVm> vm;
  std::unique_ptr<ScriptedHost> host;
  MigrationPeer peer;
  std::future<void> dst;
  std::unique_ptr<Channel> src;

  // Starts the receiver (with `board`: recoverable) and sends HELLO from
  // hostA, migration id 0x1111/0x2222, up to its HELLO_ACK.
  bool Start(const Status& cont, RecoveryBoard* board = nullptr) {
    auto g = vm::testing::GuestProcess::Start(AGILE_SHIM_PATH, AGILE_SHM_GUEST_PATH, kPages, nullptr, 4,
                                              vm::PageState::kRemote);
    if (!g.ok()) {
      ADD_FAILURE() << g.status().ToString();
      return false;
    }
    guest = std::move(g).value();
    qemu::VmSpec spec;
    spec.name = "vm1";
    spec.memory_bytes = kPages * 4096;
    vm = std::make_shared<ScriptedVm>(spec, guest->shared_memory(), cont);
    host = std::make_unique<ScriptedHost>(vm);
    peer.may_pass_qemu_args = true;
    peer.timeouts.device_state_ms = 2000;
    peer.timeouts.migrate_recover_ms = 20000;  // a failed check ends a recovering receiver soon
    peer.recovery = board;
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
      ADD_FAILURE() << "socketpair";
      return false;
    }
    dst = std::async(std::launch::async, [this, fd = UniqueFd(fds[1])]() mutable {
      ReceiveMigration(std::move(fd), host.get(), "127.0.0.1", peer);
    });
    src = std::make_unique<Channel>(UniqueFd(fds[0]), 5000);
    std::vector<uint8_t> f, payload;
    wire::MigHello hello;
    hello.mode = wire::MigMode::kPostcopy;
    hello.page_count = kPages;
    hello.spec_json = spec.ToJson().dump();
    hello.src_host = "hostA";
    hello.migration_id_lo = 0x1111;
    hello.migration_id_hi = 0x2222;
    wire::AppendHello(&f, hello);
    return src->Send(f).ok() && ReceiveUntil(*src, wire::MigMsg::kHelloAck, &payload, 5000);
  }
  // LOCATIONS (every page still at the source), then SWITCHOVER asking for the guest to run.
  bool SwitchOver() {
    std::vector<uint8_t> f;
    wire::AppendLocations(&f, {{0, kPages, wire::PageWhere::kAtSource}}, 0, 1);
    wire::AppendSwitchover(&f, {false, 0, 0, 0, /*resume=*/true});
    return src->Send(f).ok();
  }
};

// Runs a post-copy migration's source side by hand up to SWITCHOVER and
// returns the destination's SWITCHOVER_ACK.
wire::MigSwitchoverAck SwitchOver(const Status& cont, bool* dropped, bool* cont_sent) {
  IncomingPostcopy in;
  wire::MigSwitchoverAck ack;
  std::vector<uint8_t> payload;
  if (!in.Start(cont) || !in.SwitchOver()) return ack;
  if (ReceiveUntil(*in.src, wire::MigMsg::kSwitchoverAck, &payload, 5000)) {
    auto a = wire::DecodeSwitchoverAck(payload);
    EXPECT_TRUE(a.ok()) << a.status().ToString();
    if (a.ok()) ack = *a;
  }
  in.src->Shutdown();  // the source goes: a destination waiting for post-copy pages ends
  in.dst.get();
  *dropped = in.host->dropped;
  *cont_sent = in.vm->Sent("cont");
  return ack;
}

TEST(HandBack, ContRefusedByQemuIsNotResumedAndTheCopyIsDropped) {
  bool dropped = false, cont_sent = false;
  auto ack = SwitchOver(InvalidArgument("QMP cont: Resetting the Virtual Machine is required"), &dropped, &cont_sent);
  EXPECT_TRUE(cont_sent);
  EXPECT_EQ(ack.status, wire::SwitchoverResult::kNotResumed) << ack.message;
  EXPECT_NE(ack.message.find("never ran here"), std::string::npos) << ack.message;
  EXPECT_FALSE(ack.has_token);  // post-copy: no lease
  EXPECT_TRUE(dropped) << "the unrun copy was kept";
}

TEST(HandBack, ContOnAMonitorThatClosedMayHaveRunAndIsNotHandedBack) {
  bool dropped = false, cont_sent = false;
  auto ack = SwitchOver(Unavailable("QMP cont: Connection reset by peer"), &dropped, &cont_sent);
  EXPECT_TRUE(cont_sent);
  EXPECT_EQ(ack.status, wire::SwitchoverResult::kFailed) << ack.message;
  EXPECT_FALSE(ack.has_token);
  EXPECT_FALSE(dropped) << "a copy that may have run was dropped";
}

TEST(HandBack, PostcopyContNotAnsweredYetGoesOnRunning) {
  // QEMU has the command and runs it once its main loop is free.
  bool dropped = false, cont_sent = false;
  auto ack = SwitchOver(Unavailable("QMP cont: no answer within 10000 ms"), &dropped, &cont_sent);
  EXPECT_TRUE(cont_sent);
  EXPECT_EQ(ack.status, wire::SwitchoverResult::kRunning) << ack.message;
  EXPECT_NE(ack.message.find("had not answered cont"), std::string::npos) << ack.message;
  EXPECT_FALSE(dropped) << "a copy about to run was dropped";
}

TEST(HandBack, ContThatRunsIsAnsweredRunning) {
  bool dropped = false, cont_sent = false;
  auto ack = SwitchOver(Status::Ok(), &dropped, &cont_sent);
  EXPECT_TRUE(cont_sent);
  EXPECT_EQ(ack.status, wire::SwitchoverResult::kRunning) << ack.message;
  EXPECT_FALSE(dropped);
}

// Opens a new connection to `in`'s destination (its side runs in *conn) and
// sends RESUME for vm1 from hostA, migration id (0x1111, id_hi) on it; null
// when that failed.
std::unique_ptr<Channel> DialResume(IncomingPostcopy& in, uint64_t id_hi, std::future<void>* conn) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return nullptr;
  *conn = std::async(std::launch::async, [&in, fd = UniqueFd(fds[1])]() mutable {
    ReceiveMigration(std::move(fd), in.host.get(), "127.0.0.1", in.peer);
  });
  auto ch = std::make_unique<Channel>(UniqueFd(fds[0]), 5000);
  std::vector<uint8_t> f;
  wire::AppendResume(&f, {"vm1", "hostA", 0x1111, id_hi});
  if (!ch->Send(f).ok()) return nullptr;
  return ch;
}

TEST(PostcopyRecovery, ARESUMEIsTakenWhileContWaitsForAPageOnlyTheSourceHas) {
  // Soak seed 7, run 259: the source agiled died at SWITCHOVER while QEMU's
  // main loop waited for a page from it, so `cont` had no answer. The
  // restarted source's RESUME must be taken at once (the page comes only
  // over it), not after the switch thread gave up on `cont`.
  RecoveryBoard board;
  IncomingPostcopy in;
  ASSERT_TRUE(in.Start(Status::Ok(), &board));
  auto& vm = in.vm;
  vm->HoldCont();
  // Whatever fails below, the receiver stops waiting before `in.dst` is joined.
  struct Unblock {
    RecoveryBoard* board;
    ScriptedVm* vm;
    ~Unblock() {
      vm->ReleaseCont();
      board->Close();
    }
  } unblock{&board, vm.get()};
  ASSERT_TRUE(in.SwitchOver());
  for (int i = 0; i < 500 && !vm->Sent("cont"); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(vm->Sent("cont"));
  in.src.reset();  // the source agiled dies; `cont` still waits

  // Its restart dials RESUME.
  std::future<void> resume_conn;
  auto src2 = DialResume(in, 0x2222, &resume_conn);
  ASSERT_NE(src2, nullptr);
  std::vector<uint8_t> f, payload;
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(ReceiveUntil(*src2, wire::MigMsg::kResumeAck, &payload, 3000))
      << "the RESUME waited behind `cont`";
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
  auto rack = wire::DecodeResumeAck(payload);
  ASSERT_TRUE(rack.ok()) << rack.status().ToString();
  EXPECT_EQ(rack->status, 0u) << rack->message;
  EXPECT_GT(rack->pages_remote, 0u);
  resume_conn.get();

  // The page QEMU waited for comes over the new link: `cont` is answered,
  // and the ACK goes out on that link.
  vm->ReleaseCont();
  ASSERT_TRUE(ReceiveUntil(*src2, wire::MigMsg::kSwitchoverAck, &payload, 5000));
  auto ack = wire::DecodeSwitchoverAck(payload);
  ASSERT_TRUE(ack.ok());
  EXPECT_EQ(ack->status, wire::SwitchoverResult::kRunning) << ack->message;

  // The rest of the pages, then DONE: the migration completes here.
  std::vector<uint8_t> page(4096);
  for (uint64_t first = 0; first < kPages; first += wire::kMigMaxPagesPerFrame) {
    std::vector<wire::MigPage> batch;
    for (uint64_t i = first; i < first + wire::kMigMaxPagesPerFrame && i < kPages; ++i) batch.push_back({i, page.data()});
    f.clear();
    wire::AppendPages(&f, 1, batch.data(), batch.size());
    ASSERT_TRUE(src2->Send(f).ok());
  }
  f.clear();
  wire::AppendEmpty(&f, wire::MigMsg::kDone);
  ASSERT_TRUE(src2->Send(f).ok());
  EXPECT_TRUE(ReceiveUntil(*src2, wire::MigMsg::kDoneAck, &payload, 10000));
  in.dst.get();
  EXPECT_FALSE(in.host->dropped) << "the copy that runs here was dropped";
  EXPECT_EQ(in.guest->memory().count(vm::PageState::kRemote), 0u);
}

// RESUME for vm1 from hostA with migration id (0x1111, id_hi) on a new
// connection to `in`'s destination; its RESUME_ACK.
wire::MigResumeAck Resume(IncomingPostcopy& in, uint64_t id_hi) {
  wire::MigResumeAck rack;
  std::future<void> conn;
  auto src = DialResume(in, id_hi, &conn);
  EXPECT_NE(src, nullptr) << "RESUME not sent";
  std::vector<uint8_t> payload;
  if (src != nullptr && ReceiveUntil(*src, wire::MigMsg::kResumeAck, &payload, 5000)) {
    auto a = wire::DecodeResumeAck(payload);
    EXPECT_TRUE(a.ok()) << a.status().ToString();
    if (a.ok()) rack = *a;
  }
  if (conn.valid()) conn.get();
  return rack;
}

TEST(PostcopyRecovery, ASwitchoverThatNeverArrivedIsAnsweredNeverRanHere) {
  // Soak seed 7, run 112 (session 12): the link, throttled to 64 kbit/s
  // across the commit point, closed with SWITCHOVER sent by the source but
  // not taken here. The destination dropped its copy as failed before
  // switchover; the source, paused and fenced past its commit point, was
  // refused "not-found" on every RESUME and stayed stranded. Now the RESUME
  // of that migration learns that the VM never ran here.
  RecoveryBoard board;
  IncomingPostcopy in;
  ASSERT_TRUE(in.Start(Status::Ok(), &board));
  struct Unblock {
    RecoveryBoard* board;
    ~Unblock() { board->Close(); }
  } unblock{&board};
  in.src->Shutdown();  // the link goes before SWITCHOVER arrives
  in.dst.get();
  ASSERT_TRUE(in.host->dropped) << "the copy that never ran was kept";
  EXPECT_FALSE(in.vm->Sent("cont"));

  auto rack = Resume(in, 0x2222);
  EXPECT_EQ(rack.status, 3u) << rack.message;
  EXPECT_NE(rack.message.find("never ran here"), std::string::npos) << rack.message;
  // Another migration id (a stale source, a guess) learns nothing of it.
  rack = Resume(in, 0x2223);
  EXPECT_EQ(rack.status, 1u) << rack.message;
}

// PAGES for every page in [0, kPages) but `skip`, then (with done) DONE.
bool SendPagesBut(Channel& ch, const std::set<uint64_t>& skip, bool only_skipped, bool done) {
  std::vector<uint8_t> page(4096, 0x5a), f;
  std::vector<wire::MigPage> batch;
  auto flush = [&] {
    if (batch.empty()) return true;
    f.clear();
    wire::AppendPages(&f, 1, batch.data(), batch.size());
    batch.clear();
    return ch.Send(f).ok();
  };
  for (uint64_t i = 0; i < kPages; ++i) {
    if ((skip.count(i) != 0) != only_skipped) continue;
    batch.push_back({i, page.data()});
    if (batch.size() == wire::kMigMaxPagesPerFrame && !flush()) return false;
  }
  if (!flush()) return false;
  if (!done) return true;
  f.clear();
  wire::AppendEmpty(&f, wire::MigMsg::kDone);
  return ch.Send(f).ok();
}

TEST(PostcopyRecovery, ADoneWithPagesStillMissingIsAnsweredWithARecoveryThatListsThem) {
  // CI rehearsal, session 9: a restarted source sent DONE with 5 pages still
  // missing here; the destination failed the migration, and the VM was
  // stranded (its vCPUs waiting on those pages, the source refused). Now the
  // link goes down instead, and the source's RESUME learns what is missing.
  RecoveryBoard board;
  IncomingPostcopy in;
  ASSERT_TRUE(in.Start(Status::Ok(), &board));
  struct Unblock {
    RecoveryBoard* board;
    ~Unblock() { board->Close(); }
  } unblock{&board};
  ASSERT_TRUE(in.SwitchOver());
  std::vector<uint8_t> payload;
  ASSERT_TRUE(ReceiveUntil(*in.src, wire::MigMsg::kSwitchoverAck, &payload, 5000));
  const std::set<uint64_t> gap = {7, 300, 301};
  ASSERT_TRUE(SendPagesBut(*in.src, gap, /*only_skipped=*/false, /*done=*/true));
  // No DONE_ACK: the link closes.
  bool acked = false;
  for (;;) {
    auto h = in.src->Receive(&payload, 5000);
    if (!h.ok()) break;
    acked |= h->type == static_cast<uint16_t>(wire::MigMsg::kDoneAck);
  }
  EXPECT_FALSE(acked) << "DONE acknowledged with pages missing";
  EXPECT_EQ(in.guest->memory().count(vm::PageState::kRemote), gap.size());

  // The source's recovery: RESUME is answered with exactly the gap.
  std::future<void> resume_conn;
  auto src2 = DialResume(in, 0x2222, &resume_conn);
  ASSERT_NE(src2, nullptr);
  ASSERT_TRUE(ReceiveUntil(*src2, wire::MigMsg::kResumeAck, &payload, 5000));
  auto rack = wire::DecodeResumeAck(payload);
  ASSERT_TRUE(rack.ok()) << rack.status().ToString();
  ASSERT_EQ(rack->status, 0u) << rack->message;
  ASSERT_EQ(rack->pages_remote, gap.size());
  std::set<uint64_t> listed;
  while (listed.size() < gap.size()) {
    ASSERT_TRUE(ReceiveUntil(*src2, wire::MigMsg::kLocations, &payload, 5000));
    std::vector<wire::MigRun> runs;
    ASSERT_TRUE(wire::DecodeLocations(payload, &runs).ok());
    for (const auto& r : runs)
      for (uint64_t i = r.first; i < r.first + r.count; ++i) listed.insert(i);
  }
  EXPECT_EQ(listed, gap);
  resume_conn.get();

  // They come, then DONE again: completed.
  ASSERT_TRUE(SendPagesBut(*src2, gap, /*only_skipped=*/true, /*done=*/true));
  EXPECT_TRUE(ReceiveUntil(*src2, wire::MigMsg::kDoneAck, &payload, 10000));
  in.dst.get();
  EXPECT_FALSE(in.host->dropped);
  EXPECT_EQ(in.guest->memory().count(vm::PageState::kRemote), 0u);
}

}  // namespace
}  // namespace agile::migrate
