#include "wire/migrate_proto.h"

#include <gtest/gtest.h>

#include "wire/frame.h"

namespace agile::wire {
namespace {

// Splits an encoded frame into header check + payload, as a receiver would.
std::vector<uint8_t> Payload(const std::vector<uint8_t>& frame, MigMsg want) {
  auto h = DecodeFrameHeader(frame.data(), kMigMagic, kMigVersion, kMigMaxPayload);
  EXPECT_TRUE(h.ok());
  EXPECT_EQ(h->type, static_cast<uint16_t>(want));
  EXPECT_TRUE(VerifyFrame(frame.data(), *h, frame.data() + kFrameHeaderSize).ok());
  return {frame.begin() + kFrameHeaderSize, frame.end()};
}

TEST(MigrateProtoTest, HelloRoundTrip) {
  std::vector<uint8_t> f;
  AppendHello(&f, {MigMode::kPostcopy, 131072, R"({"name":"v"})", "hostA", "10.0.0.3:7800", "v-1"});
  auto m = DecodeHello(Payload(f, MigMsg::kHello));
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->mode, MigMode::kPostcopy);
  EXPECT_EQ(m->page_count, 131072u);
  EXPECT_EQ(m->spec_json, R"({"name":"v"})");
  EXPECT_EQ(m->store_vm_id, "v-1");
  EXPECT_TRUE(m->copy_disk_bytes.empty());
}

TEST(MigrateProtoTest, HelloCarriesDiskSizesAndAckTheNbdPort) {
  std::vector<uint8_t> f;
  MigHello h{MigMode::kAgile, 4, "{}", "a", "", "", {2ull << 30, 512ull << 20}};
  AppendHello(&f, h);
  auto m = DecodeHello(Payload(f, MigMsg::kHello));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->copy_disk_bytes, (std::vector<uint64_t>{2ull << 30, 512ull << 20}));
  h.copy_disk_bytes.assign(kMigMaxCopyDisks + 1, 1);
  f.clear();
  AppendHello(&f, h);
  EXPECT_FALSE(DecodeHello(Payload(f, MigMsg::kHello)).ok());
  f.clear();
  AppendHelloAck(&f, {0, "ok", 4444, "b", 10809});
  auto a = DecodeHelloAck(Payload(f, MigMsg::kHelloAck));
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->nbd_port, 10809);
  auto p = Payload(f, MigMsg::kHelloAck);
  p.pop_back();  // a version-3 ACK (no nbd_port) is refused, not guessed at
  EXPECT_FALSE(DecodeHelloAck(p).ok());
}

TEST(MigrateProtoTest, HelloCarriesTheMigrationId) {
  std::vector<uint8_t> f;
  MigHello h{MigMode::kPostcopy, 4, "{}", "a", "", "", {}, 0x1122334455667788ull, 0x99aabbccddeeff00ull};
  AppendHello(&f, h);
  auto m = DecodeHello(Payload(f, MigMsg::kHello));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->migration_id_lo, 0x1122334455667788ull);
  EXPECT_EQ(m->migration_id_hi, 0x99aabbccddeeff00ull);
  auto p = Payload(f, MigMsg::kHello);
  p.resize(p.size() - 16);  // a version-4 HELLO (no id) is refused, not taken for id 0
  EXPECT_FALSE(DecodeHello(p).ok());
}

TEST(MigrateProtoTest, ResumeAndItsAckRoundTrip) {
  std::vector<uint8_t> f;
  AppendResume(&f, {"vm1", "hostA", 7, 9});
  auto r = DecodeResume(Payload(f, MigMsg::kResume));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->vm, "vm1");
  EXPECT_EQ(r->src_host, "hostA");
  EXPECT_EQ(r->migration_id_lo, 7u);
  EXPECT_EQ(r->migration_id_hi, 9u);
  auto p = Payload(f, MigMsg::kResume);
  p.pop_back();
  EXPECT_FALSE(DecodeResume(p).ok());
  p = Payload(f, MigMsg::kResume);
  p.push_back(0);
  EXPECT_FALSE(DecodeResume(p).ok()) << "trailing bytes";
  f.clear();
  AppendResumeAck(&f, {0, "resumed", 12345});
  auto a = DecodeResumeAck(Payload(f, MigMsg::kResumeAck));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->status, 0u);
  EXPECT_EQ(a->message, "resumed");
  EXPECT_EQ(a->pages_remote, 12345u);
  EXPECT_STREQ(MigMsgName(static_cast<uint16_t>(MigMsg::kResume)), "RESUME");
  EXPECT_STREQ(MigMsgName(static_cast<uint16_t>(MigMsg::kResumeAck)), "RESUME_ACK");
}

TEST(MigrateProtoTest, PagesRoundTrip) {
  std::vector<uint8_t> a(4096, 0xAB), b(4096, 0xCD);
  MigPage pages[2] = {{7, a.data()}, {9, b.data()}};
  std::vector<uint8_t> f;
  AppendPages(&f, 3, pages, 2);
  auto p = Payload(f, MigMsg::kPages);
  uint32_t round;
  std::vector<MigPage> got;
  ASSERT_TRUE(DecodePages(p, &round, &got).ok());
  EXPECT_EQ(round, 3u);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1].index, 9u);
  EXPECT_EQ(got[1].data[4095], 0xCD);
}

TEST(MigrateProtoTest, LocationsSwitchoverRequestRoundTrip) {
  std::vector<MigRun> runs = {{0, 10, PageWhere::kZero}, {10, 5, PageWhere::kInStore}, {15, 1, PageWhere::kAtSource}};
  std::vector<uint8_t> f;
  AppendLocations(&f, runs, 0, runs.size());
  std::vector<MigRun> got;
  ASSERT_TRUE(DecodeLocations(Payload(f, MigMsg::kLocations), &got).ok());
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[1].where, PageWhere::kInStore);
  f.clear();
  AppendSwitchover(&f, {true, 4, 0xFEED, 0xBEEF, false});
  auto s = DecodeSwitchover(Payload(f, MigMsg::kSwitchover));
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->has_token);
  EXPECT_EQ(s->secret, 0xFEEDu);
  EXPECT_EQ(s->secret_hi, 0xBEEFu);  // 128-bit token secret
  EXPECT_FALSE(s->resume);
  f.clear();
  uint64_t idx[3] = {1, 2, 99};
  AppendPageRequest(&f, idx, 3);
  std::vector<uint64_t> req;
  ASSERT_TRUE(DecodePageRequest(Payload(f, MigMsg::kPageRequest), &req).ok());
  EXPECT_EQ(req, (std::vector<uint64_t>{1, 2, 99}));
  f.clear();
  AppendAbort(&f, "destination out of memory");
  EXPECT_EQ(*DecodeAbort(Payload(f, MigMsg::kAbort)), "destination out of memory");
}

TEST(MigrateProtoTest, SwitchoverAckSaysWhetherTheVmRanAndHandsTheLeaseBack) {
  std::vector<uint8_t> f;
  AppendSwitchoverAck(&f, {SwitchoverResult::kRunning, "running"});
  auto a = DecodeSwitchoverAck(Payload(f, MigMsg::kSwitchoverAck));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->status, SwitchoverResult::kRunning);
  EXPECT_EQ(a->message, "running");
  EXPECT_FALSE(a->has_token);
  f.clear();
  AppendSwitchoverAck(&f, {SwitchoverResult::kNotResumed, "QEMU died", true, 3, 0xFEED, 0xBEEF});
  a = DecodeSwitchoverAck(Payload(f, MigMsg::kSwitchoverAck));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->status, SwitchoverResult::kNotResumed);
  EXPECT_EQ(a->message, "QEMU died");
  EXPECT_TRUE(a->has_token);
  EXPECT_EQ(a->epoch, 3u);
  EXPECT_EQ(a->secret, 0xFEEDu);
  EXPECT_EQ(a->secret_hi, 0xBEEFu);
  // Not resumed without a token: post-copy, or a lease the destination could not hand back.
  f.clear();
  AppendSwitchoverAck(&f, {SwitchoverResult::kNotResumed, "no lease"});
  a = DecodeSwitchoverAck(Payload(f, MigMsg::kSwitchoverAck));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->status, SwitchoverResult::kNotResumed);
  EXPECT_FALSE(a->has_token);
}

TEST(MigrateProtoTest, MalformedSwitchoverAcksAreRejected) {
  std::vector<uint8_t> f;
  AppendSwitchoverAck(&f, {SwitchoverResult::kNotResumed, "never ran", true, 3, 1, 2});
  const auto good = Payload(f, MigMsg::kSwitchoverAck);
  // Every truncation, and a trailing byte (a version-5 ACK, status and message only, among them).
  for (size_t n = 0; n < good.size(); ++n)
    EXPECT_FALSE(DecodeSwitchoverAck(std::vector<uint8_t>(good.begin(), good.begin() + static_cast<long>(n))).ok())
        << n;
  auto p = good;
  p.push_back(0);
  EXPECT_FALSE(DecodeSwitchoverAck(p).ok()) << "trailing bytes";
  // An unknown status is not read as "not resumed" (or anything else).
  p = good;
  p[0] = 3;
  EXPECT_FALSE(DecodeSwitchoverAck(p).ok());
  // The has_token flag is one byte after status (4) and message (4 + 9).
  const size_t flag = 4 + 4 + 9;
  p = good;
  p[flag] = 2;
  EXPECT_FALSE(DecodeSwitchoverAck(p).ok()) << "bad flag";
  // A token only comes back with a VM that never ran at the destination.
  for (SwitchoverResult st : {SwitchoverResult::kRunning, SwitchoverResult::kFailed}) {
    f.clear();
    AppendSwitchoverAck(&f, {st, "x", true, 3, 1, 2});
    EXPECT_FALSE(DecodeSwitchoverAck(Payload(f, MigMsg::kSwitchoverAck)).ok()) << static_cast<int>(st);
  }
}

TEST(MigrateProtoTest, MalformedPayloadsAreRejected) {
  std::vector<uint8_t> f;
  AppendHello(&f, {MigMode::kAgile, 1, "{}", "a", "", ""});
  auto p = Payload(f, MigMsg::kHello);
  for (size_t n = 0; n < p.size(); ++n)
    EXPECT_FALSE(DecodeHello(std::vector<uint8_t>(p.begin(), p.begin() + static_cast<long>(n))).ok()) << n;
  auto bad_mode = p;
  bad_mode[0] = 9;
  EXPECT_FALSE(DecodeHello(bad_mode).ok());
  p.push_back(1);
  EXPECT_FALSE(DecodeHello(p).ok());

  // A PAGES frame claiming more pages than allowed.
  std::vector<uint8_t> many = {0, 0, 0, 0, 0xFF, 0, 0, 0};
  uint32_t round;
  std::vector<MigPage> pages;
  EXPECT_FALSE(DecodePages(many, &round, &pages).ok());
  // A LOCATIONS run with an unknown place.
  std::vector<MigRun> runs = {{0, 1, PageWhere::kZero}};
  f.clear();
  AppendLocations(&f, runs, 0, 1);
  auto loc = Payload(f, MigMsg::kLocations);
  loc.back() = 7;
  std::vector<MigRun> got;
  EXPECT_FALSE(DecodeLocations(loc, &got).ok());
}

TEST(MigrateProtoTest, ModeNamesParse) {
  for (const char* n : {"agile", "precopy", "postcopy", "qemu-precopy", "qemu-postcopy"})
    EXPECT_STREQ(MigModeName(*ParseMigMode(n)), n);
  EXPECT_FALSE(ParseMigMode("teleport").ok());
}

}  // namespace
}  // namespace agile::wire
