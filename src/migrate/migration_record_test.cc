// The migration record a restarted agiled resumes a post-copy from
// (migrate/migration_record.h): round trip of both roles with the remote
// bitmap, a writer killed with SIGKILL in mid-replace leaving a whole record,
// every torn length and flipped byte refused, and a checksummed body whose
// fields do not add up refused too.
#include "migrate/migration_record.h"
#include "base/testing/scratch_dir.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace agile::migrate {
namespace {

MigrationRecord Destination(uint64_t gen) {
  MigrationRecord r;
  r.vm = "vm1";
  r.role = MigrationRecord::Role::kDestination;
  r.mode = wire::MigMode::kAgile;
  r.tail = true;
  r.id_lo = 0x0123456789ABCDEFULL;
  r.id_hi = gen;
  r.peer_host = "hostA";
  r.store_vm_id = "vm1-77-3";
  r.pages = 1003;  // not a multiple of 8: the last bitmap byte is partial
  r.remote.assign(r.pages, 0);
  for (uint64_t i = 0; i < r.pages; i += 3) r.remote[i] = 1;
  r.remote[r.pages - 1] = 1;
  r.remote[gen % r.pages] = 1;
  return r;
}

MigrationRecord Source() {
  MigrationRecord r;
  r.vm = "vm1";
  r.role = MigrationRecord::Role::kSource;
  r.mode = wire::MigMode::kPostcopy;
  r.id_lo = 1;
  r.id_hi = 2;
  r.peer_host = "hostB";
  r.peer_addr = "127.0.0.1:7700";
  r.lease = true;
  r.recover = false;
  r.bandwidth = 8u << 20;
  r.pages = 4096;
  return r;
}

std::string Checksummed(const std::string& body) {
  char head[64];
  std::snprintf(head, sizeof(head), "AGMIGRC1 %016llx %zu\n",
                static_cast<unsigned long long>(XXH3_64bits(body.data(), body.size())), body.size());
  return std::string(head) + body;
}

class MigrationRecordTest : public ::testing::Test {
 protected:
  ScratchDir scratch_{"agile-migrec"};
  const std::string dir_ = scratch_.path();
};

TEST_F(MigrationRecordTest, RoundTripOfBothRoles) {
  EXPECT_EQ(ReadMigrationRecord(dir_).status().code(), Code::kNotFound);
  const MigrationRecord d = Destination(9);
  ASSERT_TRUE(WriteMigrationRecord(dir_, d).ok());
  auto r = ReadMigrationRecord(dir_);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->vm, "vm1");
  EXPECT_EQ(r->role, MigrationRecord::Role::kDestination);
  EXPECT_EQ(r->mode, wire::MigMode::kAgile);
  EXPECT_TRUE(r->tail);
  EXPECT_EQ(r->id_lo, d.id_lo);
  EXPECT_EQ(r->id_hi, 9u);
  EXPECT_EQ(r->peer_host, "hostA");
  EXPECT_EQ(r->store_vm_id, "vm1-77-3");
  EXPECT_EQ(r->pages, 1003u);
  EXPECT_EQ(r->remote, d.remote);  // every page's bit, the partial last byte included
  EXPECT_FALSE(r->resume);
  MigrationRecord resumed = d;
  resumed.resume = true;
  ASSERT_TRUE(WriteMigrationRecord(dir_, resumed).ok());
  r = ReadMigrationRecord(dir_);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->resume);

  ASSERT_TRUE(WriteMigrationRecord(dir_, Source()).ok());
  r = ReadMigrationRecord(dir_);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->role, MigrationRecord::Role::kSource);
  EXPECT_EQ(r->mode, wire::MigMode::kPostcopy);
  EXPECT_EQ(r->peer_addr, "127.0.0.1:7700");
  EXPECT_TRUE(r->lease);
  EXPECT_FALSE(r->recover);
  EXPECT_EQ(r->bandwidth, 8u << 20);
  EXPECT_TRUE(r->remote.empty());
  EXPECT_FALSE(r->resume);  // the source's VM was paused when it migrated: taken back, it stays paused
  // A source's record from before "resume" was kept: its VM ran (every
  // migration of a paused VM came later).
  const std::string encoded = EncodeMigrationRecord(Source());
  auto body = nlohmann::json::parse(encoded.substr(encoded.find('\n') + 1));
  ASSERT_EQ(body.erase("resume"), 1u);
  std::ofstream(dir_ + "/migration.record", std::ios::trunc) << Checksummed(body.dump());
  r = ReadMigrationRecord(dir_);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->resume);

  ASSERT_TRUE(RemoveMigrationRecord(dir_).ok());
  EXPECT_EQ(ReadMigrationRecord(dir_).status().code(), Code::kNotFound);
  EXPECT_TRUE(RemoveMigrationRecord(dir_).ok());  // idempotent
}

// The writer replaces the record as fast as it can and is killed at a random
// moment, many times: each time the record read back is whole and one the
// writer wrote (its bitmap matches its generation).
TEST_F(MigrationRecordTest, AWriterKilledMidReplaceLeavesAWholeRecord) {
  ASSERT_TRUE(WriteMigrationRecord(dir_, Destination(1)).ok());
  for (int round = 0; round < 20; ++round) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      for (uint64_t gen = 2;; ++gen)
        if (!WriteMigrationRecord(dir_, Destination(gen)).ok()) ::_exit(3);
    }
    ::usleep(2000 + 1500 * (round % 7));
    ::kill(pid, SIGKILL);
    int st = 0;
    ::waitpid(pid, &st, 0);
    ASSERT_TRUE(WIFSIGNALED(st)) << "writer failed on its own (status " << st << ")";
    auto r = ReadMigrationRecord(dir_);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->remote, Destination(r->id_hi).remote) << "a mix of two writes";
  }
}

TEST_F(MigrationRecordTest, DamagedRecordsAreCorruption) {
  const std::string good = EncodeMigrationRecord(Destination(5));
  ASSERT_TRUE(DecodeMigrationRecord(good).ok());
  auto expect_corrupt = [](const std::string& bytes, const std::string& what) {
    auto r = DecodeMigrationRecord(bytes);
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_EQ(r.status().code(), Code::kCorruption) << what << ": " << r.status().ToString();
  };
  for (size_t i = 0; i < good.size(); ++i) {
    std::string b = good;
    b[i] ^= 0x01;
    expect_corrupt(b, "flip at " + std::to_string(i));
  }
  // Every torn length, down to nothing.
  for (size_t n = 0; n < good.size(); ++n) expect_corrupt(good.substr(0, n), "torn at " + std::to_string(n));
  expect_corrupt(good + "x", "trailing byte");
  expect_corrupt(Checksummed("[1,2]"), "checksummed non-record");
  // Checksummed bodies whose fields do not add up.
  auto j = nlohmann::json::parse(good.substr(good.find('\n') + 1));
  auto with = [&](const char* key, nlohmann::json v) {
    auto k = j;
    k[key] = std::move(v);
    return Checksummed(k.dump());
  };
  expect_corrupt(with("role", "bystander"), "unknown role");
  expect_corrupt(with("mode", "teleport"), "unknown mode");
  expect_corrupt(with("pages", 1100), "bitmap shorter than the pages");
  expect_corrupt(with("pages", 900), "bitmap longer than the pages");
  expect_corrupt(with("remote", std::string(j["remote"]).substr(2) + "zz"), "bitmap not hex");
  expect_corrupt(with("remote", std::string(j["remote"]).substr(0, 250) + "ff"), "bits past the last page");
  expect_corrupt(with("id", nlohmann::json::array({1})), "short migration id");
  expect_corrupt(with("vm", ""), "no VM name");
  auto k = j;
  k.erase("recover");
  expect_corrupt(Checksummed(k.dump()), "missing field");

  // On disk: a damaged file is Corruption, a leftover .tmp is ignored.
  ASSERT_TRUE(WriteMigrationRecord(dir_, Destination(5)).ok());
  std::ofstream(dir_ + "/migration.record.tmp") << "AGMIGRC1 half";
  ASSERT_TRUE(ReadMigrationRecord(dir_).ok());
  std::ofstream(dir_ + "/migration.record", std::ios::trunc) << good.substr(0, 30);
  EXPECT_EQ(ReadMigrationRecord(dir_).status().code(), Code::kCorruption);
}

}  // namespace
}  // namespace agile::migrate
