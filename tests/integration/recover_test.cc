// Post-copy recovery with real agileds, real QEMU guests and a real link
// failure: the migration connection runs through a TCP relay this test owns,
// which freezes (a silent partition: no byte moves, no FIN, new dials
// refused) after switchover while the guest still faults pages from the
// source. Both sides must pause and keep their state; then the link heals
// (or a second relay opens) and the migration resumes where it stopped, and
// the guest's memverify sweeps every page with errors=0. Around that: the
// recovery under mutual TLS (re-authenticated, another certificate refused),
// to a new address, a cancel after the commit point (refused: the VM is
// never lost), and the recovery window's end (nothing freed).
// docs/migration.md ("Post-copy recovery").
#include <gtest/gtest.h>

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <thread>

#include "agiled_fixture.h"
#include "relay.h"
#include "tls/tls.h"
#include "wire/frame_stream.h"
#include "wire/migrate_proto.h"

namespace agile::testing {
namespace {
using nlohmann::json;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

// The last "memverify: sweep=N" on the VM's console (0 before the first).
uint64_t LastSweep(AgiledProcess& d, const std::string& vm) {
  auto r = d.Call("vm.console", {{"name", vm}, {"lines", 400}});
  if (!r.ok()) return 0;
  std::string text = (*r)["text"];
  size_t at = text.rfind("sweep=");
  return at == std::string::npos ? 0 : std::stoull(text.substr(at + 6));
}

json MigrationStatus(AgiledProcess& d, const std::string& vm) {
  auto r = d.Call("vm.migrate_status", {{"name", vm}});
  return r.ok() ? *r : json{{"error", r.status().ToString()}};
}

std::string Loopback(uint16_t port) { return "127.0.0.1:" + std::to_string(port); }

// The guest and the migration: the push (post-copy) or the tail (agile) must
// still be running when the link is cut.
struct Guest {
  std::string mode = "postcopy";
  uint64_t memory_mib = 256;
  std::string size_mib = "64", rate = "500";
};
// ~42K pages with data (memverify's 64 MiB, the guest's kernel) at 8 MB/s:
// the push takes ~20 s; the link is cut in it.
const Guest kShortPostcopy;

// A memd and two agileds: a (source) and b (destination, listening), with
// bounds short enough that a silent link is noticed in seconds, and a relay
// in front of b. With TLS every TCP link is mutual TLS (docs/security.md),
// and a third agiled, c, holds another valid certificate of the same CA.
class RecoverFixture : public ::testing::Test {
 protected:
  void SetUp() override { StartHosts(/*tls=*/false); }
  void TearDown() override {
    relay_.reset();
    // A migration the test left running (a failed assertion) ends when its
    // agiled stops; the pending call returns then.
    if (a_ && pending_.valid()) {
      (void)a_->process().Signal(SIGTERM);
      pending_.wait();
    }
    a_.reset();
    b_.reset();
    c_.reset();
    memd_.reset();
    if (!pki_.empty()) fs::remove_all(pki_);
  }

  void StartHosts(bool tls, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> memd_args;
    if (tls) {
      pki_ = "/tmp/" + UniqueTestName("recover-pki");
      const std::string pki = std::string(AGILE_SOURCE_DIR) + "/scripts/agile-pki";
      ASSERT_EQ(std::system((pki + " " + pki_ + " rtls-a rtls-b rtls-c rtls-memd >/dev/null").c_str()), 0);
      memd_args = {"--tls-dir", pki_ + "/rtls-memd"};
    }
    auto m = MemdProcess::Start("", 0, memd_args);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    memd_ = std::move(m).value();
    port_b_ = FreeTcpPort();
    port_c_ = FreeTcpPort();
    auto start = [&](const std::string& host, uint16_t listen) {
      std::vector<std::string> args = {"--memd", memd_->addr(), "--migrate-io-timeout-ms", "3000",
                                       "--migrate-peer-timeout-ms", "6000", "--keepalive-idle-s", "1"};
      if (listen) args.insert(args.end(), {"--listen", Loopback(listen)});
      if (tls) args.insert(args.end(), {"--tls-dir", pki_ + "/rtls-" + host});
      args.insert(args.end(), extra.begin(), extra.end());
      auto d = AgiledProcess::Start("recover-" + host, args);
      EXPECT_TRUE(d.ok()) << d.status().ToString();
      return d.ok() ? std::move(d).value() : nullptr;
    };
    a_ = start("a", 0);
    b_ = start("b", port_b_);
    if (tls) c_ = start("c", port_c_);
    ASSERT_TRUE(a_ && b_ && (!tls || c_));
    port_r_ = FreeTcpPort();
    relay_ = std::make_unique<Relay>(port_r_, port_b_);
  }

  // Starts `vm` at a and migrates it to b through the relay (vm.migrate's
  // answer in pending_); returns once post-copy is moving pages.
  void MigrateIntoPostcopy(const std::string& vm, const Guest& run) {
    json args = {{"name", vm}, {"to", Loopback(port_r_)}, {"mode", run.mode}, {"bandwidth", 8ull << 20}};
    if (run.mode == "agile") args["max_downtime_ms"] = 100;
    auto r = a_->Call("vm.start",
                      VmArgs(vm, run.memory_mib, "memverify", {{"size_mib", run.size_mib}, {"rate", run.rate}}));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_TRUE(WaitFor(90, [&] { return Stat(*a_, vm)["guest"].value("gen", 0) > 0; })) << "workload never reported";
    if (run.mode == "agile") {
      EXPECT_TRUE(a_->Call("vm.offload", {{"name", vm}, {"resident_bytes", 200ull << 20}}).ok());
      EXPECT_GT(Stat(*a_, vm)["pages"].value("offloaded", 0), 0);
    }
    pending_ = std::async(std::launch::async, [this, args] { return a_->Call("vm.migrate", args); });
    EXPECT_TRUE(WaitFor(180, [&] {
      json s = Stat(*a_, vm);
      return s.contains("migration") && s["migration"].value("status", "") == "postcopy-active" &&
             s["migration"].value("pages_postcopied", 0) > 500;
    })) << "never got into post-copy with pages flowing: " << Stat(*a_, vm).dump();
  }

  // Freezes the relay; both sides notice within their bounds and pause,
  // keeping their state.
  void CutAndExpectBothPaused(const std::string& vm) {
    relay_->Freeze();
    const auto cut = Clock::now();
    ASSERT_TRUE(WaitFor(30, [&] { return MigrationStatus(*a_, vm).value("status", "") == "postcopy-paused"; }))
        << MigrationStatus(*a_, vm).dump();
    ASSERT_TRUE(WaitFor(30, [&] { return MigrationStatus(*b_, vm).value("status", "") == "postcopy-paused"; }))
        << MigrationStatus(*b_, vm).dump();
    std::printf("recover: both sides paused %.1f s after the cut\n",
                std::chrono::duration<double>(Clock::now() - cut).count());
    ExpectBothKeepTheirState(vm, "postcopy-paused");
  }

  // The source keeps the VM paused with its RAM, the destination runs it
  // with pages still missing, and the migration has not ended.
  void ExpectBothKeepTheirState(const std::string& vm, const std::string& status) {
    EXPECT_EQ(MigrationStatus(*a_, vm).value("status", ""), status) << MigrationStatus(*a_, vm).dump();
    EXPECT_EQ(MigrationStatus(*b_, vm).value("status", ""), status) << MigrationStatus(*b_, vm).dump();
    EXPECT_EQ(Stat(*a_, vm)["state"], "paused");
    EXPECT_TRUE(fs::exists(a_->shm_dir() + "/" + vm)) << "the source let go of its guest RAM";
    json dst = MigrationStatus(*b_, vm);
    EXPECT_GT(dst.value("pages_remote", 0), 0) << dst.dump();
    EXPECT_EQ(Stat(*b_, vm)["state"], "running");
    EXPECT_TRUE(fs::exists(b_->shm_dir() + "/" + vm));
    EXPECT_FALSE(pending_.wait_for(std::chrono::seconds(0)) == std::future_status::ready) << "the migration ended";
  }

  // The operator's `migrate --recover` right after the link healed. The
  // source's own backoff may win the race, and then there is nothing paused.
  void RecoverAfterHeal(const std::string& vm) {
    auto rec = a_->Call("vm.migrate_recover", {{"name", vm}});
    if (!rec.ok()) {
      EXPECT_EQ(rec.status().code(), Code::kInvalidArgument) << rec.status().ToString();
    } else {
      EXPECT_TRUE((*rec)["recovered"].get<bool>()) << rec->dump();
    }
    std::printf("recover: migrate --recover: %s\n", rec.ok() ? "recovered" : rec.status().ToString().c_str());
  }

  // The migration completed after at least one recovery, the source holds
  // nothing of the VM, and a whole memverify sweep after the last page
  // arrived found every page intact. Returns the report.
  json ExpectArrivedIntact(const std::string& vm) {
    auto r = pending_.get();
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return json::object();
    std::printf("recover: %s\n", r->dump().c_str());
    EXPECT_GE((*r)["recoveries"].get<uint32_t>(), 1u);
    EXPECT_GT((*r)["pages_postcopied"].get<uint64_t>(), 500u);
    EXPECT_EQ(a_->Call("vm.stat", {{"name", vm}}).status().code(), Code::kNotFound);
    EXPECT_FALSE(fs::exists(a_->shm_dir() + "/" + vm)) << "guest RAM left at the source";
    EXPECT_FALSE(Stat(*b_, vm).contains("migration")) << Stat(*b_, vm).dump();
    const uint64_t sweep0 = LastSweep(*b_, vm);
    EXPECT_TRUE(WaitFor(240, [&] {
      json s = Stat(*b_, vm);
      EXPECT_EQ(s["guest"].value("errors", 0), 0) << s["guest"].dump();
      EXPECT_EQ(s["guest"].value("bad_page_lines", 0), 0) << s["guest"].dump();
      return LastSweep(*b_, vm) >= sweep0 + 2;
    })) << "no whole memverify sweep after the recovery";
    json s = Stat(*b_, vm);
    EXPECT_EQ(s["state"], "running");
    EXPECT_EQ(s["guest"]["errors"], 0) << s["guest"].dump();
    return *r;
  }

  std::string pki_;
  std::unique_ptr<MemdProcess> memd_;
  std::unique_ptr<AgiledProcess> a_, b_, c_;
  std::unique_ptr<Relay> relay_;
  std::future<Result<json>> pending_;  // vm.migrate at a, answered when the migration ends
  uint16_t port_b_ = 0, port_c_ = 0, port_r_ = 0;
};

class RecoverTest : public RecoverFixture, public ::testing::WithParamInterface<std::string> {};

TEST_P(RecoverTest, LinkLostAfterSwitchoverPausesBothSidesAndResumesWithNothingLost) {
  const std::string mode = GetParam();
  const std::string vm = "rv";
  // agile: the guest rewrites ~8000 pages/s of 32K while the link moves
  // ~2000, so pre-copy cannot converge and agile post-copies the dirty
  // remainder (most of the 32K) from the source; cold pages stay in the store.
  const Guest run = mode == "postcopy" ? kShortPostcopy : Guest{"agile", 512, "128", "8000"};
  MigrateIntoPostcopy(vm, run);
  ASSERT_FALSE(HasFailure());
  CutAndExpectBothPaused(vm);
  ASSERT_FALSE(HasFailure());

  if (mode == "postcopy") {
    // The operator's way. While the link is still down an attempt fails
    // and the migration stays paused.
    auto early = a_->Call("vm.migrate_recover", {{"name", vm}});
    EXPECT_FALSE(early.ok());
    EXPECT_EQ(MigrationStatus(*a_, vm).value("status", ""), "postcopy-paused");
    std::this_thread::sleep_for(std::chrono::seconds(3));
    relay_->Heal();
    RecoverAfterHeal(vm);
  } else {
    // The source's own reconnects (1 s doubling) find the healed link.
    std::this_thread::sleep_for(std::chrono::seconds(5));
    relay_->Heal();
  }
  json r = ExpectArrivedIntact(vm);
  if (mode == "agile") {
    EXPECT_GT(r.value("pages_from_store", 0ull), 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, RecoverTest, ::testing::Values("postcopy", "agile"),
                         [](const auto& info) { return info.param; });

TEST_F(RecoverFixture, ARecoverOfNoPausedMigrationIsRefused) {
  auto r = a_->Call("vm.migrate_recover", {{"name", "nosuch"}});
  EXPECT_EQ(r.status().code(), Code::kNotFound) << r.status().ToString();
}

// After the commit point the VM runs at the destination and the pages it
// still lacks exist only at the source: `migrate --cancel` is refused (exit
// 5), running or paused, and the migration stays recoverable to the end.
TEST_F(RecoverFixture, ACancelAfterTheCommitPointIsRefusedAndTheVmIsNotLost) {
  const std::string vm = "rc";
  MigrateIntoPostcopy(vm, kShortPostcopy);
  ASSERT_FALSE(HasFailure());
  CliResult running = Agilectl(*a_, {"migrate", "--cancel", vm});
  EXPECT_EQ(running.exit, 5) << running.out.dump();
  EXPECT_NE(running.out.dump().find("past its commit point (postcopy-active)"), std::string::npos)
      << running.out.dump();

  CutAndExpectBothPaused(vm);
  ASSERT_FALSE(HasFailure());
  CliResult paused = Agilectl(*a_, {"migrate", "--cancel", vm});
  EXPECT_EQ(paused.exit, 5) << paused.out.dump();
  EXPECT_NE(paused.out.dump().find("migrate --recover " + vm), std::string::npos) << paused.out.dump();
  // The destination has no migration to cancel: it says where to go.
  CliResult there = Agilectl(*b_, {"migrate", "--cancel", vm});
  EXPECT_EQ(there.exit, 5) << there.out.dump();
  EXPECT_NE(there.out.dump().find("is cancelled at its source"), std::string::npos) << there.out.dump();
  std::this_thread::sleep_for(std::chrono::seconds(1));  // a cancel would have been seen within 100 ms
  ExpectBothKeepTheirState(vm, "postcopy-paused");

  relay_->Heal();
  RecoverAfterHeal(vm);
  ExpectArrivedIntact(vm);
}

// Soak run 182: `vm stop` of a source paused in post-copy recovery stopped
// the VM but not its job, which re-dialed for minutes, and a new VM of the
// same name found `migrate --recover` answering for that job. Now the job
// ends first; the destination keeps its copy (nothing is freed there).
TEST_F(RecoverFixture, StoppingAPausedSourceEndsItsMigrationJob) {
  const std::string vm = "rs";
  MigrateIntoPostcopy(vm, kShortPostcopy);
  ASSERT_FALSE(HasFailure());
  CutAndExpectBothPaused(vm);
  ASSERT_FALSE(HasFailure());
  const auto t0 = Clock::now();
  auto stop = a_->Call("vm.stop", {{"name", vm}});
  ASSERT_TRUE(stop.ok()) << stop.status().ToString();
  ASSERT_EQ(pending_.wait_for(std::chrono::seconds(10)), std::future_status::ready) << "the job outlived vm stop";
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(10));
  auto r = pending_.get();
  const std::string report = r.ok() ? r->dump() : r.status().ToString();
  EXPECT_NE(report.find("recovery given up"), std::string::npos) << report;
  // A new VM of that name has no paused migration to recover.
  ASSERT_TRUE(a_->Call("vm.start", VmArgs(vm, 256, "memverify", {{"size_mib", "32"}})).ok());
  auto rec = a_->Call("vm.migrate_recover", {{"name", vm}});
  EXPECT_FALSE(rec.ok()) << rec->dump();
  EXPECT_TRUE(a_->Call("vm.stop", {{"name", vm}}).ok());
  // The destination keeps its copy, waiting for pages (the operator's call).
  EXPECT_EQ(MigrationStatus(*b_, vm).value("status", ""), "postcopy-paused") << MigrationStatus(*b_, vm).dump();
  EXPECT_TRUE(fs::exists(b_->shm_dir() + "/" + vm));
}

// The recovery window's end (short here): the migration fails on both
// sides and nothing is freed. The source keeps its VM paused and fenced with
// all its RAM, the destination keeps its copy running; neither is complete.
class RecoverWindowTest : public RecoverFixture {
 protected:
  // Long enough for both sides to be seen paused (the destination notices
  // last, after --migrate-peer-timeout-ms), short for a test.
  void SetUp() override { StartHosts(/*tls=*/false, {"--migrate-recover-window-ms", "10000"}); }
};

TEST_F(RecoverWindowTest, TheWindowsEndFreesNothingOnEitherSide) {
  const std::string vm = "rw";
  MigrateIntoPostcopy(vm, kShortPostcopy);
  ASSERT_FALSE(HasFailure());
  CutAndExpectBothPaused(vm);
  ASSERT_FALSE(HasFailure());
  ASSERT_EQ(pending_.wait_for(std::chrono::seconds(30)), std::future_status::ready) << "the window never ended";
  auto r = pending_.get();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("recovery window"), std::string::npos) << r.status().ToString();
  json src = Stat(*a_, vm);
  EXPECT_EQ(src["state"], "paused") << src.dump();
  EXPECT_TRUE(src.contains("fenced")) << src.dump();
  EXPECT_TRUE(fs::exists(a_->shm_dir() + "/" + vm)) << "the source let go of its guest RAM";
  EXPECT_EQ(a_->Call("vm.resume", {{"name", vm}}).status().code(), Code::kPermissionDenied) << "a fenced VM resumed";
  ASSERT_TRUE(WaitFor(30, [&] { return MigrationStatus(*b_, vm).value("status", "") == "failed"; }))
      << MigrationStatus(*b_, vm).dump();
  EXPECT_GT(MigrationStatus(*b_, vm).value("pages_remote", 0), 0) << MigrationStatus(*b_, vm).dump();
  EXPECT_EQ(Stat(*b_, vm)["state"], "running");
  EXPECT_TRUE(fs::exists(b_->shm_dir() + "/" + vm));
}

// Both agileds (and memd) speak only mutual TLS. The RESUME connection is
// authenticated like the first one: another valid certificate of the same
// CA cannot take the paused migration over, whatever it claims, and the
// source refuses a new address that leads to another agiled. The recovery
// then goes through a second relay (a new address) to the same destination.
class TlsRecoverTest : public RecoverFixture {
 protected:
  void SetUp() override { StartHosts(/*tls=*/true); }
  // A RESUME on a connection of its own with `creds`; the destination's
  // refusal (RESUME_ACK's message), or the connection's failure.
  Result<std::string> Resume(const std::string& host, const wire::MigResume& r) {
    AGILE_ASSIGN_OR_RETURN(auto creds, tls::Credentials::Load(pki_ + "/" + host));
    AGILE_ASSIGN_OR_RETURN(auto sec, tls::Connect({"127.0.0.1", port_b_}, creds));
    std::vector<uint8_t> f;
    wire::AppendResume(&f, r);
    AGILE_RETURN_IF_ERROR(wire::SendAll(sec.fd.get(), f.data(), f.size()));
    std::vector<uint8_t> payload;
    AGILE_ASSIGN_OR_RETURN(auto hdr, wire::ReadFrame(sec.fd.get(), wire::kMigMagic, wire::kMigVersion,
                                                     wire::kMigMaxPayload, &payload));
    if (hdr.type != static_cast<uint16_t>(wire::MigMsg::kResumeAck))
      return Internal(std::string("expected RESUME_ACK, got ") + wire::MigMsgName(hdr.type));
    AGILE_ASSIGN_OR_RETURN(auto ack, wire::DecodeResumeAck(payload));
    if (ack.status != 1) return Internal("RESUME not refused: status " + std::to_string(ack.status));
    return ack.message;
  }
};

TEST_F(TlsRecoverTest, ResumeIsReauthenticatedAndRecoversThroughANewAddress) {
  const std::string vm = "rt";
  MigrateIntoPostcopy(vm, kShortPostcopy);
  ASSERT_FALSE(HasFailure());
  CutAndExpectBothPaused(vm);
  ASSERT_FALSE(HasFailure());

  // c's certificate claiming to be the source, then as itself; the source's
  // own certificate without the migration's 128-bit id.
  auto forged = Resume("rtls-c", {vm, "rtls-a", 1, 2});
  ASSERT_TRUE(forged.ok()) << forged.status().ToString();
  EXPECT_NE(forged->find("certificate names 'rtls-c'"), std::string::npos) << *forged;
  auto other = Resume("rtls-c", {vm, "rtls-c", 1, 2});
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  EXPECT_NE(other->find("came from host 'rtls-a', not 'rtls-c'"), std::string::npos) << *other;
  auto guess = Resume("rtls-a", {vm, "rtls-a", 1, 2});
  ASSERT_TRUE(guess.ok()) << guess.status().ToString();
  EXPECT_NE(guess->find("another migration"), std::string::npos) << *guess;

  // `--recover --to` an address where another agiled answers (valid
  // certificate, another name): refused at the source before any RESUME.
  CliResult wrong = Agilectl(*a_, {"migrate", "--recover", vm, "--to", Loopback(port_c_)});
  EXPECT_NE(wrong.exit, 0) << wrong.out.dump();
  EXPECT_NE(wrong.out.dump().find("is 'rtls-c', but the VM switched over to 'rtls-b'"), std::string::npos)
      << wrong.out.dump();
  ExpectBothKeepTheirState(vm, "postcopy-paused");

  // A new way to the same destination: the first relay stays frozen.
  const uint16_t port_r2 = FreeTcpPort();
  Relay second(port_r2, port_b_);
  CliResult rec = Agilectl(*a_, {"migrate", "--recover", vm, "--to", Loopback(port_r2)});
  EXPECT_EQ(rec.exit, 0) << rec.out.dump();
  EXPECT_TRUE(rec.out.value("recovered", false)) << rec.out.dump();
  json report = ExpectArrivedIntact(vm);
  EXPECT_EQ(report.value("destination", ""), Loopback(port_r2)) << report.dump();
  EXPECT_EQ(report.value("qemu-stream", ""), "tls") << report.dump();
}

}  // namespace
}  // namespace agile::testing
