// What a VM is (VmSpec) and how it becomes a QEMU command line. Guest RAM is
// always a shared file on tmpfs (memory-backend-file, share=on) so agiled can
// own it; the workload is chosen on the guest kernel's command line.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/status.h"

namespace agile::qemu {

struct VmSpec {
  std::string name;
  uint64_t memory_bytes = 0;
  int vcpus = 1;
  std::string workload = "memverify";         // memverify | memtouch | none
  std::map<std::string, std::string> workload_args;
  std::vector<std::string> extra_qemu_args;   // passed through verbatim, appended last
  // A stock VM: plain anonymous guest RAM, no shim, memory not owned by agiled
  // (as operators run VMs today). Only the qemu-* migration modes apply.
  bool stock = false;

  nlohmann::json ToJson() const;
  static Result<VmSpec> FromJson(const nlohmann::json& j);
  // Checks names, sizes and workload keys; the error says what to fix.
  Status Validate() const;
};

// Parses "key=value key2=value2" into a map.
Result<std::map<std::string, std::string>> ParseWorkloadArgs(const std::string& s);

struct LaunchPaths {
  std::string qemu_binary;
  std::string kernel;
  std::string initrd;
  std::string ram_file;
  std::string qmp_socket;
  std::string serial_log;
  // QEMU's seccomp sandbox (-sandbox on with obsolete, elevateprivileges,
  // spawn and resourcecontrol denied). On by default.
  bool sandbox = true;
  // -runas: the user QEMU drops to once its files are open; empty keeps root
  // (docs/security.md says why that is the default).
  std::string run_as;
};

// The most memory a VM may have: this host's physical RAM.
uint64_t MaxVmMemory();

// The guest kernel command line for a spec.
std::string GuestCmdline(const VmSpec& spec);
std::vector<std::string> QemuArgv(const VmSpec& spec, const LaunchPaths& paths, bool incoming);

}  // namespace agile::qemu
