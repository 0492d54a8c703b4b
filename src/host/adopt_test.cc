// ManagedVm::Adopt, the restart path, against processes that are gone or
// going: a QEMU that exited but was not reaped (a zombie keeps its /proc
// entry and start time) and one killed while adoption waits for its QMP
// socket are both reported lost at once, never after the 15 s QMP wait
// (docs/reliability.md, finding 7: a restarted agiled served nothing for
// 15 s because of one dead QEMU).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "base/testing/scratch_dir.h"
#include "host/managed_vm.h"
#include "host/vm_record.h"

namespace agile::host {
namespace {

char ProcState(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(f, line);
  auto close = line.rfind(')');
  return close == std::string::npos || close + 2 >= line.size() ? '?' : line[close + 2];
}

class AdoptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    host_.id = "adopt-test";
    host_.state_dir = scratch_.path();
    host_.shm_root = scratch_ / "shm";
    std::filesystem::create_directories(host_.state_dir + "/vms/s1");
  }
  // A stock VM's record naming `pid` (the stand-in for its QEMU; stock: no
  // shim, so adoption goes straight to QMP, where finding 7 waited).
  VmRecord Record(pid_t pid) {
    VmRecord r;
    r.spec.name = "s1";
    r.spec.memory_bytes = 64ull << 20;
    r.spec.stock = true;
    r.pid = pid;
    auto t = ProcessStartTicks(pid);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    r.pid_start_ticks = t.ok() ? *t : 0;
    return r;
  }
  static pid_t Child() {
    pid_t pid = ::fork();
    if (pid == 0) {
      ::pause();
      ::_exit(0);
    }
    return pid;
  }
  ScratchDir scratch_{"agile-adopt"};
  HostConfig host_;
};

TEST_F(AdoptTest, AnExitedButUnreapedQemuIsLostAtOnce) {
  pid_t pid = Child();
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  for (int i = 0; i < 200 && ProcState(pid) != 'Z'; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(ProcState(pid), 'Z') << "the stand-in should be a zombie (not reaped)";
  VmRecord rec = Record(pid);  // a zombie keeps its start time: the old check passed it
  auto t0 = std::chrono::steady_clock::now();
  auto vm = ManagedVm::Adopt(rec, host_);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(vm->state(), "lost");
  EXPECT_LT(ms, 1000) << "adoption waited on a dead QEMU";
  ::waitpid(pid, nullptr, 0);
}

TEST_F(AdoptTest, AQemuKilledWhileAdoptionWaitsForQmpIsLostAtOnce) {
  pid_t pid = Child();  // alive, but never opens a QMP socket
  ASSERT_GT(pid, 0);
  VmRecord rec = Record(pid);
  std::thread killer([pid] {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    ::kill(pid, SIGKILL);  // not reaped here: a zombie, like a QEMU whose agiled died
  });
  auto t0 = std::chrono::steady_clock::now();
  auto vm = ManagedVm::Adopt(rec, host_);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  killer.join();
  EXPECT_EQ(vm->state(), "lost");
  EXPECT_LT(ms, 3000) << "adoption ran out the QMP timeout on a QEMU that had exited";
  EXPECT_GE(ms, 400);
  ::waitpid(pid, nullptr, 0);
}

// A stand-in QEMU that speaks just enough QMP (greeting, then {"return":
// running} to everything) on `path`, until killed.
pid_t FakeQemu(const std::string& path) {
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  int l = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof(a.sun_path), "%s", path.c_str());
  if (::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::listen(l, 4) != 0) ::_exit(1);
  for (;;) {
    int c = ::accept(l, nullptr, nullptr);
    if (c < 0) continue;
    const char greet[] = "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n";
    (void)!::write(c, greet, sizeof(greet) - 1);
    char buf[4096];
    // One command per read: agiled waits for each reply before the next.
    for (ssize_t n; (n = ::read(c, buf, sizeof(buf) - 1)) > 0;) {
      buf[n] = '\0';
      const char* id = std::strstr(buf, "\"id\":");  // replies carry the request's id
      char ret[256];
      int len = std::snprintf(ret, sizeof(ret), "{\"return\": {\"status\": \"running\", \"running\": true}, \"id\": %lu}\n",
                              id ? std::strtoul(id + 5, nullptr, 10) : 0ul);
      (void)!::write(c, ret, static_cast<size_t>(len));
    }
    ::close(c);
  }
}

// Soak run 7 (2026-12-01 21:01): the destination's QEMU was killed right
// after a post-copy switch; the push went on, and at DONE MarkRunning made
// `vm stat` say "running" for a VM no process ran. A VM whose QEMU exited
// stays crashed whatever its migration says afterwards.
TEST_F(AdoptTest, AVmWhoseQemuDiedIsNotMarkedRunningAgain) {
  pid_t pid = FakeQemu(host_.state_dir + "/vms/s1/qmp.sock");
  ASSERT_GT(pid, 0);
  auto vm = ManagedVm::Adopt(Record(pid), host_);
  ASSERT_EQ(vm->state(), "running");
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  for (int i = 0; i < 400 && vm->state() == "running"; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(vm->state(), "crashed");
  vm->MarkRunning(/*all_pages_here=*/true);
  EXPECT_EQ(vm->state(), "crashed");
  ::waitpid(pid, nullptr, 0);
}

}  // namespace
}  // namespace agile::host
