// Test fixture: a shm_guest child (the QEMU stand-in) with the real shim
// preloaded, and agiled's real fault path serving its RAM file.
#pragma once

#include <memory>
#include <string>

#include "base/process.h"
#include "vm/fault_server.h"
#include "vm/guest_memory.h"

namespace agile::vm::testing {

class GuestProcess {
 public:
  // Creates a RAM file of `pages` pages under /dev/shm and starts shm_guest.
  static Result<std::unique_ptr<GuestProcess>> Start(const std::string& shim_path, const std::string& guest_path,
                                                     uint64_t pages, PageSource* source = nullptr,
                                                     uint32_t prefetch_pages = 4,
                                                     PageState initial = PageState::kZero,
                                                     int busy_poll_us = -1);  // < 0: FaultServer's default
  ~GuestProcess();

  // Sends one command line, returns the answer line.
  Result<std::string> Command(const std::string& cmd);
  // Sends a command line without waiting for its answer.
  Status Send(const std::string& cmd);
  // Whether an answer line arrives within timeout_ms (then Command("") reads it).
  bool AnswerWithin(int timeout_ms);

  // agiled "crashes": the fault service stops and agiled's ends of the shim
  // link and the uffd close, as a kill -9 would close them. The shim starts
  // reconnecting; faults meanwhile wait.
  void DropAgiled();
  // A "restarted agiled": listens on the shim socket again, takes the uffd the
  // shim hands over, rebuilds the page states (GuestMemory::Recover with the
  // location map at map_path, if not empty) and serves faults again.
  Status Readopt(PageSource* source, const std::string& map_path, int timeout_ms = 10000);
  const std::string& shim_sock() const { return sock_; }

  GuestMemory& memory() { return *memory_; }
  const std::shared_ptr<GuestMemory>& shared_memory() { return memory_; }
  FaultServer& faults() { return *faults_; }
  Process& process() { return proc_; }
  // A descriptor of the RAM file of the test's own, for checking its content
  // from outside GuestMemory.
  int ram_fd() const { return ram_fd_.get(); }
  const std::string& ram_path() const { return ram_path_; }

 private:
  GuestProcess() = default;
  std::string dir_, ram_path_, sock_;
  uint64_t pages_ = 0;
  UniqueFd ram_fd_, to_child_, from_child_;
  Process proc_;
  std::shared_ptr<GuestMemory> memory_;
  std::unique_ptr<FaultServer> faults_;
  std::string rbuf_;
};

}  // namespace agile::vm::testing
