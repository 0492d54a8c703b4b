// Live migration between two real agileds (and a memd) on this machine, with
// real VMs whose own integrity checker watches every migrated page.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <future>
#include <thread>

#include "agiled_fixture.h"

namespace agile::testing {
namespace {
using nlohmann::json;
namespace fs = std::filesystem;

class MigrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = MemdProcess::Start();
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    memd_ = std::move(m).value();
    port_a_ = FreeTcpPort();
    port_b_ = FreeTcpPort();
    auto a = AgiledProcess::Start("mig-a", {"--listen", Addr(port_a_), "--memd", memd_->addr()});
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    a_ = std::move(a).value();
    StartB();
  }
  void StartB(std::vector<std::string> extra = {}) {
    std::vector<std::string> flags = {"--listen", Addr(port_b_), "--memd", memd_->addr()};
    flags.insert(flags.end(), extra.begin(), extra.end());
    auto b = AgiledProcess::Start("mig-b", flags);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    b_ = std::move(b).value();
  }
  static std::string Addr(uint16_t port) { return "127.0.0.1:" + std::to_string(port); }

  json Stat(AgiledProcess& d, const std::string& vm) {
    auto s = d.Call("vm.stat", {{"name", vm}});
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? *s : json::object();
  }
  void StartVm(AgiledProcess& d, const std::string& vm, const std::string& workload,
               const std::map<std::string, std::string>& wargs) {
    auto r = d.Call("vm.start", VmArgs(vm, 512, workload, wargs));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_TRUE(WaitFor(90, [&] {
      auto s = d.Call("vm.stat", {{"name", vm}});
      return s.ok() && (*s)["guest"].value("gen", 0) + (*s)["guest"].value("ops/s", 0) > 0;
    })) << "workload never reported";
  }
  Result<json> Migrate(AgiledProcess& from, uint16_t to_port, const std::string& vm, const std::string& mode,
                       json extra = json::object()) {
    json args = {{"name", vm}, {"to", Addr(to_port)}, {"mode", mode}};
    args.update(extra);
    return from.Call("vm.migrate", args);
  }
  // The guest's integrity checker stays clean and keeps working for `secs`.
  void ExpectIntact(AgiledProcess& d, const std::string& vm, int secs) {
    // A migrated VM's console log starts afresh at the destination.
    ASSERT_TRUE(WaitFor(30, [&] { return Stat(d, vm)["guest"].contains("errors"); })) << "guest silent";
    uint64_t gen0 = Stat(d, vm)["guest"].value("gen", 0ull);
    for (int i = 0; i < secs; i += 2) {
      json s = Stat(d, vm);
      ASSERT_EQ(s["state"], "running");
      ASSERT_EQ(s["guest"]["errors"], 0) << s["guest"].dump();
      ASSERT_EQ(s["guest"]["bad_page_lines"], 0);
      std::this_thread::sleep_for(std::chrono::seconds(2));
    }
    EXPECT_GT(Stat(d, vm)["guest"].value("gen", 0ull), gen0) << "the guest stopped making progress";
  }
  void ExpectGoneFrom(AgiledProcess& d, const std::string& vm) {
    EXPECT_EQ(d.Call("vm.stat", {{"name", vm}}).status().code(), Code::kNotFound);
    EXPECT_FALSE(fs::exists(d.shm_dir() + "/" + vm)) << "guest RAM left at the source";
  }

  std::unique_ptr<MemdProcess> memd_;
  std::unique_ptr<AgiledProcess> a_, b_;
  uint16_t port_a_ = 0, port_b_ = 0;
};

class RoundTrip : public MigrationTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(RoundTrip, MemverifyThereAndBackIntact) {
  const std::string mode = GetParam();
  StartVm(*a_, "mv", "memverify", {{"size_mib", "256"}, {"rate", "500"}});
  auto r = Migrate(*a_, port_b_, "mv", mode);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  for (const char* k : {"mode", "total_time_ms", "switchover_ms", "downtime_ms", "bytes_sent", "rounds",
                        "pages_precopied", "pages_postcopied", "pages_from_store"})
    EXPECT_TRUE(r->contains(k)) << k;
  EXPECT_EQ((*r)["mode"], mode);
  EXPECT_TRUE((*r)["ok"].get<bool>());
  EXPECT_LE((*r)["switchover_ms"].get<double>(), (*r)["total_time_ms"].get<double>());
  if (mode == "postcopy") EXPECT_GT((*r)["pages_postcopied"].get<uint64_t>(), 0u);
  else EXPECT_GT((*r)["pages_precopied"].get<uint64_t>(), (256ull << 20) / 4096 / 2);
  ExpectGoneFrom(*a_, "mv");
  ExpectIntact(*b_, "mv", 8);

  auto back = Migrate(*b_, port_a_, "mv", mode);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ExpectGoneFrom(*b_, "mv");
  ExpectIntact(*a_, "mv", 8);
}

INSTANTIATE_TEST_SUITE_P(Modes, RoundTrip, ::testing::Values("agile", "precopy", "postcopy"),
                         [](const auto& info) { return info.param; });

// QEMU's own modes, the baselines: a stock VM (its RAM not ours) moves with
// QEMU's migration and keeps verifying at the destination.
class QemuBaseline : public MigrationTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(QemuBaseline, StockVmMigratesIntact) {
  const std::string mode = GetParam();
  json args = VmArgs("sv", 512, "memverify", {{"size_mib", "256"}, {"rate", "500"}});
  args["stock"] = true;
  auto started = a_->Call("vm.start", args);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  ASSERT_TRUE(WaitFor(90, [&] { return Stat(*a_, "sv")["guest"].value("gen", 0) > 0; })) << "workload never reported";
  auto r = Migrate(*a_, port_b_, "sv", mode);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)["mode"], mode);
  EXPECT_GT((*r)["bytes_sent"].get<uint64_t>(), 64ull << 20) << "QEMU moved the RAM";
  if (mode == "qemu-postcopy") {
    EXPECT_GT((*r)["pages_postcopied"].get<uint64_t>(), 0u);
  }
  EXPECT_EQ(a_->Call("vm.stat", {{"name", "sv"}}).status().code(), Code::kNotFound);
  ExpectIntact(*b_, "sv", 8);
}

INSTANTIATE_TEST_SUITE_P(Modes, QemuBaseline,
                         ::testing::Values("qemu-precopy", "qemu-postcopy", "qemu-precopy-tuned", "qemu-hybrid"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) c = c == '-' ? '_' : c;
                           return n;
                         });

TEST_F(MigrationTest, AgileMovesOnlyTheResidentSetAndFreesTheSourceAtOnce) {
  StartVm(*a_, "mv", "memverify", {{"size_mib", "384"}, {"rate", "300"}});
  auto off = a_->Call("vm.offload", {{"name", "mv"}, {"resident_bytes", 128ull << 20}});
  ASSERT_TRUE(off.ok()) << off.status().ToString();
  json before = Stat(*a_, "mv");
  uint64_t offloaded = before["pages"]["offloaded"];
  ASSERT_GT(offloaded, (200ull << 20) / 4096);

  auto r = Migrate(*a_, port_b_, "mv", "agile");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  // Cold pages stayed in the store; only about the resident set moved.
  EXPECT_GT((*r)["pages_from_store"].get<uint64_t>(), offloaded / 2);
  EXPECT_LT((*r)["pages_precopied"].get<uint64_t>(), (384ull << 20) / 4096 - offloaded / 2);
  EXPECT_EQ((*r)["pages_postcopied"], 0);
  // The source holds nothing of the VM once the call returns, and total time
  // ends right after switchover.
  ExpectGoneFrom(*a_, "mv");
  EXPECT_LT((*r)["total_time_ms"].get<double>() - (*r)["switchover_ms"].get<double>(), 2000);
  ExpectIntact(*b_, "mv", 10);
  EXPECT_GT(Stat(*b_, "mv")["faults"]["refault"].get<uint64_t>(), 0u) << "cold pages never came from the store";
}

TEST_F(MigrationTest, AgilePostcopiesTheDirtyRemainderWhenPrecopyCannotConverge) {
  // The guest rewrites ~8000 pages/s of 32K while the link moves ~6400 pages/s:
  // pre-copy cannot converge, so agile switches over after the first round
  // and pulls the pages written since from the source.
  StartVm(*a_, "mv", "memverify", {{"size_mib", "128"}, {"rate", "8000"}});
  // Some cold pages in the store too: they must come from there, the tail from the source.
  ASSERT_TRUE(a_->Call("vm.offload", {{"name", "mv"}, {"resident_bytes", 200ull << 20}}).ok());
  auto r = Migrate(*a_, port_b_, "mv", "agile", {{"bandwidth", 25ull << 20}, {"max_downtime_ms", 100}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::printf("with tail: %s\n", r->dump().c_str());
  EXPECT_EQ((*r)["converged"], false) << r->dump();
  EXPECT_GT((*r)["pages_postcopied"].get<uint64_t>(), 1000u) << r->dump();
  EXPECT_LE((*r)["rounds"].get<uint32_t>(), 2u) << r->dump();
  EXPECT_GT((*r)["pages_from_store"].get<uint64_t>(), 0u) << r->dump();
  ExpectGoneFrom(*a_, "mv");
  ExpectIntact(*b_, "mv", 8);

  // --no-tail: the same guest goes back by stop-and-copy; nothing is pulled
  // from the source after switchover.
  auto back = Migrate(*b_, port_a_, "mv", "agile",
                      {{"bandwidth", 25ull << 20}, {"max_downtime_ms", 100}, {"postcopy_tail", false}});
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  std::printf("no tail:   %s\n", back->dump().c_str());
  EXPECT_EQ((*back)["pages_postcopied"], 0) << back->dump();
  ExpectGoneFrom(*b_, "mv");
  ExpectIntact(*a_, "mv", 8);
  EXPECT_EQ(a_->Call("vm.migrate", {{"name", "mv"}, {"to", Addr(port_b_)}, {"postcopy_tail", "yes"}}).status().code(),
            Code::kInvalidArgument);
}

TEST_F(MigrationTest, MemtouchMigratesUnderLoad) {
  StartVm(*a_, "mt", "memtouch", {{"size_mib", "256"}, {"hot_mib", "48"}, {"write_pct", "50"}});
  auto r = Migrate(*a_, port_b_, "mt", "agile", {{"max_downtime_ms", 200}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(WaitFor(20, [&] {
    json s = Stat(*b_, "mt");
    return s["state"] == "running" && s["guest"].value("ops/s", 0ull) > 1000;
  })) << "memtouch not running at the destination";
}

TEST_F(MigrationTest, DestinationCrashBeforeSwitchoverLeavesSourceRunning) {
  StartVm(*a_, "mv", "memverify", {{"size_mib", "256"}, {"rate", "500"}});
  // 16 MB/s: the first round takes long enough to kill the destination mid-way.
  auto pending = std::async(std::launch::async,
                            [&] { return Migrate(*a_, port_b_, "mv", "precopy", {{"bandwidth", 16ull << 20}}); });
  ASSERT_TRUE(WaitFor(30, [&] { return Stat(*a_, "mv").contains("migration"); }));
  std::this_thread::sleep_for(std::chrono::seconds(2));
  (void)b_->process().Signal(SIGKILL);
  auto r = pending.get();
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("keeps running"), std::string::npos) << r.status().ToString();
  ExpectIntact(*a_, "mv", 8);
  // A fresh destination works afterwards.
  b_.reset();
  StartB();
  auto again = Migrate(*a_, port_b_, "mv", "precopy");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  ExpectIntact(*b_, "mv", 6);
}

TEST_F(MigrationTest, CancelBeforeSwitchoverLeavesSourceRunning) {
  StartVm(*a_, "mv", "memverify", {{"size_mib", "256"}, {"rate", "500"}});
  auto pending = std::async(std::launch::async,
                            [&] { return Migrate(*a_, port_b_, "mv", "agile", {{"bandwidth", 16ull << 20}}); });
  ASSERT_TRUE(WaitFor(30, [&] { return Stat(*a_, "mv").contains("migration"); }));
  ASSERT_TRUE(a_->Call("vm.migrate_cancel", {{"name", "mv"}}).ok());
  auto r = pending.get();
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("cancelled"), std::string::npos) << r.status().ToString();
  // The job's report says so in QEMU's words, to any connection.
  auto st = a_->Call("vm.migrate_status", {{"name", "mv"}});
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ((*st)["status"], "cancelled") << st->dump();
  EXPECT_FALSE((*st)["running"].get<bool>());
  ExpectIntact(*a_, "mv", 6);
  // The destination dropped its copy.
  EXPECT_TRUE(WaitFor(10, [&] { return b_->Call("vm.list")->empty(); }));
}

TEST_F(MigrationTest, JobOutlivesItsClientAndIsWatchedFromAnother) {
  StartVm(*a_, "mv", "memverify", {{"size_mib", "256"}, {"rate", "500"}});
  {
    // A client that starts the migration and goes away: the job runs on.
    auto c = control::ControlClient::Connect("unix:" + a_->socket());
    ASSERT_TRUE(c.ok());
    auto started = c->Call("vm.migrate", {{"name", "mv"}, {"to", "127.0.0.1:" + std::to_string(port_b_)},
                                          {"mode", "agile"}, {"bandwidth", 32ull << 20}, {"detach", true}});
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    EXPECT_TRUE((*started)["running"].get<bool>());
  }
  EXPECT_EQ(a_->Call("vm.migrate", {{"name", "mv"}, {"to", "127.0.0.1:" + std::to_string(port_b_)}}).status().code(),
            Code::kAlreadyExists);
  ASSERT_TRUE(WaitFor(30, [&] {
    auto st = a_->Call("vm.migrate_status", {{"name", "mv"}});
    return st.ok() && (*st).value("status", "") == "active" && (*st)["ram"]["transferred"].get<uint64_t>() > 0;
  }));
  auto done = a_->Call("vm.migrate_status", {{"name", "mv"}, {"watch", true}});
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  EXPECT_EQ((*done)["status"], "completed");
  EXPECT_GT((*done)["ram"]["transferred"].get<uint64_t>(), 0u);
  EXPECT_EQ((*done)["ram"]["total"].get<uint64_t>(), 512ull << 20);
  ExpectGoneFrom(*a_, "mv");
  ExpectIntact(*b_, "mv", 6);
  // The report stays readable after the VM left.
  auto after = a_->Call("vm.migrate_status", {{"name", "mv"}});
  ASSERT_TRUE(after.ok());
  EXPECT_EQ((*after)["status"], "completed");
}

TEST_F(MigrationTest, PausedVmArrivesByteForByteIdentical) {
  for (const char* mode : {"precopy", "postcopy"}) {
    SCOPED_TRACE(mode);
    std::string vm = std::string("p-") + mode;
    StartVm(*a_, vm, "memverify", {{"size_mib", "128"}, {"rate", "500"}});
    ASSERT_TRUE(a_->Call("vm.pause", {{"name", vm}}).ok());
    EXPECT_EQ(Stat(*a_, vm)["state"], "paused");
    std::string src = ReadFile(a_->shm_dir() + "/" + vm + "/ram");
    ASSERT_EQ(src.size(), 512ull << 20);
    auto r = Migrate(*a_, port_b_, vm, mode);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    std::string dst = ReadFile(b_->shm_dir() + "/" + vm + "/ram");
    ASSERT_EQ(dst.size(), src.size());
    size_t differing = 0;
    for (size_t p = 0; p < src.size(); p += 4096)
      if (src.compare(p, 4096, dst, p, 4096) != 0) ++differing;
    EXPECT_EQ(differing, 0u) << "pages differ between source and destination";
    // It stays paused there, then resumes intact.
    EXPECT_EQ(Stat(*b_, vm)["state"], "paused");
    ASSERT_TRUE(b_->Call("vm.resume", {{"name", vm}}).ok());
    ExpectIntact(*b_, vm, 4);
    ASSERT_TRUE(b_->Call("vm.stop", {{"name", vm}}).ok());
  }
}

// docs/reliability.md finding 3: a QEMU keeps its migration capabilities, so
// a stock VM that arrived by qemu-postcopy (its QEMU set up with postcopy-ram)
// and leaves by qemu-precopy must not carry postcopy-ram along; the
// destination refused it ("RAM postcopy is disabled but have 16 byte
// advise"). Then back by qemu-hybrid and on by qemu-precopy again.
TEST_F(MigrationTest, StockVmChangesQemuModeOnEveryHop) {
  json args = VmArgs("sv", 256, "memverify", {{"size_mib", "128"}, {"rate", "500"}});
  args["stock"] = true;
  auto started = a_->Call("vm.start", args);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  ASSERT_TRUE(WaitFor(90, [&] { return Stat(*a_, "sv")["guest"].value("gen", 0) > 0; })) << "workload never reported";
  struct Hop {
    AgiledProcess* from;
    AgiledProcess* to;
    uint16_t to_port;
    const char* mode;
  };
  for (const Hop& h : {Hop{a_.get(), b_.get(), port_b_, "qemu-postcopy"}, Hop{b_.get(), a_.get(), port_a_, "qemu-precopy"},
                       Hop{a_.get(), b_.get(), port_b_, "qemu-hybrid"}, Hop{b_.get(), a_.get(), port_a_, "qemu-precopy"}}) {
    SCOPED_TRACE(h.mode);
    auto r = Migrate(*h.from, h.to_port, "sv", h.mode);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(h.from->Call("vm.stat", {{"name", "sv"}}).status().code(), Code::kNotFound);
    ExpectIntact(*h.to, "sv", 4);
  }
}

// docs/reliability.md finding 6: the source agiled dies (kill -9) in the
// middle of a post-copy push. The destination first waits for the source to
// recover the link (status postcopy-paused, docs/migration.md "Post-copy
// recovery"); when its recovery window ends - 8 s here - its `vm stat` must
// not go on saying "postcopy" for ever but end in a terminal status naming the
// failure and the pages still missing, with the VM still listed as running.
TEST_F(MigrationTest, DestinationMigrationStatusEndsWhenTheSourceDiesAfterSwitchover) {
  b_.reset();
  StartB({"--migrate-recover-window-ms", "8000"});
  StartVm(*a_, "mv", "memverify", {{"size_mib", "256"}, {"rate", "500"}});
  // 8 MB/s: the push after the switch takes long enough to kill the source mid-way.
  auto pending = std::async(std::launch::async,
                            [&] { return Migrate(*a_, port_b_, "mv", "postcopy", {{"bandwidth", 8ull << 20}}); });
  ASSERT_TRUE(WaitFor(60, [&] {
    auto s = b_->Call("vm.stat", {{"name", "mv"}});
    return s.ok() && s->contains("migration") && (*s)["migration"].value("phase", "") == "postcopy";
  })) << "never switched over";
  a_->Kill();
  (void)pending.get();
  json m;
  ASSERT_TRUE(WaitFor(30, [&] {
    m = Stat(*b_, "mv").value("migration", json());
    return m.is_object() && m.value("phase", "") == "postcopy-paused";
  })) << "the destination never noticed the lost source: " << m.dump();
  ASSERT_TRUE(WaitFor(30, [&] {
    m = Stat(*b_, "mv").value("migration", json());
    return m.is_object() && m.value("phase", "") == "failed-after-switchover";
  })) << "the destination's migration status never ended: " << m.dump();
  EXPECT_EQ(m.value("status", ""), "failed") << m.dump();
  EXPECT_GT(m.value("pages_remote", 0ull), 0u) << m.dump();
  EXPECT_FALSE(m.value("error", "").empty()) << m.dump();
  EXPECT_EQ(Stat(*b_, "mv")["state"], "running");
}

}  // namespace
}  // namespace agile::testing
