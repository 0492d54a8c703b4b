// The page-location map (vm/location_map.h): what a restarted agiled reads
// back, including after the writer was killed with SIGKILL mid-stream, and
// the damaged files it must refuse rather than misread.
#include "vm/location_map.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "base/io.h"
#include "base/testing/scratch_dir.h"

namespace agile::vm {
namespace {

class LocationMapTest : public ::testing::Test {
 protected:
  ScratchDir dir_{"agile-locmap"};
  const std::string path_ = dir_ / "locations";
  void FlipByte(off_t at) {
    int fd = ::open(path_.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    uint8_t b = 0;
    ASSERT_TRUE(PreadFull(fd, &b, 1, at).ok());
    b ^= 0x40;
    ASSERT_TRUE(PwriteFull(fd, &b, 1, at).ok());
    ::close(fd);
  }
};

TEST_F(LocationMapTest, BitsSetAndClearedAreReadBackByTheNextOpener) {
  {
    auto m = LocationMap::Create(path_, 1000);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_EQ(m->CountOffloaded(), 0u);
    for (uint64_t i : {0, 63, 64, 500, 999}) m->Set(i, true);
    m->Set(500, false);
    m->Set(1000, true);  // past the end: ignored
  }
  auto m = LocationMap::Open(path_, 1000);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->CountOffloaded(), 4u);
  EXPECT_TRUE(m->offloaded(0));
  EXPECT_TRUE(m->offloaded(63));
  EXPECT_TRUE(m->offloaded(64));
  EXPECT_FALSE(m->offloaded(500));
  EXPECT_TRUE(m->offloaded(999));
  EXPECT_FALSE(m->offloaded(1));
}

// The failure agiled's restart is about: the writer dies by SIGKILL in the
// middle of updating bits. Every bit it set before a known point is there
// (the stores were in the page cache at once), and nothing is half-written.
TEST_F(LocationMapTest, BitsSurviveTheWriterBeingKilled) {
  constexpr uint64_t kPages = 1 << 20;
  ASSERT_TRUE(LocationMap::Create(path_, kPages).ok());
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto m = LocationMap::Open(path_, kPages);
    if (!m.ok()) ::_exit(2);
    // Even pages first, then tell the parent, then keep toggling odd pages
    // until killed.
    for (uint64_t i = 0; i < kPages; i += 2) m->Set(i, true);
    char c = 1;
    (void)!::write(ready[1], &c, 1);
    for (uint64_t round = 0;; ++round)
      for (uint64_t i = 1; i < kPages; i += 2) m->Set(i, round % 2 == 0);
  }
  ::close(ready[1]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::usleep(20000);
  ::kill(pid, SIGKILL);
  int st = 0;
  ::waitpid(pid, &st, 0);
  ASSERT_TRUE(WIFSIGNALED(st));
  ::close(ready[0]);

  auto m = LocationMap::Open(path_, kPages);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  for (uint64_t i = 0; i < kPages; i += 2) ASSERT_TRUE(m->offloaded(i)) << i;
}

TEST_F(LocationMapTest, DamagedFilesAreRefusedNotMisread) {
  ASSERT_TRUE(LocationMap::Create(path_, 4096).ok());
  // One flipped header byte: the checksum catches it.
  FlipByte(10);
  auto bad = LocationMap::Open(path_, 4096);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Code::kCorruption);
  FlipByte(10);
  ASSERT_TRUE(LocationMap::Open(path_, 4096).ok());

  // Another VM size than the one it was made for.
  auto other = LocationMap::Open(path_, 8192);
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.status().code(), Code::kCorruption);

  // Cut short (a bitmap that would read past the end).
  ASSERT_EQ(::truncate(path_.c_str(), LocationMap::kHeaderSize + 100), 0);
  auto cut = LocationMap::Open(path_, 4096);
  ASSERT_FALSE(cut.ok());
  EXPECT_EQ(cut.status().code(), Code::kCorruption);
  ASSERT_EQ(::truncate(path_.c_str(), 10), 0);
  EXPECT_EQ(LocationMap::Open(path_, 4096).status().code(), Code::kCorruption);

  // Missing altogether: not found, told apart from damage.
  std::filesystem::remove(path_);
  EXPECT_EQ(LocationMap::Open(path_, 4096).status().code(), Code::kNotFound);
}

TEST_F(LocationMapTest, CreateReplacesAtomically) {
  {
    auto m = LocationMap::Create(path_, 128);
    ASSERT_TRUE(m.ok());
    m->Set(5, true);
  }
  // A temporary file left by a crash in Create is not read by Open.
  std::ofstream(path_ + ".tmp") << "garbage";
  auto m = LocationMap::Open(path_, 128);
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->offloaded(5));
  auto fresh = LocationMap::Create(path_, 128);
  ASSERT_TRUE(fresh.ok());
  EXPECT_FALSE(fresh->offloaded(5));
}

}  // namespace
}  // namespace agile::vm
