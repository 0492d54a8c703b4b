// agiled restarts without stopping VMs (issue 11 item 1), with the fault
// injected for real: kill -9 of agiled under a memverify VM whose pages are
// two-thirds offloaded to a real agile-memd, then a new agiled on the same
// state dir re-adopts it; a VM whose QEMU died meanwhile is reported lost;
// agiled dying between a QEMU's fork and exec leaves no QEMU; SIGHUP stops
// nothing.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "agiled_fixture.h"
#include "qemu/qmp.h"

namespace agile::testing {
namespace {
using nlohmann::json;
namespace fs = std::filesystem;

bool Alive(int pid) { return pid > 0 && ::kill(pid, 0) == 0; }

// Kills a QEMU the test orphaned if it fails half-way (no agiled to stop it).
struct QemuReaper {
  int pid = 0;
  ~QemuReaper() {
    if (Alive(pid)) ::kill(pid, SIGKILL);
  }
};

TEST(RestartTest, VmTwoThirdsOffloadedKeepsRunningIntactAcrossKillNineOfAgiled) {
  auto m = MemdProcess::Start();
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto a = AgiledProcess::Start("restart", {"--memd", (*m)->addr()});
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto& d = **a;
  ASSERT_TRUE(d.Call("vm.start", VmArgs("mv", 256, "memverify", {{"size_mib", "128"}, {"rate", "300"}})).ok());
  ASSERT_TRUE(WaitFor(90, [&] { return GuestReporting(d, "mv"); }));
  // Let memverify fill its pages once before offloading.
  std::this_thread::sleep_for(std::chrono::seconds(5));
  auto r = d.Call("vm.offload", {{"name", "mv"}, {"resident_bytes", 48ull << 20}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  json before = Stat(d, "mv");
  const uint64_t offloaded = before["pages"]["offloaded"], resident = before["pages"]["resident"];
  ASSERT_GE(offloaded * 3, (offloaded + resident) * 2) << before["pages"].dump();  // >= 2/3 of used pages
  const int pid = before["pid"];
  QemuReaper reaper{pid};
  const uint64_t gen_before = before["guest"]["gen"];
  ASSERT_EQ(before["guest"]["errors"], 0);

  d.Kill();
  // agiled is gone: QEMU keeps running (the shim waits and reconnects),
  // guest RAM stays where it is.
  std::this_thread::sleep_for(std::chrono::seconds(3));
  ASSERT_TRUE(Alive(pid)) << "QEMU died with agiled";
  ASSERT_TRUE(fs::exists(d.shm_dir() + "/mv/ram"));

  Status s = d.Relaunch();
  ASSERT_TRUE(s.ok()) << s.ToString();
  json after = Stat(d, "mv");
  ASSERT_EQ(after["state"], "running") << after.dump();
  EXPECT_EQ(after["pid"], pid);
  // Page states recovered from the RAM file and the location map: the pages
  // still offloaded are the ones that were (less any refaulted meanwhile).
  const uint64_t offloaded_after = after["pages"]["offloaded"];
  EXPECT_LE(offloaded_after, offloaded);
  EXPECT_GE(offloaded_after, offloaded / 2) << after["pages"].dump();
  EXPECT_EQ(after["pages"]["total"].get<uint64_t>(),
            after["pages"]["resident"].get<uint64_t>() + after["pages"]["zero"].get<uint64_t>() + offloaded_after +
                after["pages"]["in_flight"].get<uint64_t>());

  // The guest's own counters advance with errors=0, and pages offloaded
  // before the crash are refaulted (from memd, with the recorded token) after it.
  ASSERT_TRUE(WaitFor(60, [&] {
    json j = Stat(d, "mv");
    return j["faults"]["refault"].get<uint64_t>() > 100 && j["guest"].value("gen", 0ull) > gen_before + 2;
  })) << Stat(d, "mv").dump();
  json later = Stat(d, "mv");
  EXPECT_EQ(later["guest"]["errors"], 0) << later["guest"].dump();
  EXPECT_EQ(later["guest"]["bad_page_lines"], 0);
  EXPECT_EQ(later["faults"]["fetch_errors"], 0);
  // Offloading works again under the new agiled, and the guest stays intact.
  auto again = d.Call("vm.offload", {{"name", "mv"}, {"resident_bytes", 48ull << 20}});
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  std::this_thread::sleep_for(std::chrono::seconds(10));
  json last = Stat(d, "mv");
  EXPECT_EQ(last["state"], "running");
  EXPECT_EQ(last["guest"]["errors"], 0) << last["guest"].dump();
  EXPECT_GT(last["guest"]["gen"].get<uint64_t>(), later["guest"]["gen"].get<uint64_t>());
}

// The swap-store token must be in vm.record before the first page it guards
// leaves the RAM file, or a restart could not read those pages back. A state
// record that cannot be written (the name of its temporary file taken by a
// folder, which open(O_CREAT) cannot replace, root or not) makes an offload
// fail with nothing offloaded, and `vm stat` says why; once it
// can be written again the offload goes on, and after a kill -9 of agiled
// the new one reads those pages back with the recorded token.
TEST(RestartTest, AnOffloadWhoseTokenCannotBeRecordedOffloadsNothingAndSaysSo) {
  auto m = MemdProcess::Start();
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto a = AgiledProcess::Start("record-fail", {"--memd", (*m)->addr()});
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto& d = **a;
  ASSERT_TRUE(d.Call("vm.start", VmArgs("rf", 256, "memverify", {{"size_mib", "128"}, {"rate", "300"}})).ok());
  ASSERT_TRUE(WaitFor(90, [&] { return GuestReporting(d, "rf"); }));
  std::this_thread::sleep_for(std::chrono::seconds(5));
  const int pid = Stat(d, "rf")["pid"];
  QemuReaper reaper{pid};

  const std::string in_the_way = d.state_dir() + "/vms/rf/vm.record.tmp";
  ASSERT_TRUE(fs::create_directory(in_the_way));
  auto r = d.Call("vm.offload", {{"name", "rf"}, {"resident_bytes", 48ull << 20}});
  ASSERT_FALSE(r.ok()) << "offloaded with no token on record: " << r->dump();
  EXPECT_NE(r.status().message().find("not in the state record"), std::string::npos) << r.status().ToString();
  json s = Stat(d, "rf");
  EXPECT_EQ(s["pages"]["offloaded"], 0) << s["pages"].dump();
  EXPECT_EQ(s["state"], "running");
  EXPECT_EQ(s["health"], "degraded") << s.dump();
  EXPECT_NE(s["degraded"].value("reason", "").find("state record not written"), std::string::npos) << s.dump();

  fs::remove(in_the_way);
  r = d.Call("vm.offload", {{"name", "rf"}, {"resident_bytes", 48ull << 20}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  s = Stat(d, "rf");
  EXPECT_EQ(s["health"], "ok") << s.dump();
  const uint64_t offloaded = s["pages"]["offloaded"];
  ASSERT_GT(offloaded, 0u) << s["pages"].dump();
  const uint64_t gen_before = s["guest"]["gen"];

  d.Kill();
  ASSERT_TRUE(d.Relaunch().ok());
  ASSERT_EQ(Stat(d, "rf")["state"], "running");
  ASSERT_TRUE(WaitFor(90, [&] {
    json j = Stat(d, "rf");
    return j["faults"]["refault"].get<uint64_t>() > 50 && j["guest"].value("gen", 0ull) > gen_before + 2;
  })) << Stat(d, "rf").dump();
  s = Stat(d, "rf");
  EXPECT_EQ(s["guest"]["errors"], 0) << s["guest"].dump();
  EXPECT_EQ(s["faults"]["fetch_errors"], 0) << s["faults"].dump();
}

TEST(RestartTest, AVmWhoseQemuDiedMeanwhileIsReportedLostAndCleanedUp) {
  auto m = MemdProcess::Start();
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto a = AgiledProcess::Start("restartlost", {"--memd", (*m)->addr()});
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto& d = **a;
  ASSERT_TRUE(d.Call("vm.start", VmArgs("gone", 128, "memverify", {{"size_mib", "32"}, {"rate", "100"}})).ok());
  ASSERT_TRUE(WaitFor(90, [&] { return GuestReporting(d, "gone"); }));
  ASSERT_TRUE(d.Call("vm.offload", {{"name", "gone"}, {"resident_bytes", 24ull << 20}}).ok());
  const int pid = Stat(d, "gone")["pid"];
  QemuReaper reaper{pid};

  d.Kill();
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  ASSERT_TRUE(WaitFor(10, [&] { return !Alive(pid); }));
  ASSERT_TRUE(d.Relaunch().ok());
  json j = Stat(d, "gone");
  EXPECT_EQ(j["state"], "lost");
  EXPECT_NE(j.value("exit", "").find("ended while agiled was down"), std::string::npos) << j.dump();
  EXPECT_FALSE(fs::exists(d.shm_dir() + "/gone")) << "RAM file of a lost VM left behind";
  auto list = d.Call("vm.list");
  ASSERT_TRUE(list.ok());
  EXPECT_NE(list->dump().find("lost"), std::string::npos) << list->dump();
  // The operator acknowledges it; then it is gone for good, also after another restart.
  ASSERT_TRUE(d.Call("vm.stop", {{"name", "gone"}}).ok());
  EXPECT_FALSE(d.Call("vm.stat", {{"name", "gone"}}).ok());
  d.Kill();
  ASSERT_TRUE(d.Relaunch().ok());
  EXPECT_FALSE(d.Call("vm.stat", {{"name", "gone"}}).ok());
}

// Session 9's soak: agiled killed right after it started a QEMU, before its
// record, left a QEMU no restart knew of (an incoming one sat in `inmigrate`
// for good). The record is written while the forked child waits to exec;
// dying there, agiled leaves no QEMU, and its restart reports the VM.
TEST(RestartTest, AgiledDyingBetweenQemusForkAndExecLeavesNoQemuAndItsRestartSaysSo) {
  ::setenv("AGILE_FAULT", "exit-in-exec-gate", 1);
  auto a = AgiledProcess::Start("restartgate");
  ::unsetenv("AGILE_FAULT");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto& d = **a;
  // Stock: no shim, which would end a QEMU whose agiled is gone (the leak
  // seen was an incoming stock QEMU's).
  json args = VmArgs("gated", 128, "memverify", {{"size_mib", "32"}});
  args["stock"] = true;
  EXPECT_FALSE(d.Call("vm.start", args).ok());
  ASSERT_TRUE(d.process().Wait(10000)) << "agiled did not exit at the fault point";
  EXPECT_EQ(d.process().ExitDescription(), "exited with code 86");
  // No QEMU of this agiled's comes to life (each names its QMP socket under the state dir).
  auto qemus = [&] {
    int n = 0;
    const std::string needle = d.state_dir() + "/vms/gated/";
    std::error_code ec;
    for (const auto& e : fs::directory_iterator("/proc", ec)) {
      std::ifstream f(e.path() / "cmdline");
      std::string cmd((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      if (cmd.find("qemu") != std::string::npos && cmd.find(needle) != std::string::npos) ++n;
    }
    return n;
  };
  std::this_thread::sleep_for(std::chrono::seconds(2));
  EXPECT_EQ(qemus(), 0) << "a QEMU ran after its agiled died at the gate";
  ASSERT_TRUE(d.Relaunch().ok());
  json j = Stat(d, "gated");
  EXPECT_EQ(j["state"], "lost") << j.dump();
  EXPECT_NE(j.value("exit", "").find("ended while agiled was down"), std::string::npos) << j.dump();
  ASSERT_TRUE(d.Call("vm.stop", {{"name", "gated"}}).ok());
  EXPECT_FALSE(d.Call("vm.stat", {{"name", "gated"}}).ok());
}

// QEMU's own main loop waits on an offloaded page (a monitor command reads
// guest RAM) while agiled is down and memd is down too: the restarted agiled
// gets no QMP answer until memd is back. It must adopt the VM all the same
// (its faults are served, and wait for memd) and connect QMP later, never kill
// QEMU for its silence, which lost the VM (the same hazard as a restarted
// post-copy destination: RestartMigrationTest/destination_main_loop_waits).
TEST(RestartTest, QemuWaitingOnAnOffloadedPageWhileMemdIsDownIsAdoptedNotKilled) {
  std::string data = "/tmp/" + UniqueTestName("restart-memd-down");
  fs::remove_all(data);
  auto m = MemdProcess::Start(data);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto a = AgiledProcess::Start("restartmemddown", {"--memd", (*m)->addr()});
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto& d = **a;
  ASSERT_TRUE(d.Call("vm.start", VmArgs("mw", 256, "memverify", {{"size_mib", "128"}, {"rate", "300"}})).ok());
  ASSERT_TRUE(WaitFor(90, [&] { return GuestReporting(d, "mw"); }));
  std::this_thread::sleep_for(std::chrono::seconds(3));  // memverify has filled its pages
  auto r = d.Call("vm.offload", {{"name", "mw"}, {"resident_bytes", 48ull << 20}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const int pid = Stat(d, "mw")["pid"];
  QemuReaper reaper{pid};
  const uint64_t gen_before = Stat(d, "mw")["guest"]["gen"];

  d.Kill();
  (*m)->Kill();
  // The read blocks on the first page nobody serves now (agiled is dead);
  // often the guest got there first and the main loop waits already.
  if (auto qmp = qemu::QmpClient::Connect(d.state_dir() + "/vms/mw/qmp.sock", 5000); qmp.ok()) {
    auto read = qmp->Execute("pmemsave", {{"val", 0}, {"size", 256ull << 20}, {"filename", "/dev/null"}}, 1000);
    ASSERT_FALSE(read.ok()) << "QEMU read all guest RAM with agiled down: " << read->dump();
  }  // closed here: QEMU takes the next client once the read is done

  ASSERT_TRUE(d.Relaunch().ok());
  json j = Stat(d, "mw");
  ASSERT_EQ(j["state"], "running") << j.dump();
  EXPECT_EQ(j["pid"], pid);
  EXPECT_TRUE(Alive(pid));
  std::this_thread::sleep_for(std::chrono::seconds(3));
  EXPECT_TRUE(Alive(pid)) << "QEMU killed while its main loop waited for memd";
  auto silent = d.Call("vm.pause", {{"name", "mw"}});
  ASSERT_FALSE(silent.ok()) << "QMP answered with memd down: the main loop did not wait, this case tests nothing";
  EXPECT_NE(silent.status().message().find("does not answer yet"), std::string::npos) << silent.status().ToString();

  // memd back: the waiting read gets its pages, QMP answers, the guest goes on intact.
  ASSERT_TRUE((*m)->Restart().ok());
  ASSERT_TRUE(WaitFor(120, [&] { return d.Call("vm.pause", {{"name", "mw"}}).ok(); })) << Stat(d, "mw").dump();
  ASSERT_TRUE(d.Call("vm.resume", {{"name", "mw"}}).ok());
  ASSERT_TRUE(WaitFor(120, [&] { return Stat(d, "mw")["guest"].value("gen", 0ull) > gen_before + 2; }))
      << Stat(d, "mw").dump();
  json later = Stat(d, "mw");
  EXPECT_EQ(later["state"], "running");
  EXPECT_EQ(later["guest"]["errors"], 0) << later["guest"].dump();
  EXPECT_EQ(later["guest"]["bad_page_lines"], 0);
  EXPECT_TRUE(d.Call("vm.stop", {{"name", "mw"}}).ok());  // releases its pages while memd's data dir exists
  fs::remove_all(data);
}

TEST(RestartTest, SighupStopsNoVm) {
  auto a = AgiledProcess::Start("sighup");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto& d = **a;
  ASSERT_TRUE(d.Call("vm.start", VmArgs("hup", 128, "memverify", {{"size_mib", "32"}, {"rate", "100"}})).ok());
  ASSERT_TRUE(WaitFor(90, [&] { return GuestReporting(d, "hup"); }));
  const uint64_t gen = Stat(d, "hup")["guest"]["gen"];
  ASSERT_TRUE(d.process().Signal(SIGHUP).ok());
  std::this_thread::sleep_for(std::chrono::seconds(3));
  ASSERT_FALSE(d.process().Poll()) << "agiled exited on SIGHUP: " << d.process().ExitDescription();
  json j = Stat(d, "hup");
  EXPECT_EQ(j["state"], "running");
  EXPECT_TRUE(WaitFor(30, [&] { return Stat(d, "hup")["guest"].value("gen", 0ull) > gen; }));
}

}  // namespace
}  // namespace agile::testing
