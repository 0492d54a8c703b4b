// Offload to the swap store on real VMs: the guest's integrity checker runs
// while most of its memory lives in agile-memd, and survives the store
// restarting underneath it.
#include <gtest/gtest.h>
#include <pwd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "agiled_fixture.h"

namespace agile::testing {
namespace {
using nlohmann::json;

TEST(OffloadTest, VmWithThreeQuartersOffloadedRunsAMinuteIntact) {
  auto m = MemdProcess::Start();
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto a = AgiledProcess::Start("offload", {"--memd", (*m)->addr()});
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto& d = **a;
  ASSERT_TRUE(d.Call("vm.start", VmArgs("mv", 512, "memverify", {{"size_mib", "384"}, {"rate", "300"}})).ok());
  ASSERT_TRUE(WaitFor(90, [&] { return GuestReporting(d, "mv"); }));

  const uint64_t target = 128ull << 20;  // 25% of 512 MiB resident
  auto r = d.Call("vm.offload", {{"name", "mv"}, {"resident_bytes", target}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_GT((*r)["pages_offloaded"].get<uint64_t>(), (256ull << 20) / 4096);
  json s = Stat(d, "mv");
  EXPECT_GE(s["pages"]["offloaded"].get<uint64_t>(), (256ull << 20) / 4096);
  // Measured host memory: the RAM file shrank to about the target.
  EXPECT_LE(s["host"]["ram_file_bytes"].get<uint64_t>(), target + (16ull << 20));

  // A minute at ~25% resident: offload again every 10 s as refaults pull pages back.
  uint64_t refaults_before = s["faults"]["refault"];
  uint64_t gen_before = s["guest"]["gen"];
  for (int i = 0; i < 6; ++i) {
    std::this_thread::sleep_for(std::chrono::seconds(10));
    s = Stat(d, "mv");
    ASSERT_EQ(s["state"], "running");
    ASSERT_EQ(s["guest"]["errors"], 0) << s["guest"].dump();
    ASSERT_EQ(s["guest"]["bad_page_lines"], 0);
    auto again = d.Call("vm.offload", {{"name", "mv"}, {"resident_bytes", target}});
    ASSERT_TRUE(again.ok()) << again.status().ToString();
  }
  s = Stat(d, "mv");
  EXPECT_GT(s["faults"]["refault"].get<uint64_t>(), refaults_before + 1000);
  EXPECT_GT(s["guest"]["gen"].get<uint64_t>(), gen_before);
  EXPECT_EQ(s["guest"]["errors"], 0);
  EXPECT_GT(s["faults"]["refault_p50_us"].get<double>(), 0.0);
}

TEST(OffloadTest, MemdRestartStallsTheVmWhichThenResumesIntact) {
  std::string data = "/tmp/" + UniqueTestName("memd-data");
  std::filesystem::remove_all(data);
  auto m = MemdProcess::Start(data);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto a = AgiledProcess::Start("memdrestart", {"--memd", (*m)->addr()});
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto& d = **a;
  ASSERT_TRUE(d.Call("vm.start", VmArgs("mv", 512, "memverify", {{"size_mib", "256"}, {"rate", "300"}})).ok());
  ASSERT_TRUE(WaitFor(90, [&] { return GuestReporting(d, "mv"); }));

  (*m)->Kill();
  // With the store gone, offload fails cleanly and changes nothing.
  auto fail = d.Call("vm.offload", {{"name", "mv"}, {"resident_bytes", 96ull << 20}});
  EXPECT_FALSE(fail.ok());
  EXPECT_EQ(Stat(d, "mv")["pages"]["offloaded"], 0);
  ASSERT_TRUE((*m)->Restart().ok());
  auto r = d.Call("vm.offload", {{"name", "mv"}, {"resident_bytes", 96ull << 20}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();

  // Kill the store while most of the guest lives there: the vCPU stalls on its
  // next refault (no zero page, no progress), and agiled says so.
  (*m)->Kill();
  ASSERT_TRUE(WaitFor(20, [&] { return Stat(d, "mv")["faults"]["fetch_errors"].get<uint64_t>() > 0; }));
  uint64_t gen_stalled = Stat(d, "mv")["guest"]["gen"];
  std::this_thread::sleep_for(std::chrono::seconds(5));
  json s = Stat(d, "mv");
  EXPECT_EQ(s["guest"]["gen"].get<uint64_t>(), gen_stalled) << "the guest ran on without its pages";
  EXPECT_EQ(s["guest"]["errors"], 0);

  ASSERT_TRUE((*m)->Restart().ok());
  ASSERT_TRUE(WaitFor(30, [&] { return Stat(d, "mv")["guest"]["gen"].get<uint64_t>() > gen_stalled; }))
      << "the guest did not resume after the store came back";
  std::this_thread::sleep_for(std::chrono::seconds(10));
  s = Stat(d, "mv");
  EXPECT_EQ(s["state"], "running");
  EXPECT_EQ(s["guest"]["errors"], 0) << s["guest"].dump();
  EXPECT_EQ(s["guest"]["bad_page_lines"], 0);
  ASSERT_TRUE(d.Call("vm.stop", {{"name", "mv"}}).ok());
  std::filesystem::remove_all(data);
}

TEST(OffloadTest, OffloadWithoutStoreOrWithBadTargetIsRefused) {
  auto a = AgiledProcess::Start("nostore");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto& d = **a;
  ASSERT_TRUE(d.Call("vm.start", VmArgs("v", 256, "none", {})).ok());
  EXPECT_EQ(d.Call("vm.offload", {{"name", "v"}, {"resident_bytes", 1 << 20}}).status().code(), Code::kUnsupported);
  EXPECT_EQ(d.Call("vm.offload", {{"name", "v"}, {"resident_bytes", "lots"}}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(d.Call("vm.offload", {{"name", "v"}, {"resident_bytes", 1ull << 40}}).status().code(),
            Code::kInvalidArgument);
}

}  // namespace
}  // namespace agile::testing

namespace agile::testing {
namespace {

// The uid a process runs as, from /proc/PID/status ("Uid: real effective ...").
long UidOf(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("Uid:", 0) == 0) return std::stol(line.substr(4));
  return -1;
}

// --qemu-runas: QEMU drops to an unprivileged user after start-up (under its
// seccomp sandbox) and the uffd hand-off, fault service, offload and refault
// all keep working - the guest's own checker says so.
TEST(OffloadTest, UnprivilegedQemuServesOffloadsAndRefaultsIntact) {
  struct passwd* nobody = ::getpwnam("nobody");
  ASSERT_NE(nobody, nullptr) << "no user 'nobody' on this machine";
  auto m = MemdProcess::Start();
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto a = AgiledProcess::Start("runas", {"--memd", (*m)->addr(), "--qemu-runas", "nobody"});
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto& d = **a;
  auto st = d.Call("vm.start", VmArgs("rv", 256, "memverify", {{"size_mib", "128"}, {"rate", "500"}}));
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  ASSERT_TRUE(WaitFor(90, [&] { return GuestReporting(d, "rv"); }));
  json s = Stat(d, "rv");
  EXPECT_EQ(UidOf(s["pid"].get<int>()), static_cast<long>(nobody->pw_uid)) << "QEMU still runs as root";
  auto r = d.Call("vm.offload", {{"name", "rv"}, {"resident_bytes", 48ull << 20}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  uint64_t refaults0 = Stat(d, "rv")["faults"]["refault"];
  ASSERT_TRUE(WaitFor(60, [&] { return Stat(d, "rv")["faults"].value("refault", 0ull) > refaults0 + 1000; }))
      << Stat(d, "rv").dump();
  uint64_t gen0 = Stat(d, "rv")["guest"].value("gen", 0ull);
  ASSERT_TRUE(WaitFor(60, [&] { return Stat(d, "rv")["guest"].value("gen", 0ull) > gen0; }));
  s = Stat(d, "rv");
  EXPECT_EQ(s["state"], "running");
  EXPECT_EQ(s["guest"]["errors"], 0) << s["guest"].dump();
  EXPECT_EQ(s["guest"]["bad_page_lines"], 0);
}

}  // namespace
}  // namespace agile::testing
