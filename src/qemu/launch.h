// What a VM is (VmSpec) and how it becomes a QEMU command line. Guest RAM is
// always a shared file on tmpfs (memory-backend-file, share=on) so agiled can
// own it, whatever the VM boots from. The workload is chosen on the guest
// kernel's command line (--boot kernel, our initramfs guest) or in SMBIOS
// type 11 strings that systemd reads as credentials (--boot disk, the image
// of guest/disk/; an operator's own image just ignores them).
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/status.h"
#include "qemu/devices.h"

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
  // Started by libvirt through the agile-qemu wrapper (docs/libvirt.md):
  // libvirt owns the QEMU process and its command line; agiled owns the
  // guest RAM. agiled forgets the VM when that QEMU ends, and does not
  // migrate it (not yet).
  bool libvirt = false;
  // An ordinary VM's devices and boot (docs/vms.md). Defaults are the lab
  // guest: no disk, no NIC, our kernel and initramfs.
  std::vector<DiskSpec> disks;  // the first one boots with --boot disk
  std::vector<NicSpec> nics;
  // auto (KVM when /dev/kvm opens, else TCG) | kvm | tcg. TCG by default:
  // on this project's machines /dev/kvm exists but boots no guest (measured:
  // a plain `qemu -accel kvm` of the disk image printed nothing in 90 s),
  // so auto would break every test and lab run here; operators opt in.
  std::string accel = "tcg";
  std::string boot = "kernel";  // kernel (-kernel/-initrd of agiled) | disk (firmware boots disks[0])
  std::string firmware = "bios";  // bios (SeaBIOS) | ovmf (UEFI, --boot disk only)

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
  // Whether /dev/kvm is usable here (KvmUsable()); decides --accel auto.
  bool kvm_usable = false;
};

// /dev/kvm exists and opens read-write.
bool KvmUsable();
// "kvm" or "tcg" for a spec's accel on a host with or without KVM; an
// explicit kvm on a host without it is an error naming /dev/kvm.
Result<std::string> ResolveAccel(const std::string& accel, bool kvm_usable);
// Where OVMF's firmware image is looked for (package ovmf).
inline constexpr const char* kOvmfPath = "/usr/share/ovmf/OVMF.fd";

// The most memory a VM may have: this host's physical RAM.
uint64_t MaxVmMemory();

// The guest kernel command line for a spec (--boot kernel).
std::string GuestCmdline(const VmSpec& spec);
// The SMBIOS type 11 strings that carry the workload to a disk guest
// ("io.systemd.credential:agile.workload=memverify", "...:agile.args=k=v k=v").
std::vector<std::string> GuestCredentials(const VmSpec& spec);
// The QEMU command line. The accelerator must already be usable
// (ResolveAccel); QemuArgv itself does not fail.
std::vector<std::string> QemuArgv(const VmSpec& spec, const LaunchPaths& paths, bool incoming);

}  // namespace agile::qemu
