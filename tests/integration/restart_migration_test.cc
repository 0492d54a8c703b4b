// An agiled restarted (kill -9, then started again on the same state dir) in
// the middle of a post-copy migration, after its commit point, while the
// guest still faults pages from the source: the migration must go on where
// it stopped, not strand or lose the VM (issue 11 items 1 and 4;
// docs/invariants.md, "A migration in flight when agiled dies"). The fault is
// injected for real: SIGKILL of the source agiled, the destination agiled,
// or both, under real QEMU guests, then a new agiled on the same state dir.
// The migration completes, the source frees the VM, and the guest's
// memverify sweeps all its memory with errors=0.
//
// "destination-main-loop-waits": while the destination agiled is down, QEMU's
// own main loop is made to read every guest page (QMP pmemsave), so it waits
// on a page still at the source. The restarted agiled cannot have QEMU's QMP
// answer until the source resumes the post-copy, which it can do only once
// that agiled serves: adoption must not wait for QMP (nor kill QEMU for its
// silence, which lost the VM: the CI run of stop 18).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <future>
#include <thread>

#include "agiled_fixture.h"
#include "qemu/qmp.h"

namespace agile::testing {
namespace {
using nlohmann::json;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

uint64_t LastSweep(AgiledProcess& d, const std::string& vm) {
  auto r = d.Call("vm.console", {{"name", vm}, {"lines", 400}});
  if (!r.ok()) return 0;
  std::string text = (*r)["text"];
  text.erase(text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n'));  // not a line still being written
  size_t at = text.rfind("sweep=");
  return at == std::string::npos ? 0 : std::stoull(text.substr(at + 6));
}

json MigrationStatus(AgiledProcess& d, const std::string& vm) {
  auto r = d.Call("vm.migrate_status", {{"name", vm}});
  return r.ok() ? *r : json{{"error", r.status().ToString()}};
}

class RestartMigrationTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto m = MemdProcess::Start();
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    memd_ = std::move(m).value();
    const std::vector<std::string> t = {"--memd", memd_->addr(), "--migrate-io-timeout-ms", "3000",
                                        "--migrate-peer-timeout-ms", "6000", "--keepalive-idle-s", "1"};
    auto a = AgiledProcess::Start("restartmig-a", t);
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    a_ = std::move(a).value();
    port_b_ = FreeTcpPort();
    std::vector<std::string> bt = {"--listen", "127.0.0.1:" + std::to_string(port_b_)};
    bt.insert(bt.end(), t.begin(), t.end());
    auto b = AgiledProcess::Start("restartmig-b", bt);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    b_ = std::move(b).value();
  }

  // The `vm.migrate` call; declared first so it is destroyed last: after a
  // failed assertion the daemons' teardown ends it, not a 600 s ctest timeout.
  std::future<Result<json>> pending_;
  std::unique_ptr<MemdProcess> memd_;
  std::unique_ptr<AgiledProcess> a_, b_;
  uint16_t port_b_ = 0;
};

TEST_P(RestartMigrationTest, KillNineAfterSwitchoverThenRestartCompletesTheMigrationWithNothingLost) {
  // "[agile-]source|destination|both": post-copy mode, or agile's tail.
  const std::string param = GetParam();
  const bool agile = param.rfind("agile-", 0) == 0;
  const bool main_loop_waits = param == "destination-main-loop-waits";
  const std::string side = agile ? param.substr(6) : main_loop_waits ? "destination" : param;
  const bool kill_src = side != "destination", kill_dst = side != "source";
  const std::string vm = "rm";
  json args = {{"name", vm}, {"to", "127.0.0.1:" + std::to_string(port_b_)}, {"mode", agile ? "agile" : "postcopy"},
               {"bandwidth", (agile ? 8ull : 24ull) << 20}};
  if (!agile) {
    // 256 MiB at 24 MB/s: the push takes ~12 s; the kill comes early in it.
    auto r = a_->Call("vm.start", VmArgs(vm, 512, "memverify", {{"size_mib", "256"}, {"rate", "500"}}));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  } else {
    // The guest rewrites ~8000 pages/s of 32K while the link moves ~2000:
    // pre-copy cannot converge and agile post-copies the dirty remainder
    // from the source; cold pages stay in the swap store.
    auto r = a_->Call("vm.start", VmArgs(vm, 512, "memverify", {{"size_mib", "128"}, {"rate", "8000"}}));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    args["max_downtime_ms"] = 100;
  }
  // Generous: this 2-core machine is shared with other builds and guests.
  ASSERT_TRUE(WaitFor(240, [&] { return Stat(*a_, vm)["guest"].value("gen", 0) > 0; })) << "workload never reported";
  if (agile) {
    ASSERT_TRUE(a_->Call("vm.offload", {{"name", vm}, {"resident_bytes", 200ull << 20}}).ok());
    ASSERT_GT(Stat(*a_, vm)["pages"].value("offloaded", 0), 0);
  }
  pending_ = std::async(std::launch::async, [this, args] { return a_->Call("vm.migrate", args); });
  ASSERT_TRUE(WaitFor(180, [&] {
    json s = Stat(*a_, vm);
    return s.contains("migration") && s["migration"].value("status", "") == "postcopy-active" &&
           s["migration"].value("pages_postcopied", 0) > 500;
  })) << "never got into post-copy with pages flowing: " << Stat(*a_, vm).dump();
  const int dst_pid = Stat(*b_, vm)["pid"];
  const uint64_t remote_before = Stat(*b_, vm)["pages"]["remote"];
  ASSERT_GT(remote_before, 0u);

  if (kill_src) a_->Kill();
  if (kill_dst) b_->Kill();
  const auto killed = Clock::now();
  if (kill_src) {
    auto lost = pending_.get();  // the caller's connection died with agiled
    EXPECT_FALSE(lost.ok());
  }
  // Both QEMUs outlive their agileds; the guest's RAM stays where it is.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  EXPECT_TRUE(fs::exists(a_->shm_dir() + "/" + vm + "/ram")) << "the source's guest RAM is gone";
  EXPECT_TRUE(fs::exists(b_->shm_dir() + "/" + vm + "/ram")) << "the destination's guest RAM is gone";
  if (!kill_src) {
    // The source lost its link and waits for the destination to come back.
    ASSERT_TRUE(WaitFor(30, [&] { return MigrationStatus(*a_, vm).value("status", "") == "postcopy-paused"; }))
        << MigrationStatus(*a_, vm).dump();
  }
  if (main_loop_waits) {
    // agiled's QMP connection died with it; QEMU takes the next client. The
    // read blocks on the first page the dead agiled cannot serve; the
    // connection closes at once, so the new agiled can have QMP afterwards.
    // Often the guest got there first (QEMU's main loop already waits on a
    // page: no greeting); that is the state this case wants either way.
    auto qmp = qemu::QmpClient::Connect(b_->state_dir() + "/vms/" + vm + "/qmp.sock", 5000);
    if (qmp.ok()) {
      auto read = qmp->Execute("pmemsave", {{"val", 0}, {"size", 512ull << 20}, {"filename", "/dev/null"}}, 1000);
      ASSERT_FALSE(read.ok()) << "QEMU read all guest RAM with pages still at the source: " << read->dump();
    } else {
      ASSERT_NE(qmp.status().message().find("no answer"), std::string::npos) << qmp.status().ToString();
      std::printf("restartmig: QEMU's main loop waits already (%s)\n", qmp.status().ToString().c_str());
    }
  }
  if (kill_dst) {
    Status s = b_->Relaunch();
    ASSERT_TRUE(s.ok()) << s.ToString();
    // Re-adopted running, the same QEMU, with the pages still at the source
    // remote (a hole there is not a zero page), waiting for the source.
    json d = Stat(*b_, vm);
    EXPECT_EQ(d["state"], "running") << d.dump();
    EXPECT_EQ(d["pid"], dst_pid);
    EXPECT_GT(d["pages"]["remote"].get<uint64_t>(), 0u) << d["pages"].dump();
    EXPECT_LE(d["pages"]["remote"].get<uint64_t>(), remote_before) << d["pages"].dump();
  }
  if (kill_src) {
    Status s = a_->Relaunch();
    ASSERT_TRUE(s.ok()) << s.ToString();
    // Re-adopted paused and fenced with every page; it re-dials on its own.
    json src = Stat(*a_, vm);
    EXPECT_TRUE(src.contains("fenced")) << src.dump();
    EXPECT_NE(src.value("state", ""), "running") << src.dump();
  }
  std::printf("restartmig(%s): agiled(s) back %.1f s after the kill\n", side.c_str(),
              std::chrono::duration<double>(Clock::now() - killed).count());

  // The migration completes: the source frees the VM (the job, re-made by
  // a restarted source, reports it).
  ASSERT_TRUE(WaitFor(240, [&] { return a_->Call("vm.stat", {{"name", vm}}).status().code() == Code::kNotFound; }))
      << "source: " << Stat(*a_, vm).dump() << "\ndestination: " << Stat(*b_, vm).dump();
  json report = MigrationStatus(*a_, vm);
  std::printf("restartmig(%s): %s\n", side.c_str(), report.dump().c_str());
  EXPECT_EQ(report.value("status", ""), "completed") << report.dump();
  EXPECT_GE(report.value("recoveries", 0), 1);
  if (agile && !kill_src) {
    EXPECT_GT(report.value("pages_from_store", 0), 0) << "no cold pages in the store";
  }
  if (!kill_src) {
    auto done = pending_.get();
    EXPECT_TRUE(done.ok()) << done.status().ToString();
  }
  EXPECT_FALSE(fs::exists(a_->shm_dir() + "/" + vm)) << "guest RAM left at the source";
  EXPECT_TRUE(WaitFor(30, [&] { return !Stat(*b_, vm).contains("migration"); })) << Stat(*b_, vm).dump();
  EXPECT_EQ(Stat(*b_, vm)["pages"]["remote"], 0);
  EXPECT_FALSE(fs::exists(b_->state_dir() + "/vms/" + vm + "/migration.record"));
  // A whole sweep after the last page arrived: every page verified.
  const uint64_t sweep0 = LastSweep(*b_, vm);
  ASSERT_TRUE(WaitFor(240, [&] {
    json s = Stat(*b_, vm);
    EXPECT_EQ(s["guest"].value("errors", 0), 0) << s["guest"].dump();
    EXPECT_EQ(s["guest"].value("bad_page_lines", 0), 0) << s["guest"].dump();
    return LastSweep(*b_, vm) >= sweep0 + 2;
  })) << "no whole memverify sweep after the migration";
  json s = Stat(*b_, vm);
  EXPECT_EQ(s["state"], "running");
  EXPECT_EQ(s["guest"]["errors"], 0) << s["guest"].dump();
  // And the arrived VM is an ordinary one now: another restart adopts it.
  b_->Kill();
  ASSERT_TRUE(b_->Relaunch().ok());
  EXPECT_EQ(Stat(*b_, vm)["state"], "running");
}

INSTANTIATE_TEST_SUITE_P(Sides, RestartMigrationTest,
                         ::testing::Values("source", "destination", "both", "agile-source", "agile-destination",
                                           "destination-main-loop-waits"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) if (c == '-') c = '_';
                           return n;
                         });

}  // namespace
}  // namespace agile::testing
