#include "agilectl/exit_codes.h"

#include <gtest/gtest.h>

namespace agile::agilectl {
namespace {

Failure FromAgiled(Code c, const std::string& op, const std::string& msg = "m") {
  return {Origin::kAgiled, Status(c, msg), op, nullptr};
}

TEST(ExitCodesTest, EachOutcomeHasItsOwnCode) {
  EXPECT_EQ(ExitCode({Origin::kUsage, InvalidArgument("--memory: bad size"), "", nullptr}), 2);
  EXPECT_EQ(ExitCode({Origin::kConnection, Status(Code::kUnavailable, "connect: refused"), "vm.stat", nullptr}), 3);
  EXPECT_EQ(ExitCode(FromAgiled(Code::kNotFound, "vm.stat")), 4);
  EXPECT_EQ(ExitCode(FromAgiled(Code::kInvalidArgument, "vm.offload")), 5);
  EXPECT_EQ(ExitCode(FromAgiled(Code::kAlreadyExists, "vm.start")), 5);
  EXPECT_EQ(ExitCode(FromAgiled(Code::kUnsupported, "vm.wss")), 5);
  EXPECT_EQ(ExitCode(FromAgiled(Code::kUnavailable, "vm.migrate", "connect 10.0.0.2:7700: refused")), 6);
  // A cancel is known by its report's status, not by the message's words.
  Failure cancelled = FromAgiled(Code::kUnavailable, "vm.migrate", "unavailable: stopped");
  cancelled.report = {{"status", "cancelled"}};
  EXPECT_EQ(ExitCode(cancelled), 7);
  EXPECT_EQ(ExitCode(FromAgiled(Code::kUnavailable, "vm.migrate", "migration cancelled by the operator")), 6);
  cancelled.op = "vm.migrate_status";
  EXPECT_EQ(ExitCode(cancelled), 7);
  EXPECT_EQ(ExitCode(FromAgiled(Code::kUnavailable, "vm.offload", "memd unreachable")), 1);
  EXPECT_EQ(ExitCode(FromAgiled(Code::kInternal, "vm.start")), 1);
  // A migration agiled refuses before it starts is not a failed migration.
  EXPECT_EQ(ExitCode(FromAgiled(Code::kNotFound, "vm.migrate")), 4);
  EXPECT_EQ(ExitCode(FromAgiled(Code::kInvalidArgument, "vm.migrate")), 5);
}

TEST(ExitCodesTest, FailureJsonCarriesCodeMessageAndProgress) {
  Failure f = FromAgiled(Code::kUnavailable, "vm.migrate", "destination died (the VM keeps running on this host)");
  f.progress = {{"phase", "precopy"}, {"round", 2}};
  auto j = FailureJson(f);
  EXPECT_EQ(j["status"], "failed");
  EXPECT_EQ(j["exit_code"], 6);
  EXPECT_EQ(j["error"]["code"], "migration-failed");
  EXPECT_EQ(j["error"]["agiled_code"], "unavailable");
  EXPECT_EQ(j["error"]["message"], "destination died (the VM keeps running on this host)");
  EXPECT_EQ(j["progress"]["round"], 2);

  auto u = FailureJson({Origin::kConnection, Status(Code::kUnavailable, "no socket"), "vm.list", nullptr});
  EXPECT_EQ(u["error"]["code"], "unreachable");
  EXPECT_FALSE(u["error"].contains("agiled_code"));
  EXPECT_FALSE(u.contains("progress"));
  EXPECT_EQ(FailureJson(FromAgiled(Code::kNotFound, "vm.stat"))["error"]["code"], "not-found");
}

TEST(ExitCodesTest, FailedMigrationJsonCarriesTheReport) {
  Failure f = FromAgiled(Code::kUnavailable, "vm.migrate", "unavailable: cancelled (the VM keeps running on this host)");
  f.report = {{"status", "cancelled"}, {"error", "x"}, {"total-time", 12.5}, {"ram", {{"transferred", 4096}}}};
  auto j = FailureJson(f);
  EXPECT_EQ(j["status"], "cancelled");
  EXPECT_EQ(j["exit_code"], 7);
  EXPECT_EQ(j["error"]["code"], "cancelled");
  EXPECT_EQ(j["total-time"], 12.5);
  EXPECT_EQ(j["ram"]["transferred"], 4096);
  f.report["status"] = "failed";
  j = FailureJson(f);
  EXPECT_EQ(j["status"], "failed");
  EXPECT_EQ(j["exit_code"], 6);
}

TEST(ExitCodesTest, TableNamesEveryCode) {
  std::string t = ExitTable();
  for (int c = 0; c <= 7; ++c) EXPECT_NE(t.find("  " + std::to_string(c) + "  "), std::string::npos) << c;
}

}  // namespace
}  // namespace agile::agilectl
