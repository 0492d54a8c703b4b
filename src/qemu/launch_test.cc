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

TEST(LaunchTest, ParsesWorkloadArgs) {
  auto m = ParseWorkloadArgs("size_mib=64  hot_mib=8");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->at("hot_mib"), "8");
  EXPECT_FALSE(ParseWorkloadArgs("oops").ok());
}

}  // namespace
}  // namespace agile::qemu
