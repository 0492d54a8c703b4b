// Reading and extending the QEMU command line libvirt hands its emulator, for
// the agile-qemu wrapper (docs/libvirt.md). libvirt runs the <emulator> for
// capability probes (-help, -version, QMP with -machine none) and to start a
// domain; only the latter names a guest (-name), and only then does agiled
// take over the VM: guest RAM becomes agiled's file, and QEMU gets a QMP
// socket of agiled's own beside libvirt's monitor. Pure functions, no I/O.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace agile::qemu {

// What agiled needs to know about a domain libvirt is starting.
struct LibvirtVm {
  std::string name;            // -name guest=NAME
  uint64_t memory_bytes = 0;   // size of the main RAM's memory-backend-file
  int vcpus = 1;               // -smp N
  size_t ram_object_arg = 0;   // argv index of that backend's -object value
  // The first serial port's log (<serial><log file=.../>): libvirt opens the
  // file itself and hands QEMU its descriptor (-add-fd ... logfile=/dev/fdset/N),
  // so the caller resolves serial_log_fd; a plain path is in serial_log.
  std::string serial_log;
  int serial_log_fd = -1;
};

// True when libvirt starts a domain, false for a capability probe (no -name):
// probes go to the real QEMU untouched.
bool IsDomainStart(const std::vector<std::string>& argv);

// Parses a domain start. Fails, saying what the domain XML lacks, unless the
// guest RAM is a shared memory-backend-file that -machine memory-backend= names
// (<memoryBacking><source type='file'/><access mode='shared'/>), or when
// libvirt starts an incoming migration (-incoming: not supported yet).
Result<LibvirtVm> ParseLibvirtArgv(const std::vector<std::string>& argv);

// The command line QEMU runs under agiled: the RAM backend's mem-path replaced
// by agiled's RAM file, and `-qmp unix:QMP,server=on,wait=off` added.
std::vector<std::string> AgileArgv(const std::vector<std::string>& argv, const LibvirtVm& vm,
                                   const std::string& ram_path, const std::string& qmp_socket);

// QEMU's keyval option syntax ("a=1,b=x,,y"): ',,' is a literal comma. The
// first element may be a bare value (the implied key, e.g. "pty" of -chardev).
std::vector<std::pair<std::string, std::string>> SplitKeyval(const std::string& s);

}  // namespace agile::qemu
