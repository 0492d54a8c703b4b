// Ordinary VMs booted from a disk (docs/vms.md): the project's Debian image
// (make guest-disk: build/guest/debian.qcow2) boots with SeaBIOS and GRUB,
// gets its workload from SMBIOS type 11 credentials, and runs with guest RAM
// owned by agiled; then it migrates with its disk on storage both agileds
// see while the guest writes and checksums files on that disk.
//
// Each test boots from its own qcow2 overlay over the cached image, so the
// image stays pristine and tests do not share a disk.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "agiled_fixture.h"

namespace agile::testing {
namespace {
using nlohmann::json;
namespace fs = std::filesystem;

// A Debian userland under TCG on a loaded 2-core machine: minutes, not seconds.
constexpr double kBootTimeoutS = 420;

class DiskVmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    image_ = GuestDir() + "/debian.qcow2";
    ASSERT_TRUE(fs::exists(image_)) << image_ << " missing: run `make guest-disk` (guest/disk/build-disk.sh)";
    dir_ = "/tmp/" + UniqueTestName("disk");
    fs::create_directories(dir_);
    auto m = MemdProcess::Start();
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    memd_ = std::move(m).value();
    port_a_ = FreeTcpPort();
    port_b_ = FreeTcpPort();
    auto a = AgiledProcess::Start("disk-a", {"--listen", Addr(port_a_), "--memd", memd_->addr()});
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    a_ = std::move(a).value();
  }
  void TearDown() override {
    a_.reset();
    b_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  void StartB() {
    auto b = AgiledProcess::Start("disk-b", {"--listen", Addr(port_b_), "--memd", memd_->addr()});
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    b_ = std::move(b).value();
  }
  static std::string Addr(uint16_t port) { return "127.0.0.1:" + std::to_string(port); }

  // A copy-on-write overlay of the image for one VM.
  std::string Overlay(const std::string& vm) {
    std::string path = dir_ + "/" + vm + ".qcow2";
    std::string cmd = "qemu-img create -q -f qcow2 -F qcow2 -b '" + image_ + "' '" + path + "'";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    return path;
  }
  json Stat(AgiledProcess& d, const std::string& vm) {
    auto s = d.Call("vm.stat", {{"name", vm}});
    return s.ok() ? *s : json::object();
  }
  std::string Console(AgiledProcess& d, const std::string& vm) {
    auto c = d.Call("vm.console", {{"name", vm}, {"lines", 400}});
    return c.ok() ? (*c).value("text", "") : c.status().ToString();
  }
  // Waits for the guest's status line of `workload` to show progress in `key`.
  void WaitForGuest(AgiledProcess& d, const std::string& vm, const std::string& workload, const std::string& key) {
    ASSERT_TRUE(WaitFor(kBootTimeoutS, [&] {
      json g = Stat(d, vm)["guest"];
      return g.value("workload", "") == workload && g.value(key, 0ull) > 0;
    })) << "the disk guest never reported " << workload << " " << key << "; console:\n" << Console(d, vm);
  }

  std::string image_, dir_;
  std::unique_ptr<MemdProcess> memd_;
  std::unique_ptr<AgiledProcess> a_, b_;
  uint16_t port_a_ = 0, port_b_ = 0;
};

TEST_F(DiskVmTest, DebianImageBootsFromItsDiskAndRunsMemverify) {
  json args = VmArgs("d1", 1024, "memverify", {{"size_mib", "256"}, {"rate", "1000"}});
  args["vcpus"] = 2;
  args["disks"] = json::array({{{"path", Overlay("d1")}, {"format", "qcow2"}}});
  args["nics"] = json::array({{{"kind", "user"}}});
  // TCG: /dev/kvm exists on these machines but boots no guest (docs/vms.md).
  args["accel"] = "tcg";
  // no "boot": a spec with disks boots its first disk
  auto r = a_->Call("vm.start", args);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  WaitForGuest(*a_, "d1", "memverify", "gen");
  std::string console = Console(*a_, "d1");
  // Firmware boot, not our kernel: the disk's runner announced itself.
  EXPECT_NE(console.find("agile-guest: ready workload=memverify boot=disk"), std::string::npos) << console;
  json s = Stat(*a_, "d1");
  EXPECT_EQ(s["guest"]["errors"], 0) << s["guest"].dump();
  EXPECT_EQ(s["guest"]["ok"], true);
  // Guest RAM is still ours: every first touch went through agiled.
  EXPECT_GT(s["pages"].value("resident", 0ull), 256ull * 256) << s.dump();
  EXPECT_EQ(s["spec"]["boot"], "disk");
  ASSERT_TRUE(a_->Call("vm.stop", {{"name", "d1"}}).ok());
}

// Shared storage: both agileds open the same overlay; QEMU's device state
// carries the rest. diskverify rewrites and re-reads (O_DIRECT) files on the
// disk each second with checksums kept in guest memory, and memverify checks
// 256 MiB of guest RAM beside it, across the switchover.
TEST_F(DiskVmTest, DiskVmMigratesInAgileModeWithSharedStorage) {
  StartB();
  json args = VmArgs("d2", 1024, "diskverify",
                     {{"files", "8"}, {"file_kib", "256"}, {"interval_ms", "500"}, {"mem_mib", "256"}});
  args["disks"] = json::array({{{"path", Overlay("d2")}}});
  auto r = a_->Call("vm.start", args);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  WaitForGuest(*a_, "d2", "diskverify", "round");
  ASSERT_TRUE(WaitFor(120, [&] { return Console(*a_, "d2").find("memverify: ok") != std::string::npos; }))
      << Console(*a_, "d2");
  // Some of its memory in the swap store first, so agile's cold path is used
  // (the guest has ~490 MiB resident by now).
  auto off = a_->Call("vm.offload", {{"name", "d2"}, {"resident_bytes", 300ull << 20}});
  ASSERT_TRUE(off.ok()) << off.status().ToString();
  EXPECT_GT(off->value("pages_offloaded", 0ull), 10000u) << off->dump();
  uint64_t round0 = Stat(*a_, "d2")["guest"].value("round", 0ull);

  auto m = a_->Call("vm.migrate", {{"name", "d2"}, {"to", Addr(port_b_)}, {"mode", "agile"}});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_TRUE((*m)["ok"].get<bool>()) << m->dump();
  EXPECT_GT((*m).value("pages-from-store", 0ull), 0u) << m->dump();
  EXPECT_EQ(a_->Call("vm.stat", {{"name", "d2"}}).status().code(), Code::kNotFound);

  // At the destination: both checkers keep going, with no error, for a while.
  ASSERT_TRUE(WaitFor(120, [&] {
    json g = Stat(*b_, "d2")["guest"];
    return g.value("workload", "") == "diskverify" && g.value("round", 0ull) > round0 + 5;
  })) << "diskverify stalled after the migration; console:\n" << Console(*b_, "d2");
  ASSERT_TRUE(WaitFor(60, [&] { return Console(*b_, "d2").find("memverify: ok") != std::string::npos; }))
      << Console(*b_, "d2");
  std::string console = Console(*b_, "d2");
  EXPECT_EQ(console.find("diskverify: BAD"), std::string::npos) << console;
  EXPECT_EQ(console.find("diskverify: FAIL"), std::string::npos) << console;
  EXPECT_EQ(console.find("memverify: FAIL"), std::string::npos) << console;
  EXPECT_EQ(console.find("BAD page="), std::string::npos) << console;
  json s = Stat(*b_, "d2");
  EXPECT_EQ(s["state"], "running");
  EXPECT_EQ(s["guest"]["errors"], 0) << s["guest"].dump();
  ASSERT_TRUE(b_->Call("vm.stop", {{"name", "d2"}}).ok());
}

// --copy-storage: the destination gets its own copy of the disk, mirrored by
// the source's QEMU into the incoming QEMU's NBD export while diskverify keeps
// writing; at the destination every file still reads back (O_DIRECT) with the
// checksum the guest remembers.
TEST_F(DiskVmTest, DiskVmMigratesWithCopyStorage) {
  StartB();
  json args = VmArgs("d3", 1024, "diskverify",
                     {{"files", "8"}, {"file_kib", "256"}, {"interval_ms", "500"}, {"mem_mib", "128"}});
  std::string src_disk = Overlay("d3");
  args["disks"] = json::array({{{"path", src_disk}}});
  auto r = a_->Call("vm.start", args);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  WaitForGuest(*a_, "d3", "diskverify", "round");
  uint64_t round0 = Stat(*a_, "d3")["guest"].value("round", 0ull);

  auto m = a_->Call("vm.migrate", {{"name", "d3"}, {"to", Addr(port_b_)}, {"mode", "agile"}, {"copy_storage", true}});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_TRUE((*m)["ok"].get<bool>()) << m->dump();
  EXPECT_GT((*m).value("disk-transferred", 0ull), 100ull << 20) << "the mirror copied less than the image holds";

  json s = Stat(*b_, "d3");
  std::string dst_disk = s["spec"]["disks"][0].value("path", "");
  EXPECT_EQ(dst_disk.rfind(b_->state_dir() + "/disks/d3/", 0), 0u) << dst_disk;
  EXPECT_NE(dst_disk, src_disk);
  ASSERT_TRUE(WaitFor(120, [&] {
    json g = Stat(*b_, "d3")["guest"];
    return g.value("workload", "") == "diskverify" && g.value("round", 0ull) > round0 + 5;
  })) << "diskverify stalled after the migration; console:\n" << Console(*b_, "d3");
  std::string console = Console(*b_, "d3");
  EXPECT_EQ(console.find("diskverify: BAD"), std::string::npos) << console;
  EXPECT_EQ(console.find("diskverify: FAIL"), std::string::npos) << console;
  EXPECT_EQ(console.find("BAD page="), std::string::npos) << console;
  EXPECT_EQ(Stat(*b_, "d3")["guest"]["errors"], 0);
  ASSERT_TRUE(b_->Call("vm.stop", {{"name", "d3"}}).ok());
}

// A --copy-storage migration cancelled while the disk is being mirrored: the
// source VM runs on with its own disk intact, the destination keeps nothing.
TEST_F(DiskVmTest, CopyStorageCancelledWhileMirroringLeavesTheSourceRunning) {
  StartB();
  json args = VmArgs("d4", 1024, "diskverify", {{"files", "4"}, {"file_kib", "256"}, {"interval_ms", "500"}});
  args["disks"] = json::array({{{"path", Overlay("d4")}}});
  auto r = a_->Call("vm.start", args);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  WaitForGuest(*a_, "d4", "diskverify", "round");

  auto m = a_->Call("vm.migrate", {{"name", "d4"}, {"to", Addr(port_b_)}, {"mode", "agile"}, {"copy_storage", true},
                                   {"detach", true}});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_TRUE(WaitFor(60, [&] {
    auto st = a_->Call("vm.migrate_status", {{"name", "d4"}});
    return st.ok() && st->value("phase", "") == "storage" && st->value("disk-transferred", 0ull) > 0;
  })) << "never saw the disk being mirrored";
  ASSERT_TRUE(a_->Call("vm.migrate_cancel", {{"name", "d4"}}).ok());
  json report;
  ASSERT_TRUE(WaitFor(60, [&] {
    auto st = a_->Call("vm.migrate_status", {{"name", "d4"}});
    if (!st.ok() || st->value("running", true)) return false;
    report = *st;
    return true;
  }));
  EXPECT_EQ(report.value("status", ""), "cancelled") << report.dump();
  // The destination dropped the VM and its copy of the disk.
  EXPECT_TRUE(WaitFor(30, [&] {
    return b_->Call("vm.stat", {{"name", "d4"}}).status().code() == Code::kNotFound &&
           !fs::exists(b_->state_dir() + "/disks/d4");
  })) << "the destination kept the VM or its disk copy";
  // The source goes on writing and verifying its disk.
  uint64_t round0 = Stat(*a_, "d4")["guest"].value("round", 0ull);
  ASSERT_TRUE(WaitFor(60, [&] { return Stat(*a_, "d4")["guest"].value("round", 0ull) > round0 + 3; }))
      << Console(*a_, "d4");
  EXPECT_EQ(Stat(*a_, "d4")["guest"]["errors"], 0);
  EXPECT_EQ(Console(*a_, "d4").find("diskverify: BAD"), std::string::npos);
  ASSERT_TRUE(a_->Call("vm.stop", {{"name", "d4"}}).ok());
}

}  // namespace
}  // namespace agile::testing
