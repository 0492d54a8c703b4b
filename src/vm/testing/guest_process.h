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
                                                     PageState initial = PageState::kZero);
  ~GuestProcess();

  // Sends one command line, returns the answer line.
  Result<std::string> Command(const std::string& cmd);

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
  std::string dir_, ram_path_;
  UniqueFd ram_fd_, to_child_, from_child_;
  Process proc_;
  std::shared_ptr<GuestMemory> memory_;
  std::unique_ptr<FaultServer> faults_;
  std::string rbuf_;
};

}  // namespace agile::vm::testing
