// The VM record a restarted agiled adopts from (host/vm_record.h): round trip,
// a writer killed with SIGKILL in mid-replace leaving the old or the new
// record and never a mix, and every damaged form refused as Corruption.
#include "host/vm_record.h"
#include "base/testing/scratch_dir.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include <filesystem>
#include <fstream>

namespace agile::host {
namespace {

VmRecord Sample(uint64_t gen) {
  VmRecord r;
  r.spec.name = "vm1";
  r.spec.memory_bytes = 512ull << 20;
  r.spec.workload = "memverify";
  r.pid = 4242;
  r.pid_start_ticks = gen;
  r.store_vm_id = "vm1-4242-17";
  r.store_owned = true;
  r.token_epoch = 3;
  r.token_secret = 0xDEADBEEFCAFEF00DULL;
  r.token_secret_hi = gen * 7;
  return r;
}

class VmRecordTest : public ::testing::Test {
 protected:
  ScratchDir scratch_{"agile-vmrec"};
  const std::string dir_ = scratch_.path();
};

TEST_F(VmRecordTest, RoundTrip) {
  EXPECT_EQ(ReadVmRecord(dir_).status().code(), Code::kNotFound);
  ASSERT_TRUE(WriteVmRecord(dir_, Sample(9)).ok());
  auto r = ReadVmRecord(dir_);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->spec.name, "vm1");
  EXPECT_EQ(r->spec.memory_bytes, 512ull << 20);
  EXPECT_EQ(r->pid, 4242);
  EXPECT_EQ(r->pid_start_ticks, 9u);
  EXPECT_EQ(r->store_vm_id, "vm1-4242-17");
  EXPECT_TRUE(r->store_owned);
  EXPECT_EQ(r->token_secret, 0xDEADBEEFCAFEF00DULL);
  EXPECT_EQ(r->token_secret_hi, 63u);
  EXPECT_FALSE(r->incoming);
  EXPECT_FALSE(r->unconfirmed);
  VmRecord arrived = Sample(10);
  arrived.unconfirmed = true;
  ASSERT_TRUE(WriteVmRecord(dir_, arrived).ok());
  r = ReadVmRecord(dir_);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->unconfirmed);
}

// The writer replaces the record as fast as it can and is killed at a random
// moment, many times: each time the record read back is whole and is one the
// writer wrote (generation within what it reached).
TEST_F(VmRecordTest, AWriterKilledMidReplaceLeavesAWholeRecord) {
  ASSERT_TRUE(WriteVmRecord(dir_, Sample(1)).ok());
  for (int round = 0; round < 20; ++round) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      for (uint64_t gen = 2;; ++gen)
        if (!WriteVmRecord(dir_, Sample(gen)).ok()) ::_exit(3);
    }
    ::usleep(2000 + 1500 * (round % 7));
    ::kill(pid, SIGKILL);
    int st = 0;
    ::waitpid(pid, &st, 0);
    ASSERT_TRUE(WIFSIGNALED(st)) << "writer failed on its own (status " << st << ")";
    auto r = ReadVmRecord(dir_);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->token_secret_hi, r->pid_start_ticks * 7);  // never a mix of two writes
  }
}

TEST_F(VmRecordTest, DamagedRecordsAreCorruption) {
  std::string good = EncodeVmRecord(Sample(5));
  ASSERT_TRUE(DecodeVmRecord(good).ok());
  auto expect_corrupt = [](const std::string& bytes, const char* what) {
    auto r = DecodeVmRecord(bytes);
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_EQ(r.status().code(), Code::kCorruption) << what << ": " << r.status().ToString();
  };
  // Every single flipped byte, header or body, is caught.
  for (size_t i = 0; i < good.size(); ++i) {
    std::string b = good;
    b[i] ^= 0x01;
    auto r = DecodeVmRecord(b);
    EXPECT_FALSE(r.ok()) << "flip at " << i;
  }
  expect_corrupt(good.substr(0, good.size() - 1), "torn: one byte short");
  expect_corrupt(good.substr(0, good.find('\n') + 1), "torn: header only");
  expect_corrupt("", "empty");
  expect_corrupt(good + "x", "trailing byte");
  // A body whose checksum is right but that is not a record.
  std::string body = "[1,2]";
  char head[64];
  std::snprintf(head, sizeof(head), "AGVMREC1 %016llx %zu\n",
                static_cast<unsigned long long>(XXH3_64bits(body.data(), body.size())), body.size());
  expect_corrupt(std::string(head) + body, "checksummed non-record");

  // On disk: a damaged file is Corruption, a leftover .tmp is ignored.
  ASSERT_TRUE(WriteVmRecord(dir_, Sample(5)).ok());
  std::ofstream(dir_ + "/vm.record.tmp") << "AGVMREC1 half";
  ASSERT_TRUE(ReadVmRecord(dir_).ok());
  std::ofstream(dir_ + "/vm.record", std::ios::trunc) << good.substr(0, 30);
  EXPECT_EQ(ReadVmRecord(dir_).status().code(), Code::kCorruption);
}

TEST_F(VmRecordTest, ProcessStartTicksTellsAProcessFromAReusedPid) {
  auto self = ProcessStartTicks(::getpid());
  ASSERT_TRUE(self.ok()) << self.status().ToString();
  EXPECT_GT(*self, 0u);
  EXPECT_EQ(*ProcessStartTicks(::getpid()), *self);
  pid_t child = ::fork();
  if (child == 0) {
    ::usleep(20000);
    ::_exit(0);
  }
  auto c = ProcessStartTicks(child);
  ASSERT_TRUE(c.ok());
  EXPECT_GE(*c, *self);
  ::waitpid(child, nullptr, 0);
  EXPECT_EQ(ProcessStartTicks(child).status().code(), Code::kNotFound);
}

}  // namespace
}  // namespace agile::host
