// What a restarted agiled needs to re-adopt one of its VMs, kept in
// STATE_DIR/vms/NAME/vm.record: the VM spec, the QEMU process (pid and its
// start time, so a reused pid is never mistaken for our QEMU), whether it was
// still an incoming migration, and its swap-store namespace and ownership
// token. The page locations live beside it (vm/location_map.h).
//
// File format (one place: this header and vm_record.cc):
//   "AGVMREC1 " <XXH3-64 of the body, 16 hex digits> " " <body length> "\n" <body: JSON>
// Written crash-consistently: to vm.record.tmp, fsync, rename over vm.record,
// fsync the folder. A reader sees the old record or the new one, never a mix;
// a damaged one (bad magic, length or checksum, bad JSON) is Corruption.
// Not thread-safe per file: one writer (the VM's ManagedVm) at a time.
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"
#include "qemu/launch.h"

namespace agile::host {

struct VmRecord {
  qemu::VmSpec spec;
  int32_t pid = 0;
  uint64_t pid_start_ticks = 0;  // /proc/PID/stat field 22: tells our QEMU from a reused pid
  bool incoming = false;         // still the destination of a migration that had not completed
  // Arrived by migration (every page here, the token adopted) but not yet
  // run here: its source may still hold the only whole copy, paused, so its
  // swap-store namespace is never released from here until the guest ran.
  bool unconfirmed = false;
  std::string store_vm_id;       // swap-store namespace; empty without --memd
  bool store_owned = false;      // this host holds the namespace's token
  uint64_t token_epoch = 0, token_secret = 0, token_secret_hi = 0;
};

inline constexpr char kVmRecordFile[] = "vm.record";

std::string EncodeVmRecord(const VmRecord& r);
Result<VmRecord> DecodeVmRecord(const std::string& bytes);

// Crash-consistent replace of DIR/vm.record.
Status WriteVmRecord(const std::string& dir, const VmRecord& r);
// NotFound when there is none; Corruption when it is damaged.
Result<VmRecord> ReadVmRecord(const std::string& dir);

// Start time of a process in clock ticks since boot (/proc/PID/stat field
// 22); NotFound when it is gone.
Result<uint64_t> ProcessStartTicks(int32_t pid);

}  // namespace agile::host
