// The agile-qemu wrapper's reading of libvirt's QEMU command line
// (qemu/libvirt_argv.h), on the argv Debian 12's libvirtd 9.0 really gave its
// emulator for a file-backed shared-memory domain (captured with a logging
// <emulator>, trimmed of devices that do not matter here).
#include "qemu/libvirt_argv.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace agile::qemu {
namespace {

std::vector<std::string> Libvirt90Argv() {
  return {"/usr/local/bin/agile-qemu",
          "-name", "guest=lv1,debug-threads=on",
          "-S",
          "-object", R"({"qom-type":"secret","id":"masterKey0","format":"raw","file":"/var/lib/libvirt/qemu/domain-1-lv1/master-key.aes"})",
          "-machine", "pc-i440fx-7.2,usb=off,dump-guest-core=off,memory-backend=pc.ram",
          "-accel", "tcg",
          "-m", "256",
          "-object", R"({"qom-type":"memory-backend-file","id":"pc.ram","mem-path":"/var/lib/libvirt/qemu/ram/libvirt/qemu/1-lv1/pc.ram","share":true,"x-use-canonical-path-for-ramblock-id":false,"size":268435456})",
          "-overcommit", "mem-lock=off",
          "-smp", "2,sockets=2,cores=1,threads=1",
          "-chardev", "socket,id=charmonitor,fd=26,server=on,wait=off",
          "-mon", "chardev=charmonitor,id=monitor,mode=control",
          "-add-fd", "set=0,fd=25,opaque=serial0-log",
          "-chardev", "pty,id=charserial0,logfile=/dev/fdset/0,logappend=on",
          "-device", R"({"driver":"isa-serial","chardev":"charserial0","id":"serial0","index":0})",
          "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
          "-msg", "timestamp=on"};
}

TEST(LibvirtArgvTest, ProbesAreNotDomainStarts) {
  // What libvirt runs to learn QEMU's capabilities: no -name.
  EXPECT_FALSE(IsDomainStart({"/usr/local/bin/agile-qemu", "-help"}));
  EXPECT_FALSE(IsDomainStart({"/usr/local/bin/agile-qemu", "-version"}));
  EXPECT_FALSE(IsDomainStart({"/usr/local/bin/agile-qemu", "-S", "-no-user-config", "-nodefaults", "-nographic",
                              "-machine", "none,accel=kvm:tcg", "-qmp", "unix:/x,server=on,wait=off"}));
  EXPECT_TRUE(IsDomainStart(Libvirt90Argv()));
}

TEST(LibvirtArgvTest, ReadsNameSizeCpusAndSerialLog) {
  auto vm = ParseLibvirtArgv(Libvirt90Argv());
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_EQ(vm->name, "lv1");
  EXPECT_EQ(vm->memory_bytes, 256ull << 20);
  EXPECT_EQ(vm->vcpus, 2);
  EXPECT_EQ(vm->ram_object_arg, 13u);
  EXPECT_EQ(vm->serial_log_fd, 25);
  EXPECT_EQ(vm->serial_log, "");
}

TEST(LibvirtArgvTest, RewritesOnlyTheRamPathAndAddsOurQmp) {
  auto argv = Libvirt90Argv();
  auto vm = ParseLibvirtArgv(argv);
  ASSERT_TRUE(vm.ok());
  auto out = AgileArgv(argv, *vm, "/dev/shm/agile/a/lv1/ram", "/run/agile/vms/lv1/qmp.sock");
  ASSERT_EQ(out.size(), argv.size() + 2);
  auto obj = nlohmann::json::parse(out[13]);
  EXPECT_EQ(obj["mem-path"], "/dev/shm/agile/a/lv1/ram");
  EXPECT_EQ(obj["share"], true);
  EXPECT_EQ(obj["size"], 268435456);
  EXPECT_EQ(obj["id"], "pc.ram");
  for (size_t i = 0; i < argv.size(); ++i) {
    if (i != 13) {
      EXPECT_EQ(out[i], argv[i]) << "argument " << i << " changed";
    }
  }
  EXPECT_EQ(out[argv.size()], "-qmp");
  EXPECT_EQ(out[argv.size() + 1], "unix:/run/agile/vms/lv1/qmp.sock,server=on,wait=off");
}

TEST(LibvirtArgvTest, KeyvalObjectsAndPlainLogPaths) {
  std::vector<std::string> argv = {"q", "-name", "lv2", "-machine", "pc,memory-backend=ram0",
                                   "-object", "memory-backend-file,id=ram0,mem-path=/a,,b/ram,share=on,size=512M",
                                   "-chardev", "pty,id=charserial0,logfile=/var/log/lv2.log"};
  auto vm = ParseLibvirtArgv(argv);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_EQ(vm->name, "lv2");
  EXPECT_EQ(vm->memory_bytes, 512ull << 20);
  EXPECT_EQ(vm->vcpus, 1);
  EXPECT_EQ(vm->serial_log, "/var/log/lv2.log");
  EXPECT_EQ(vm->serial_log_fd, -1);
  auto out = AgileArgv(argv, *vm, "/dev/shm/x,y/ram", "/q");
  EXPECT_EQ(out[6], "memory-backend-file,id=ram0,mem-path=/dev/shm/x,,y/ram,share=on,size=512M");
}

TEST(LibvirtArgvTest, RefusesDomainsWhoseRamAgiledCannotOwn) {
  auto argv = Libvirt90Argv();
  // <memoryBacking> without <access mode='shared'/>: share=false.
  argv[13] = R"({"qom-type":"memory-backend-file","id":"pc.ram","mem-path":"/x","share":false,"size":268435456})";
  auto r = ParseLibvirtArgv(argv);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().ToString().find("<access mode='shared'/>"), std::string::npos) << r.status().ToString();
  // No <memoryBacking> at all: anonymous RAM.
  argv[13] = R"({"qom-type":"memory-backend-ram","id":"pc.ram","size":268435456})";
  EXPECT_FALSE(ParseLibvirtArgv(argv).ok());
  // Old style: -m alone, no memory-backend on -machine.
  argv[7] = "pc-i440fx-7.2,usb=off";
  r = ParseLibvirtArgv(argv);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().ToString().find("memoryBacking"), std::string::npos);
  // An incoming migration.
  argv = Libvirt90Argv();
  argv.insert(argv.end(), {"-incoming", "defer"});
  r = ParseLibvirtArgv(argv);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().ToString().find("not supported yet"), std::string::npos);
}

TEST(LibvirtArgvTest, KeyvalCommasAndBareValues) {
  auto kv = SplitKeyval("pty,id=a,,b,logappend");
  ASSERT_EQ(kv.size(), 3u);
  EXPECT_EQ(kv[0], (std::pair<std::string, std::string>{"", "pty"}));
  EXPECT_EQ(kv[1], (std::pair<std::string, std::string>{"id", "a,b"}));
  EXPECT_EQ(kv[2], (std::pair<std::string, std::string>{"logappend", "on"}));
}

}  // namespace
}  // namespace agile::qemu
