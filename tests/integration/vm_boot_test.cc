// Boots real VMs under a real agiled: every first touch of guest RAM is served
// by agiled, and the guest's own integrity checker confirms its memory.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "agiled_fixture.h"
#include "base/process.h"

namespace agile::testing {
namespace {
using nlohmann::json;

TEST(VmBootTest, MemverifyRunsThirtySecondsAndEveryTouchIsAFault) {
  auto a = AgiledProcess::Start("boot");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto& d = **a;
  auto st = d.Call("vm.start", VmArgs("mv", 512, "memverify", {{"size_mib", "256"}, {"rate", "500"}}));
  ASSERT_TRUE(st.ok()) << st.status().ToString();

  // Wait for the workload's first status line, then watch it for >= 30 s.
  ASSERT_TRUE(WaitFor(90, [&] {
    auto s = d.Call("vm.stat", {{"name", "mv"}});
    return s.ok() && (*s)["guest"].contains("errors");
  })) << "memverify never reported";
  auto t0 = std::chrono::steady_clock::now();
  json s;
  uint64_t first_gen = 0;
  while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(32)) {
    auto r = d.Call("vm.stat", {{"name", "mv"}});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    s = *r;
    ASSERT_EQ(s["state"], "running");
    ASSERT_EQ(s["guest"]["errors"], 0) << s["guest"].dump();
    ASSERT_EQ(s["guest"]["bad_page_lines"], 0);
    if (first_gen == 0) first_gen = s["guest"]["gen"];
    std::this_thread::sleep_for(std::chrono::seconds(2));
  }
  EXPECT_GT(s["guest"]["gen"].get<uint64_t>(), first_gen) << "the workload stopped making progress";

  // Fault accounting: every resident page was a served first touch, the guest's
  // 256 MiB are among them, and the RAM file really holds that much.
  uint64_t resident = s["pages"]["resident"], first = s["faults"]["first_touch"];
  EXPECT_EQ(first, resident);
  EXPECT_GE(first, (256ull << 20) / 4096);
  EXPECT_EQ(s["pages"]["resident"].get<uint64_t>() + s["pages"]["zero"].get<uint64_t>(), (512ull << 20) / 4096);
  EXPECT_EQ(s["host"]["ram_file_bytes"].get<uint64_t>(), resident * 4096);

  ASSERT_TRUE(d.Call("vm.stop", {{"name", "mv"}}).ok());
  EXPECT_FALSE(std::filesystem::exists(d.shm_dir() + "/mv"));
}

TEST(VmBootTest, IntegrityCheckerCatchesACorruptPage) {
  // Proves the check above can fail: the guest corrupts one page on purpose.
  auto a = AgiledProcess::Start("selftest");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto& d = **a;
  ASSERT_TRUE(d.Call("vm.start", VmArgs("bad", 256, "memverify", {{"size_mib", "64"}, {"selftest_corrupt", "1"}})).ok());
  EXPECT_TRUE(WaitFor(90, [&] {
    auto s = d.Call("vm.stat", {{"name", "bad"}});
    return s.ok() && (*s)["guest"].value("errors", 0) > 0 && (*s)["guest"]["ok"] == false;
  }));
}

// For both kinds of VM: a stock VM (RAM not ours, no fault server) once
// crashed agiled itself when its QEMU died (found by the soak).
class CrashedQemu : public ::testing::TestWithParam<bool> {};

TEST_P(CrashedQemu, IsNoticedAndAgiledCarriesOn) {
  auto a = AgiledProcess::Start("crash");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto& d = **a;
  nlohmann::json args = VmArgs("c", 256, "none", {});
  if (GetParam()) args["stock"] = true;
  auto st = d.Call("vm.start", args);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  ::kill((*st)["pid"].get<int>(), SIGKILL);
  EXPECT_TRUE(WaitFor(10, [&] {
    auto s = d.Call("vm.stat", {{"name", "c"}});
    return s.ok() && (*s)["state"] == "crashed";
  }));
  auto s = d.Call("vm.stat", {{"name", "c"}});
  EXPECT_NE((*s)["exit"].get<std::string>().find("signal"), std::string::npos);
  EXPECT_TRUE(d.process().running()) << "agiled died with its VM";
  EXPECT_TRUE(d.Call("host.info").ok());
  EXPECT_TRUE(d.Call("vm.stop", {{"name", "c"}}).ok());
}

INSTANTIATE_TEST_SUITE_P(Kinds, CrashedQemu, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Stock" : "Managed"; });

TEST(VmBootTest, BadRequestsChangeNothing) {
  auto a = AgiledProcess::Start("bad");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto& d = **a;
  EXPECT_EQ(d.Call("vm.start", VmArgs("x", 256, "memverify", {{"size_mib", "4096"}})).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(d.Call("vm.start", VmArgs("x y", 256, "none", {})).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(d.Call("vm.stat", {{"name", "ghost"}}).status().code(), Code::kNotFound);
  EXPECT_EQ(d.Call("vm.frobnicate", {}).status().code(), Code::kInvalidArgument);
  auto l = d.Call("vm.list");
  ASSERT_TRUE(l.ok());
  EXPECT_TRUE(l->empty());
  ASSERT_TRUE(d.Call("vm.start", VmArgs("dup", 256, "none", {})).ok());
  EXPECT_EQ(d.Call("vm.start", VmArgs("dup", 256, "none", {})).status().code(), Code::kAlreadyExists);
  EXPECT_EQ(d.Call("vm.list")->size(), 1u);
}

TEST(VmBootTest, StockQemuWithoutReachableAgiledRefusesToRun) {
  std::string dir = "/dev/shm/" + UniqueTestName("noagiled");
  std::filesystem::create_directories(dir);
  std::string ram = dir + "/ram";
  ASSERT_EQ(::truncate(ram.c_str(), 0) == 0 || true, true);
  FILE* f = std::fopen(ram.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fclose(f);
  ASSERT_EQ(::truncate(ram.c_str(), 256 << 20), 0);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  SpawnOptions o;
  o.argv = {"/usr/bin/qemu-system-x86_64", "-machine", "q35,memory-backend=ram0", "-accel", "tcg", "-m", "256M",
            "-object", "memory-backend-file,id=ram0,size=256M,mem-path=" + ram + ",share=on",
            "-kernel", GuestDir() + "/vmlinuz", "-initrd", GuestDir() + "/initrd.img",
            "-nodefaults", "-display", "none"};
  o.env = {"LD_PRELOAD=" + ShimPath(), "AGILE_RAM_PATH=" + ram, "AGILE_SHIM_SOCK=" + dir + "/no-agiled.sock"};
  o.stderr_fd = p[1];
  auto q = Spawn(o);
  ::close(p[1]);
  ASSERT_TRUE(q.ok());
  ASSERT_TRUE(q->Wait(20000)) << "QEMU kept running without agiled";
  EXPECT_EQ(q->ExitDescription(), "exited with code 78");
  char buf[1024] = {};
  (void)!::read(p[0], buf, sizeof(buf) - 1);
  ::close(p[0]);
  EXPECT_NE(std::string(buf).find("never runs unmanaged"), std::string::npos) << buf;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace agile::testing
