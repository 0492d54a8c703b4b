// SetUpMigration against a real QEMU (no guest: -machine none, paused): a QEMU
// that already carries another mode's capabilities and parameters - what a
// VM that migrated before keeps - is set up for each mode with nothing left
// over (docs/reliability.md, finding 3: postcopy-ram left on by a failed
// qemu-postcopy made the next qemu-precopy-tuned fail at the destination).
#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>

#include "base/process.h"
#include "migrate/qemu_control.h"
#include "migrate/testing/stand_in_vm.h"
#include "qemu/qmp.h"

namespace agile::migrate {
namespace {
using nlohmann::json;
using wire::MigMode;

// Only Qmp is used by SetUpMigration; the rest is not reached.
class QmpOnlyVm : public testing::StandInVm {
 public:
  explicit QmpOnlyVm(qemu::QmpClient qmp) : qmp_(std::move(qmp)) {}
  Result<json> Qmp(const std::string& cmd, const json& args) override { return qmp_.Execute(cmd, args); }

 private:
  qemu::QmpClient qmp_;
};

class QemuSetupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = "/tmp/agile-qemu-setup-" + std::to_string(::getpid());
    std::filesystem::create_directories(dir_);
    std::string sock = dir_ + "/qmp.sock";
    SpawnOptions o;
    o.argv = {"/usr/bin/qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none", "-S",
              "-qmp", "unix:" + sock + ",server=on,wait=off"};
    auto p = Spawn(o);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    qemu_ = std::move(p).value();
    auto qmp = qemu::QmpClient::Connect(sock, 15000);
    ASSERT_TRUE(qmp.ok()) << qmp.status().ToString();
    vm_ = std::make_unique<QmpOnlyVm>(std::move(qmp).value());
  }
  void TearDown() override {
    vm_.reset();
    if (qemu_.running()) {
      (void)qemu_.Signal(SIGKILL);
      qemu_.Wait(5000);
    }
    std::filesystem::remove_all(dir_);
  }
  json Capabilities() {
    auto r = vm_->Qmp("query-migrate-capabilities", nullptr);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    json out = json::object();
    if (r.ok())
      for (const auto& c : *r) out[c["capability"].get<std::string>()] = c["state"];
    return out;
  }
  json Parameters() {
    auto r = vm_->Qmp("query-migrate-parameters", nullptr);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : json::object();
  }
  // What a previous migration of another mode leaves behind: post-copy's
  // capabilities, or the tuned pre-copy's with an agile mode's x-ignore-shared
  // (QEMU 7.2 refuses post-copy together with multifd or x-ignore-shared).
  void Dirty(bool postcopy) {
    json caps = {{"x-ignore-shared", !postcopy},
                 {"postcopy-ram", postcopy},
                 {"auto-converge", !postcopy},
                 {"multifd", !postcopy}};
    Status s = SetCapabilities(vm_.get(), caps);
    ASSERT_TRUE(s.ok()) << s.ToString();
    auto p = vm_->Qmp("migrate-set-parameters", {{"max-bandwidth", 4096},
                                                 {"max-postcopy-bandwidth", 4096},
                                                 {"downtime-limit", 7},
                                                 {"multifd-channels", 5}});
    ASSERT_TRUE(p.ok()) << p.status().ToString();
  }

  std::string dir_;
  Process qemu_;
  std::unique_ptr<QmpOnlyVm> vm_;
};

TEST_F(QemuSetupTest, EveryModeClearsWhatAnotherModeLeftSet) {
  for (MigMode m : {MigMode::kAgile, MigMode::kPrecopy, MigMode::kPostcopy, MigMode::kQemuPrecopy,
                    MigMode::kQemuPostcopy, MigMode::kQemuPrecopyTuned, MigMode::kQemuHybrid})
  for (bool postcopy_before : {true, false}) {
    SCOPED_TRACE(std::string(wire::MigModeName(m)) + (postcopy_before ? " after post-copy" : " after tuned"));
    Dirty(postcopy_before);
    Status st = SetUpMigration(vm_.get(), m);
    ASSERT_TRUE(st.ok()) << st.ToString();
    json caps = Capabilities();
    const bool qemu = wire::IsQemuMode(m);
    EXPECT_EQ(caps["x-ignore-shared"], !qemu);
    EXPECT_EQ(caps["postcopy-ram"], m == MigMode::kQemuPostcopy || m == MigMode::kQemuHybrid);
    EXPECT_EQ(caps["multifd"], m == MigMode::kQemuPrecopyTuned);
    EXPECT_EQ(caps["auto-converge"], m == MigMode::kQemuPrecopyTuned);
    json params = Parameters();
    EXPECT_EQ(params["max-bandwidth"], kQemuDefaultMaxBandwidth);
    EXPECT_EQ(params["max-postcopy-bandwidth"], 0);
    EXPECT_EQ(params["downtime-limit"], kQemuDefaultDowntimeMs);
    EXPECT_EQ(params["multifd-channels"], kMultifdChannels);
  }
}

TEST_F(QemuSetupTest, ABandwidthCapIsSetForBothPhasesAndDroppedNextTime) {
  ASSERT_TRUE(SetUpMigration(vm_.get(), MigMode::kQemuPostcopy, 50, 1 << 20).ok());
  EXPECT_EQ(Parameters()["max-bandwidth"], 1 << 20);
  EXPECT_EQ(Parameters()["max-postcopy-bandwidth"], 1 << 20);
  EXPECT_EQ(Parameters()["downtime-limit"], 50);
  ASSERT_TRUE(SetUpMigration(vm_.get(), MigMode::kQemuPrecopy).ok());
  EXPECT_EQ(Parameters()["max-bandwidth"], kQemuDefaultMaxBandwidth);
  EXPECT_EQ(Parameters()["max-postcopy-bandwidth"], 0);
}

}  // namespace
}  // namespace agile::migrate
