#include "qemu/launch.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace agile::qemu {
namespace {

VmSpec Good() {
  VmSpec s;
  s.name = "vm1";
  s.memory_bytes = 512ull << 20;
  s.workload = "memverify";
  s.workload_args = {{"size_mib", "256"}, {"rate", "500"}};
  return s;
}

TEST(LaunchTest, CmdlineCarriesPrefixedWorkloadKeys) {
  EXPECT_EQ(GuestCmdline(Good()),
            "console=ttyS0 quiet panic=-1 agile.workload=memverify memverify.rate=500 memverify.size_mib=256");
}

TEST(LaunchTest, ArgvSharesRamFileAndMatchesSizes) {
  LaunchPaths p{"/usr/bin/qemu-system-x86_64", "/k", "/i", "/dev/shm/agile/x/vm1/ram", "/s/qmp", "/s/serial"};
  auto a = QemuArgv(Good(), p, true);
  auto has = [&](const std::string& s) { return std::find(a.begin(), a.end(), s) != a.end(); };
  EXPECT_TRUE(has("memory-backend-file,id=ram0,size=512M,mem-path=/dev/shm/agile/x/vm1/ram,share=on"));
  EXPECT_TRUE(has("512M"));
  EXPECT_TRUE(has("defer"));
  EXPECT_TRUE(has("on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"));
  EXPECT_FALSE(has("-runas"));
  // -runas: QEMU must be allowed its own setuid under the filter (deny and
  // children both kill QEMU 7.2 with SIGSYS).
  p.run_as = "agile-qemu";
  a = QemuArgv(Good(), p, false);
  EXPECT_TRUE(has("on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny"));
  EXPECT_TRUE(has("agile-qemu"));
  p.sandbox = false;
  a = QemuArgv(Good(), p, false);
  EXPECT_FALSE(has("-sandbox"));
}

TEST(LaunchTest, ValidationNamesTheProblem) {
  auto s = Good();
  s.name = "bad name";
  EXPECT_FALSE(s.Validate().ok());
  s = Good();
  s.workload_args["bogus"] = "1";
  EXPECT_NE(s.Validate().message().find("bogus"), std::string::npos);
  s = Good();
  s.workload_args["size_mib"] = "500";
  EXPECT_NE(s.Validate().message().find("does not fit"), std::string::npos);
  s = Good();
  s.workload = "doom";
  EXPECT_FALSE(s.Validate().ok());
  s = Good();
  s.workload_args["rate"] = "1;rm";
  EXPECT_FALSE(s.Validate().ok());
  s = Good();
  s.memory_bytes = 1000;
  EXPECT_FALSE(s.Validate().ok());
  s = Good();
  s.memory_bytes = (MaxVmMemory() + (4ull << 20)) & ~((2ull << 20) - 1);
  EXPECT_NE(s.Validate().message().find("exceeds this host's RAM"), std::string::npos);
  s.memory_bytes = 1ull << 62;
  EXPECT_FALSE(s.Validate().ok());
}

TEST(LaunchTest, SpecJsonNumbersMustBeIntegers) {
  // fuzz/corpus/control_request/regress-float-memory-bytes: a float converted
  // to uint64_t was undefined behaviour.
  auto j = Good().ToJson();
  j["memory_bytes"] = 5.36e79;
  EXPECT_FALSE(VmSpec::FromJson(j).ok());
  j["memory_bytes"] = 536870912.5;
  EXPECT_FALSE(VmSpec::FromJson(j).ok());
  j = Good().ToJson();
  j["vcpus"] = 1e30;
  EXPECT_FALSE(VmSpec::FromJson(j).ok());
  j["vcpus"] = 2;
  EXPECT_TRUE(VmSpec::FromJson(j).ok());
}

TEST(LaunchTest, SpecJsonRoundTrip) {
  auto back = VmSpec::FromJson(Good().ToJson());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->workload_args.at("size_mib"), "256");
  EXPECT_FALSE(VmSpec::FromJson({{"name", "x"}}).ok());
}

// A VM libvirt started (docs/libvirt.md) stays one across agiled's record and
// restart; it cannot also be stock (agiled owns its RAM).
TEST(LaunchTest, LibvirtFlagRoundTripsAndExcludesStock) {
  VmSpec s = Good();
  EXPECT_FALSE(VmSpec::FromJson(s.ToJson())->libvirt);
  s.libvirt = true;
  auto back = VmSpec::FromJson(s.ToJson());
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->libvirt);
  s.stock = true;
  EXPECT_FALSE(s.Validate().ok());
}

TEST(LaunchTest, KernelBootIsTheDefaultAndCarriesNoDisk) {
  LaunchPaths p{"/q", "/k", "/i", "/r", "/s/qmp", "/s/serial"};
  auto a = QemuArgv(Good(), p, false);
  auto has = [&](const std::string& s) { return std::find(a.begin(), a.end(), s) != a.end(); };
  EXPECT_TRUE(has("-kernel"));
  EXPECT_FALSE(has("-blockdev"));
  EXPECT_FALSE(has("-smbios"));
  EXPECT_TRUE(has("tcg"));
  p.kvm_usable = true;  // TCG stays the default even where /dev/kvm opens
  a = QemuArgv(Good(), p, false);
  EXPECT_TRUE(has("tcg"));
  VmSpec s = Good();
  s.accel = "auto";
  a = QemuArgv(s, p, false);
  EXPECT_TRUE(has("kvm"));
  p.kvm_usable = false;
  a = QemuArgv(s, p, false);
  EXPECT_TRUE(has("tcg"));
}

TEST(LaunchTest, DiskBootUsesFirmwareSharedRamAndSmbiosCredentials) {
  VmSpec s = Good();
  s.boot = "disk";
  s.vcpus = 2;
  s.workload_args = {{"size_mib", "256"}};
  s.disks = {DiskSpec{"/img/debian.qcow2"}};
  s.nics = {NicSpec{"user", ""}};
  s.memory_bytes = 1ull << 30;
  ASSERT_TRUE(s.Validate().ok()) << s.Validate().ToString();
  LaunchPaths p{"/q", "/k", "/i", "/dev/shm/r", "/s/qmp", "/s/serial"};
  auto a = QemuArgv(s, p, true);
  auto has = [&](const std::string& x) { return std::find(a.begin(), a.end(), x) != a.end(); };
  EXPECT_FALSE(has("-kernel"));
  EXPECT_FALSE(has("-bios"));  // SeaBIOS, QEMU's default
  EXPECT_TRUE(has("memory-backend-file,id=ram0,size=1024M,mem-path=/dev/shm/r,share=on"));
  EXPECT_TRUE(has("type=11,value=io.systemd.credential:agile.workload=memverify"));
  EXPECT_TRUE(has("type=11,value=io.systemd.credential:agile.args=size_mib=256"));
  EXPECT_TRUE(has("-blockdev"));
  EXPECT_TRUE(has("user,id=net0"));
  EXPECT_TRUE(has("2"));  // -smp
  s.firmware = "ovmf";
  a = QemuArgv(s, p, false);
  EXPECT_TRUE(has(kOvmfPath));
  // A workload of none passes nothing: an operator's image is left alone.
  s.workload = "none";
  s.workload_args.clear();
  EXPECT_TRUE(GuestCredentials(s).empty());
}

TEST(LaunchTest, BridgeNicLetsQemuSpawnItsHelper) {
  VmSpec s = Good();
  s.nics = {NicSpec{"bridge", "br0"}};
  LaunchPaths p{"/q", "/k", "/i", "/r", "/s/qmp", "/s/serial"};
  auto a = QemuArgv(s, p, false);
  EXPECT_NE(std::find(a.begin(), a.end(), "on,obsolete=deny,elevateprivileges=deny,spawn=allow,resourcecontrol=deny"),
            a.end());
}

TEST(LaunchTest, ResolvesAccel) {
  EXPECT_EQ(*ResolveAccel("auto", false), "tcg");
  EXPECT_EQ(*ResolveAccel("auto", true), "kvm");
  EXPECT_EQ(*ResolveAccel("tcg", true), "tcg");
  EXPECT_EQ(*ResolveAccel("kvm", true), "kvm");
  auto no = ResolveAccel("kvm", false);
  ASSERT_FALSE(no.ok());
  EXPECT_NE(no.status().message().find("/dev/kvm"), std::string::npos);
}

TEST(LaunchTest, ValidatesBootDevicesAndWorkloadPairs) {
  VmSpec s = Good();
  s.boot = "disk";
  EXPECT_NE(s.Validate().message().find("needs a --disk"), std::string::npos);
  s.disks = {DiskSpec{"/d.qcow2"}};
  s.memory_bytes = 256ull << 20;  // 256 MiB of memverify leaves nothing for Debian
  EXPECT_NE(s.Validate().message().find("system"), std::string::npos);
  s.memory_bytes = 1ull << 30;
  EXPECT_TRUE(s.Validate().ok());
  // The disk image runs redis too (guest/disk/agile-workload), with the
  // lab's address keys.
  s.workload = "redis";
  s.workload_args = {{"ip", "10.0.0.5"}, {"prefix", "24"}, {"keys", "1000"}};
  EXPECT_TRUE(s.Validate().ok());
  s.workload = "diskverify";
  s.workload_args = {{"files", "4"}, {"mem_mib", "128"}};
  EXPECT_TRUE(s.Validate().ok());
  s.boot = "kernel";
  EXPECT_NE(s.Validate().message().find("--boot disk"), std::string::npos);
  s = Good();
  s.accel = "hvf";
  EXPECT_FALSE(s.Validate().ok());
  s = Good();
  s.firmware = "ovmf";
  EXPECT_FALSE(s.Validate().ok());
}

TEST(LaunchTest, SpecJsonWithDevicesRoundTrips) {
  VmSpec s = Good();
  s.disks = {DiskSpec{"/d.qcow2", "raw", "none", "virtio-scsi"}};
  s.nics = {NicSpec{"tap", "tap0"}};
  s.accel = "tcg";
  s.boot = "disk";
  s.memory_bytes = 1ull << 30;
  auto back = VmSpec::FromJson(s.ToJson());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->disks, s.disks);
  EXPECT_EQ(back->nics, s.nics);
  EXPECT_EQ(back->accel, "tcg");
  EXPECT_EQ(back->boot, "disk");
  // Older specs (no device fields) still load as kernel-booted lab guests;
  // a spec naming disks but no boot boots the disk.
  auto j = Good().ToJson();
  for (const char* k : {"disks", "nics", "accel", "boot", "firmware"}) j.erase(k);
  back = VmSpec::FromJson(j);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->boot, "kernel");
  j = s.ToJson();
  j.erase("boot");
  EXPECT_EQ(VmSpec::FromJson(j)->boot, "disk");
  j["disks"] = "nope";
  EXPECT_FALSE(VmSpec::FromJson(j).ok());
}

TEST(LaunchTest, ParsesWorkloadArgs) {
  auto m = ParseWorkloadArgs("size_mib=64  hot_mib=8");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->at("hot_mib"), "8");
  EXPECT_FALSE(ParseWorkloadArgs("oops").ok());
}

}  // namespace
}  // namespace agile::qemu
