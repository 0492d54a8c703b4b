// The group commit's steps on one namespace (PrepareSync, WriteJournal,
// FinishSync) against the journal on disk, at the moments a concurrent
// PUT or compaction could land between them.
#include "store/vm_namespace.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "base/testing/scratch_dir.h"

namespace agile::memd {
namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> Page(uint8_t fill) { return std::vector<uint8_t>(kPageSize, fill); }

VmNamespace::Options Deferred(const std::string& dir) { return {dir, false, /*defer_journal=*/true}; }

Status Put(VmNamespace& ns, uint64_t index, const std::vector<uint8_t>& page) {
  PageRef ref{index, page.data()};
  return ns.Put({&ref, 1});
}

// What a fresh replay serves for `index`: the page, or nullopt if absent.
std::optional<std::vector<uint8_t>> Replayed(const std::string& dir, uint64_t index) {
  auto ns = VmNamespace::Recover(Deferred(dir), "vm-1");
  EXPECT_TRUE(ns.ok()) << ns.status().ToString();
  if (!ns.ok()) return std::nullopt;
  std::vector<uint8_t> buf(kPageSize);
  uint8_t present = 0;
  auto n = (*ns)->Get({&index, 1}, &present, buf.data());
  EXPECT_TRUE(n.ok()) << n.status().ToString();
  if (!n.ok() || !present) return std::nullopt;
  return buf;
}

// A PUT staged after PrepareSync is not written by that commit: its record
// reaches the journal only with the next commit, after its data's sync.
TEST(VmNamespaceGroupCommit, RecordsOfLaterChangesWaitForTheNextCommit) {
  ScratchDir dir("memd-ns");
  auto ns = std::move(VmNamespace::Create(Deferred(dir.path()), "vm-1", "host-a", OwnerToken{1, 2, 3})).value();
  const std::string journal = dir.path() + "/vm-1.index";
  ASSERT_TRUE(Put(*ns, 7, Page(1)).ok());
  auto size0 = fs::file_size(journal);
  auto plan = std::move(ns->PrepareSync()).value();
  ASSERT_TRUE(Put(*ns, 8, Page(2)).ok());  // during the commit's data sync
  ASSERT_EQ(::fdatasync(plan.data.get()), 0);
  ASSERT_TRUE(ns->WriteJournal(&plan).ok());
  ASSERT_EQ(::fdatasync(plan.journal.get()), 0);
  ns->FinishSync(std::move(plan), true);
  EXPECT_GT(fs::file_size(journal), size0);
  EXPECT_EQ(Replayed(dir.path(), 7), Page(1));
  EXPECT_EQ(Replayed(dir.path(), 8), std::nullopt) << "page 8's record was written before its data was synced";
  ASSERT_TRUE(ns->Sync().ok());
  EXPECT_EQ(Replayed(dir.path(), 8), Page(2));
}

// A compaction between PrepareSync and WriteJournal: the records the commit
// took are in the rewritten journal already, and appending them after it
// would point page 7 back at the slot its newer version retired, which the
// compaction freed and page 9 then took.
TEST(VmNamespaceGroupCommit, CompactionMidCommitIsNotUndoneByStaleRecords) {
  ScratchDir dir("memd-ns");
  auto ns = std::move(VmNamespace::Create(Deferred(dir.path()), "vm-1", "host-a", OwnerToken{1, 2, 3})).value();
  ASSERT_TRUE(Put(*ns, 7, Page(1)).ok());
  auto plan = std::move(ns->PrepareSync()).value();  // takes "7 -> slot 0"
  ASSERT_TRUE(Put(*ns, 7, Page(2)).ok());           // 7 -> slot 1, slot 0 retired
  ns->CompactJournalNowForTest();                    // frees slot 0
  ASSERT_TRUE(Put(*ns, 9, Page(3)).ok());           // 9 -> slot 0
  ASSERT_EQ(::fdatasync(plan.data.get()), 0);
  ASSERT_TRUE(ns->WriteJournal(&plan).ok());
  ns->FinishSync(std::move(plan), true);
  ASSERT_TRUE(ns->Sync().ok());
  EXPECT_EQ(Replayed(dir.path(), 7), Page(2));
  EXPECT_EQ(Replayed(dir.path(), 9), Page(3));
}

// A failed commit puts its records back in front of those staged since, so
// the next good sync writes them all, in order.
TEST(VmNamespaceGroupCommit, AFailedCommitsRecordsAreWrittenByTheNext) {
  ScratchDir dir("memd-ns");
  auto ns = std::move(VmNamespace::Create(Deferred(dir.path()), "vm-1", "host-a", OwnerToken{1, 2, 3})).value();
  ASSERT_TRUE(Put(*ns, 7, Page(1)).ok());
  ASSERT_TRUE(Put(*ns, 8, Page(1)).ok());
  auto plan = std::move(ns->PrepareSync()).value();
  ASSERT_TRUE(Put(*ns, 7, Page(2)).ok());
  ns->FinishSync(std::move(plan), false);  // its data sync failed
  ASSERT_TRUE(ns->Sync().ok());
  EXPECT_EQ(Replayed(dir.path(), 7), Page(2)) << "an older record was written after a newer one";
  EXPECT_EQ(Replayed(dir.path(), 8), Page(1)) << "the failed commit's records were dropped";
}

}  // namespace
}  // namespace agile::memd
