// A destination whose QEMU dies after SWITCHOVER, before it ever ran the VM,
// hands the VM back (issue 11, soak run 7): real agileds, a real agile-memd,
// real QEMU guests, and the destination's QEMU killed with SIGKILL by this
// test while the destination holds it before `cont` (AGILE_FAULT=
// hold-before-cont opens that window; the kill is the soak's). The source
// must resume by itself with its memory intact, in agile mode only once the
// swap-store namespace is its own again. docs/migration.md ("Failure safety").
#include <gtest/gtest.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <future>

#include "agiled_fixture.h"

namespace agile::testing {
namespace {
using nlohmann::json;

// The last "memverify: sweep=N" on the VM's console (0 before the first).
uint64_t LastSweep(AgiledProcess& d, const std::string& vm) {
  auto r = d.Call("vm.console", {{"name", vm}, {"lines", 400}});
  if (!r.ok()) return 0;
  std::string text = (*r)["text"];
  size_t at = text.rfind("sweep=");
  return at == std::string::npos ? 0 : std::stoull(text.substr(at + 6));
}

class HandBackTest : public ::testing::TestWithParam<std::string> {
 protected:
  // The destination agiled's AGILE_FAULT (docs/timeouts.md).
  virtual const char* DestinationFault() const { return "hold-before-cont"; }
  void SetUp() override {
    auto m = MemdProcess::Start();
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    memd_ = std::move(m).value();
    auto a = AgiledProcess::Start("handback-a", {"--memd", memd_->addr()});
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    a_ = std::move(a).value();
    port_b_ = FreeTcpPort();
    ::setenv("AGILE_FAULT", DestinationFault(), 1);
    auto b = AgiledProcess::Start("handback-b", {"--listen", "127.0.0.1:" + std::to_string(port_b_), "--memd",
                                                 memd_->addr()});
    ::unsetenv("AGILE_FAULT");
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    b_ = std::move(b).value();
  }

  // vm.migrate of `vm` to the destination, in this test's mode.
  json MigrateArgs(const std::string& vm) const {
    return {{"name", vm}, {"to", "127.0.0.1:" + std::to_string(port_b_)}, {"mode", GetParam()}};
  }

  // `vm` runs at the source with its checker reporting; in agile mode with
  // half of it offloaded, so the swap-store namespace (the lease) moves.
  void StartAtSource(const std::string& vm) {
    auto started = a_->Call("vm.start", VmArgs(vm, 256, "memverify", {{"size_mib", "128"}, {"rate", "500"}}));
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    ASSERT_TRUE(WaitFor(90, [&] { return Stat(*a_, vm)["guest"].value("gen", 0) > 0; })) << "workload never reported";
    if (GetParam() == "agile") {
      auto off = a_->Call("vm.offload", {{"name", vm}, {"resident_bytes", 64ull << 20}});
      ASSERT_TRUE(off.ok()) << off.status().ToString();
      ASSERT_GT(Stat(*a_, vm)["pages"].value("offloaded", 0), 0) << "nothing offloaded: no lease to test";
    }
  }

  // The migration `r` failed as "never ran there", and the source runs `vm`
  // again: unfenced, two whole clean sweeps after `sweep0`, and in agile mode
  // the owner of its namespace again (its offloaded pages came back from the
  // store, new ones go in).
  void ExpectTakenBack(const Result<json>& r, const std::string& vm, uint64_t refaults0, uint64_t sweep0) {
    ASSERT_FALSE(r.ok()) << "the migration completed although SWITCHOVER was never taken: " << r->dump();
    std::printf("%s (%s): %s\n", DestinationFault(), GetParam().c_str(), r.status().ToString().c_str());
    EXPECT_NE(r.status().message().find("never ran"), std::string::npos) << r.status().ToString();
    EXPECT_NE(r.status().message().find("runs here again"), std::string::npos) << r.status().ToString();
    json s = Stat(*a_, vm);
    EXPECT_EQ(s["state"], "running") << s.dump();
    EXPECT_FALSE(s.contains("fenced")) << s.dump();
    EXPECT_FALSE(s.contains("migration")) << s.dump();
    ASSERT_TRUE(WaitFor(240, [&] {
      json g = Stat(*a_, vm);
      EXPECT_EQ(g["guest"].value("errors", 0), 0) << g["guest"].dump();
      return LastSweep(*a_, vm) >= sweep0 + 2;
    })) << "no whole memverify sweep after taking the VM back: " << Stat(*a_, vm).dump();
    s = Stat(*a_, vm);
    EXPECT_EQ(s["guest"]["errors"], 0) << s["guest"].dump();
    EXPECT_EQ(s["health"], "ok") << s.dump();
    if (GetParam() == "agile") {
      EXPECT_GT(s["faults"].value("refault", 0ull), refaults0) << "no offloaded page came back from the store";
      auto again = a_->Call("vm.offload", {{"name", vm}, {"resident_bytes", 96ull << 20}});
      EXPECT_TRUE(again.ok()) << "the namespace is not the source's again: " << again.status().ToString();
    }
  }

  std::unique_ptr<MemdProcess> memd_;
  std::unique_ptr<AgiledProcess> a_, b_;
  uint16_t port_b_ = 0;
};

TEST_P(HandBackTest, DestinationQemuKilledBeforeContHandsTheVmBackAndTheSourceResumes) {
  const std::string mode = GetParam();
  const std::string vm = "hb";
  auto started = a_->Call("vm.start", VmArgs(vm, 512, "memverify", {{"size_mib", "256"}, {"rate", "500"}}));
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  ASSERT_TRUE(WaitFor(90, [&] { return Stat(*a_, vm)["guest"].value("gen", 0) > 0; })) << "workload never reported";
  if (mode == "agile") {
    // Cold pages in the store: the namespace (the lease) moves at SWITCHOVER.
    auto off = a_->Call("vm.offload", {{"name", vm}, {"resident_bytes", 128ull << 20}});
    ASSERT_TRUE(off.ok()) << off.status().ToString();
    ASSERT_GT(Stat(*a_, vm)["pages"].value("offloaded", 0), 0) << "nothing offloaded: no lease to test";
  }
  const uint64_t refaults0 = Stat(*a_, vm)["faults"].value("refault", 0ull);

  auto pending = std::async(std::launch::async, [&] {
    return a_->Call("vm.migrate", {{"name", vm}, {"to", "127.0.0.1:" + std::to_string(port_b_)}, {"mode", mode}});
  });
  // The destination got SWITCHOVER (and in agile mode adopted the token) and
  // holds before `cont`: its QEMU dies now, as the soak's SIGKILL did.
  json held;
  ASSERT_TRUE(WaitFor(180, [&] {
    auto s = b_->Call("vm.stat", {{"name", vm}});
    if (!s.ok() || !s->contains("migration")) return false;
    held = *s;
    return (*s)["migration"].value("phase", "") == "held-before-cont";
  })) << "the destination never reached the hold before cont: " << held.dump();
  const pid_t qemu = held["pid"].get<pid_t>();
  ASSERT_GT(qemu, 0) << held.dump();
  ASSERT_EQ(::kill(qemu, SIGKILL), 0);

  auto r = pending.get();
  ASSERT_FALSE(r.ok()) << "the migration completed to a dead QEMU: " << r->dump();
  EXPECT_NE(r.status().message().find("never ran"), std::string::npos) << r.status().ToString();
  EXPECT_NE(r.status().message().find("runs here again"), std::string::npos) << r.status().ToString();
  std::printf("handback(%s): %s\n", mode.c_str(), r.status().ToString().c_str());

  // The source resumed by itself: not fenced, running, its checker clean.
  json s = Stat(*a_, vm);
  EXPECT_EQ(s["state"], "running") << s.dump();
  EXPECT_FALSE(s.contains("fenced")) << s.dump();
  EXPECT_FALSE(s.contains("migration")) << s.dump();
  // Two whole sweeps after the hand-back: every page verified, the offloaded
  // ones refaulted from the store under the token that came back.
  const uint64_t sweep0 = LastSweep(*a_, vm);
  ASSERT_TRUE(WaitFor(240, [&] {
    json g = Stat(*a_, vm);
    EXPECT_EQ(g["state"], "running") << g.dump();
    EXPECT_EQ(g["guest"].value("errors", 0), 0) << g["guest"].dump();
    EXPECT_EQ(g["guest"].value("bad_page_lines", 0), 0) << g["guest"].dump();
    return LastSweep(*a_, vm) >= sweep0 + 2;
  })) << "no whole memverify sweep after the hand-back: " << Stat(*a_, vm).dump();
  s = Stat(*a_, vm);
  EXPECT_EQ(s["guest"]["errors"], 0) << s["guest"].dump();
  EXPECT_EQ(s["faults"].value("fetch_errors", 0), 0) << s["faults"].dump();
  EXPECT_EQ(s["health"], "ok") << s.dump();
  if (mode == "agile") {
    EXPECT_GT(s["faults"].value("refault", 0ull), refaults0) << "no offloaded page came back from the store";
    // The namespace is the source's own again: new pages go in under its token.
    auto again = a_->Call("vm.offload", {{"name", vm}, {"resident_bytes", 160ull << 20}});
    EXPECT_TRUE(again.ok()) << again.status().ToString();
    EXPECT_GT(Stat(*a_, vm)["pages"].value("offloaded", 0), 0);
  }
  // The destination dropped its copy.
  EXPECT_TRUE(WaitFor(30, [&] { return b_->Call("vm.list")->empty(); })) << b_->Call("vm.list")->dump();
}

INSTANTIATE_TEST_SUITE_P(Modes, HandBackTest, ::testing::Values("postcopy", "agile"),
                         [](const auto& info) { return info.param; });

// The link lost as SWITCHOVER arrives (soak seed 7, run 112 of session 12:
// throttled to 64 kbit/s across the commit point): the destination never
// took SWITCHOVER and dropped its copy; the source, past its commit point
// with the VM paused and fenced, heard nothing back. Its RESUME learns that
// the VM never ran there, and it resumes the VM by itself; in agile mode
// (the tail) only once the destination, which never learned the token the
// source transferred the namespace with, has handed it back under it.
class LostSwitchoverTest : public HandBackTest {
 protected:
  const char* DestinationFault() const override { return "lose-switchover"; }
};

TEST_P(LostSwitchoverTest, SourceLearnsByResumeThatTheVmNeverRanThereAndResumesIt) {
  const std::string vm = "ls";
  StartAtSource(vm);
  if (HasFatalFailure()) return;
  const uint64_t refaults0 = Stat(*a_, vm)["faults"].value("refault", 0ull);
  const uint64_t sweep0 = LastSweep(*a_, vm);
  auto r = a_->Call("vm.migrate", MigrateArgs(vm));
  ExpectTakenBack(r, vm, refaults0, sweep0);
  EXPECT_TRUE(WaitFor(30, [&] { return b_->Call("vm.list")->empty(); })) << b_->Call("vm.list")->dump();
}

INSTANTIATE_TEST_SUITE_P(Modes, LostSwitchoverTest, ::testing::Values("postcopy", "agile"),
                         [](const auto& info) { return info.param; });

// The destination agiled dies as SWITCHOVER arrives, before taking it, and
// is started again (soak seed 7, run 182 of session 10): the restart drops
// the arriving copy, which never ran, and must still tell the source so from
// its state dir (STATE_DIR/recovery), or the source stays paused and fenced.
class RestartedDestinationTest : public HandBackTest {
 protected:
  const char* DestinationFault() const override { return "exit-at-switchover"; }
};

TEST_P(RestartedDestinationTest, SourceLearnsFromTheRestartedDestinationThatTheVmNeverRanThere) {
  const std::string vm = "rd";
  StartAtSource(vm);
  if (HasFatalFailure()) return;
  const uint64_t refaults0 = Stat(*a_, vm)["faults"].value("refault", 0ull);
  const uint64_t sweep0 = LastSweep(*a_, vm);
  auto pending = std::async(std::launch::async, [&] {
    return a_->Call("vm.migrate", MigrateArgs(vm));
  });
  ASSERT_TRUE(b_->process().Wait(240000)) << "the destination agiled never reached SWITCHOVER";
  ASSERT_EQ(b_->process().raw_status() >> 8, 86) << "not the fault point's exit";
  // Started again, without the fault: it drops the arriving copy (which
  // never ran) and must remember that it did.
  ASSERT_TRUE(b_->Relaunch().ok());
  ExpectTakenBack(pending.get(), vm, refaults0, sweep0);
  // At most a "lost" entry of the dropped copy is left at the destination.
  auto list = b_->Call("vm.list");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->dump().find("running"), std::string::npos) << list->dump();
}

INSTANTIATE_TEST_SUITE_P(Modes, RestartedDestinationTest, ::testing::Values("postcopy", "agile"),
                         [](const auto& info) { return info.param; });

// A cancel that lands while the source waits for SWITCHOVER_ACK, past its
// commit point, with pages still to follow (soak seed 7, run 104 of session
// 13: it ended the wait and the link, and the destination ran on 36217
// pages that were only at the source). It must not be taken: the migration
// completes and the guest runs whole at the destination.
class LateAckTest : public HandBackTest {
 protected:
  const char* DestinationFault() const override { return "delay-before-cont"; }
};

TEST_P(LateAckTest, ACancelWhileTheSourceWaitsForTheAckIsNotTakenAndTheMigrationCompletes) {
  const std::string vm = "la";
  StartAtSource(vm);
  if (HasFatalFailure()) return;
  auto pending = std::async(std::launch::async, [&] {
    return a_->Call("vm.migrate", MigrateArgs(vm));
  });
  ASSERT_TRUE(WaitFor(180, [&] {
    auto s = b_->Call("vm.stat", {{"name", vm}});
    return s.ok() && s->contains("migration") && (*s)["migration"].value("phase", "") == "delayed-before-cont";
  })) << "the destination never took SWITCHOVER";
  auto cancel = a_->Call("vm.migrate_cancel", {{"name", vm}});
  std::printf("late ack (%s): cancel answered %s\n", GetParam().c_str(),
              cancel.ok() ? cancel->dump().c_str() : cancel.status().ToString().c_str());
  auto r = pending.get();
  ASSERT_TRUE(r.ok()) << "a cancel past the commit point ended the migration: " << r.status().ToString();
  EXPECT_EQ((*r)["status"], "completed") << r->dump();
  json s = Stat(*b_, vm);
  EXPECT_EQ(s["state"], "running") << s.dump();
  const uint64_t sweep0 = LastSweep(*b_, vm);
  ASSERT_TRUE(WaitFor(240, [&] {
    json g = Stat(*b_, vm);
    EXPECT_EQ(g["guest"].value("errors", 0), 0) << g["guest"].dump();
    return LastSweep(*b_, vm) >= sweep0 + 2;
  })) << "no whole memverify sweep at the destination: " << Stat(*b_, vm).dump();
  s = Stat(*b_, vm);
  EXPECT_EQ(s["guest"]["errors"], 0) << s["guest"].dump();
  EXPECT_EQ(s["pages"].value("remote", 1), 0) << s["pages"].dump();
  EXPECT_TRUE(WaitFor(30, [&] { return a_->Call("vm.list")->empty(); })) << a_->Call("vm.list")->dump();
}

// Post-copy only: agile mode here has no tail (nothing follows SWITCHOVER),
// where a cancel in that wait only ends it (docs/migration.md).
INSTANTIATE_TEST_SUITE_P(Modes, LateAckTest, ::testing::Values("postcopy"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace agile::testing
