#include "qemu/devices.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace agile::qemu {
namespace {

TEST(DevicesTest, ParsesDiskOptions) {
  auto d = ParseDiskOption("/img/a.qcow2");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->format, "qcow2");
  EXPECT_EQ(d->cache, "writeback");
  EXPECT_EQ(d->bus, "virtio-blk");
  d = ParseDiskOption("/img/b.raw,format=raw,cache=none,bus=virtio-scsi");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->format, "raw");
  EXPECT_EQ(d->cache, "none");
  EXPECT_EQ(d->bus, "virtio-scsi");
  d = ParseDiskOption("rel/c.qcow2");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->path[0], '/');
  EXPECT_NE(ParseDiskOption("/a,format=vmdk").status().message().find("vmdk"), std::string::npos);
  EXPECT_NE(ParseDiskOption("/a,cache=fast").status().message().find("fast"), std::string::npos);
  EXPECT_NE(ParseDiskOption("/a,speed=1").status().message().find("speed"), std::string::npos);
  EXPECT_FALSE(ParseDiskOption("").ok());
}

TEST(DevicesTest, ParsesNicOptions) {
  auto n = ParseNicOption("user");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->kind, "user");
  n = ParseNicOption("tap=tap0");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->ifname, "tap0");
  EXPECT_TRUE(ParseNicOption("bridge=br0").ok());
  EXPECT_FALSE(ParseNicOption("tap").ok());
  EXPECT_FALSE(ParseNicOption("tap=a,script=/bin/evil").ok());
  EXPECT_FALSE(ParseNicOption("tap=waytoolonginterfacename").ok());
  EXPECT_FALSE(ParseNicOption("vde=x").ok());
}

TEST(DevicesTest, DiskArgsAreJsonBlockdevsWithBootOrder) {
  DiskSpec a{"/img/a,b.qcow2", "qcow2", "none", "virtio-blk"};
  DiskSpec b{"/img/b.raw", "raw", "writethrough", "virtio-scsi"};
  auto args = DiskArgs({a, b});
  auto json_of = [&](size_t i) { return nlohmann::json::parse(args[i]); };
  // virtio-scsi controller first, then blockdev + device per disk.
  ASSERT_EQ(args.size(), 2u + 4u + 4u);
  EXPECT_EQ(args[1], "virtio-scsi-pci,id=scsi0");
  auto n0 = json_of(3);
  EXPECT_EQ(n0["node-name"], "disk0");
  EXPECT_EQ(n0["file"]["filename"], "/img/a,b.qcow2");  // no ',' escaping needed in JSON
  EXPECT_EQ(n0["cache"]["direct"], true);
  EXPECT_EQ(args[5], "virtio-blk-pci,id=disk0-dev,drive=disk0,bootindex=1,write-cache=on");
  auto n1 = json_of(7);
  EXPECT_EQ(n1["driver"], "raw");
  EXPECT_EQ(n1["cache"]["direct"], false);
  EXPECT_EQ(args[9], "scsi-hd,bus=scsi0.0,id=disk1-dev,drive=disk1,bootindex=2,write-cache=off");
}

TEST(DevicesTest, NicMacsAreStablePerVmAndDistinctPerNic) {
  std::vector<NicSpec> nics = {{"user", ""}, {"tap", "tap7"}};
  auto a = NicArgs("vm1", nics);
  ASSERT_EQ(a.size(), 8u);
  EXPECT_EQ(a[1], "user,id=net0");
  EXPECT_EQ(a[5], "tap,id=net1,ifname=tap7,script=no,downscript=no");
  EXPECT_EQ(a, NicArgs("vm1", nics));  // the destination of a migration agrees
  EXPECT_NE(a[3], a[7]);
  EXPECT_NE(a[3], NicArgs("vm2", nics)[3]);
  EXPECT_EQ(a[3].rfind("virtio-net-pci,netdev=net0,mac=52:54:", 0), 0u);
}

TEST(DevicesTest, JsonRoundTripAndRejects) {
  DiskSpec d{"/x.qcow2", "qcow2", "unsafe", "virtio-scsi"};
  auto back = DiskSpec::FromJson(d.ToJson());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, d);
  EXPECT_FALSE(DiskSpec::FromJson({{"path", "relative.qcow2"}}).ok());
  EXPECT_FALSE(DiskSpec::FromJson({{"path", 7}}).ok());
  NicSpec n{"bridge", "br0"};
  auto nb = NicSpec::FromJson(n.ToJson());
  ASSERT_TRUE(nb.ok());
  EXPECT_EQ(*nb, n);
  EXPECT_FALSE(NicSpec::FromJson({{"kind", "user"}, {"ifname", "x"}}).ok());
}

}  // namespace
}  // namespace agile::qemu
