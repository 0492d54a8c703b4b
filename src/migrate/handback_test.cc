// The destination's answer to SWITCHOVER when its QEMU does not resume the VM,
// over a real socket, with real guest memory (shm_guest under the real shim)
// and a QEMU stand-in answering QMP by script: `cont` refused by QEMU (an
// error reply: the guest never ran) is answered "not resumed" and the copy
// dropped; `cont` left unanswered (it may have executed) is answered "failed"
// and the copy is not handed back. docs/migration.md ("Failure safety").
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <future>
#include <mutex>
#include <set>

#include "migrate/channel.h"
#include "migrate/receiver.h"
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
    std::lock_guard<std::mutex> l(mu_);
    sent_.insert(cmd);
    if (cmd == "query-status") return json{{"status", "paused"}, {"running", false}};
    if (cmd == "cont") {
      if (!cont_.ok()) return cont_;
      return json::object();
    }
    return json::object();
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

// Runs a post-copy migration's source side by hand up to SWITCHOVER and
// returns the destination's SWITCHOVER_ACK.
wire::MigSwitchoverAck SwitchOver(const Status& cont, bool* dropped, bool* cont_sent) {
  auto guest = vm::testing::GuestProcess::Start(AGILE_SHIM_PATH, AGILE_SHM_GUEST_PATH, kPages, nullptr, 4,
                                                vm::PageState::kRemote);
  EXPECT_TRUE(guest.ok()) << guest.status().ToString();
  if (!guest.ok()) return {};
  qemu::VmSpec spec;
  spec.name = "vm1";
  spec.memory_bytes = kPages * 4096;
  auto vm = std::make_shared<ScriptedVm>(spec, (*guest)->shared_memory(), cont);
  ScriptedHost host(vm);
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  MigrationPeer peer;
  peer.may_pass_qemu_args = true;
  peer.timeouts.device_state_ms = 2000;
  auto dst = std::async(std::launch::async, [&, fd = UniqueFd(fds[1])]() mutable {
    ReceiveMigration(std::move(fd), &host, "127.0.0.1", peer);
  });
  Channel src(UniqueFd(fds[0]), 5000);
  std::vector<uint8_t> f, payload;
  wire::MigHello hello;
  hello.mode = wire::MigMode::kPostcopy;
  hello.page_count = kPages;
  hello.spec_json = spec.ToJson().dump();
  hello.src_host = "hostA";
  wire::AppendHello(&f, hello);
  EXPECT_TRUE(src.Send(f).ok());
  auto h = src.Receive(&payload, 5000);
  EXPECT_TRUE(h.ok() && h->type == static_cast<uint16_t>(wire::MigMsg::kHelloAck))
      << (h.ok() ? wire::MigMsgName(h->type) : h.status().ToString());
  f.clear();
  wire::AppendLocations(&f, {{0, kPages, wire::PageWhere::kAtSource}}, 0, 1);
  wire::AppendSwitchover(&f, {false, 0, 0, 0, /*resume=*/true});
  EXPECT_TRUE(src.Send(f).ok());
  wire::MigSwitchoverAck ack;
  for (;;) {  // PAGE_REQUESTs may come first
    h = src.Receive(&payload, 5000);
    if (!h.ok()) {
      ADD_FAILURE() << "no SWITCHOVER_ACK: " << h.status().ToString();
      break;
    }
    if (h->type != static_cast<uint16_t>(wire::MigMsg::kSwitchoverAck)) continue;
    auto a = wire::DecodeSwitchoverAck(payload);
    EXPECT_TRUE(a.ok()) << a.status().ToString();
    if (a.ok()) ack = *a;
    break;
  }
  src.Shutdown();  // the source goes: a destination waiting for post-copy pages ends
  dst.get();
  *dropped = host.dropped;
  *cont_sent = vm->Sent("cont");
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

TEST(HandBack, ContWithoutAnAnswerMayHaveRunAndIsNotHandedBack) {
  bool dropped = false, cont_sent = false;
  auto ack = SwitchOver(Unavailable("QMP cont: no answer within 10000 ms"), &dropped, &cont_sent);
  EXPECT_TRUE(cont_sent);
  EXPECT_EQ(ack.status, wire::SwitchoverResult::kFailed) << ack.message;
  EXPECT_FALSE(ack.has_token);
  EXPECT_FALSE(dropped) << "a copy that may have run was dropped";
}

TEST(HandBack, ContThatRunsIsAnsweredRunning) {
  bool dropped = false, cont_sent = false;
  auto ack = SwitchOver(Status::Ok(), &dropped, &cont_sent);
  EXPECT_TRUE(cont_sent);
  EXPECT_EQ(ack.status, wire::SwitchoverResult::kRunning) << ack.message;
  EXPECT_FALSE(dropped);
}

}  // namespace
}  // namespace agile::migrate
