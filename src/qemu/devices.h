// The devices of an ordinary VM beyond RAM: disks and NICs, how agilectl's
// --disk/--nic strings parse into them, and the QEMU arguments they become.
// Plain structs with JSON forms, so a VmSpec stays serialisable (agiled
// persists it and sends it to a migration's destination).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/status.h"

namespace agile::qemu {

struct DiskSpec {
  std::string path;               // absolute path of the image
  std::string format = "qcow2";   // qcow2 | raw
  std::string cache = "writeback";  // writeback | none | writethrough | directsync | unsafe
  std::string bus = "virtio-blk";   // virtio-blk | virtio-scsi

  nlohmann::json ToJson() const;
  static Result<DiskSpec> FromJson(const nlohmann::json& j);
  Status Validate() const;
  bool operator==(const DiskSpec&) const = default;
};

struct NicSpec {
  std::string kind = "user";  // user (QEMU's slirp) | tap (existing tap IF) | bridge (qemu-bridge-helper on BR)
  std::string ifname;         // tap: the tap interface; bridge: the bridge

  nlohmann::json ToJson() const;
  static Result<NicSpec> FromJson(const nlohmann::json& j);
  Status Validate() const;
  bool operator==(const NicSpec&) const = default;
};

// "PATH[,format=qcow2|raw][,cache=MODE][,bus=virtio-blk|virtio-scsi]"; a
// relative PATH is made absolute against the current directory.
Result<DiskSpec> ParseDiskOption(const std::string& s);
// "user" | "tap=IF" | "bridge=BR".
Result<NicSpec> ParseNicOption(const std::string& s);

// QEMU arguments for the disks (node names disk0.., the first disk boots
// first) and NICs (net0.., MACs derived from the VM name so a migration's
// destination presents the same ones).
std::vector<std::string> DiskArgs(const std::vector<DiskSpec>& disks);
std::vector<std::string> NicArgs(const std::string& vm_name, const std::vector<NicSpec>& nics);

// The QEMU node name of disk i ("disk0", ...): what blockdev-mirror and the
// NBD export name.
std::string DiskNodeName(size_t i);

}  // namespace agile::qemu
