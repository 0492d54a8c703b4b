#include "qemu/launch.h"

#include <fcntl.h>
#include <unistd.h>

#include <set>
#include <sstream>

namespace agile::qemu {
namespace {

constexpr uint64_t kMinMemory = 64ull << 20;

bool SafeToken(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s)
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) return false;
  return true;
}

const std::map<std::string, std::set<std::string>>& WorkloadKeys() {
  static const std::map<std::string, std::set<std::string>> k = {
      {"memverify", {"size_mib", "rate", "verify_rate", "seed", "selftest_corrupt"}},
      {"memtouch", {"size_mib", "hot_mib", "write_pct", "pattern", "phase_s", "seed"}},
      {"redis", {"ip", "prefix", "gw", "port", "keys", "value_bytes", "maxmemory_mib"}},
      // The disk guest only (guest/disk/diskverify).
      {"diskverify", {"files", "file_kib", "interval_ms", "mem_mib"}},
      {"none", {}},
  };
  return k;
}

}  // namespace

uint64_t MaxVmMemory() {
  long pages = ::sysconf(_SC_PHYS_PAGES);
  long page = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return 1ull << 40;
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page);
}

nlohmann::json VmSpec::ToJson() const {
  nlohmann::json j = {{"name", name},         {"memory_bytes", memory_bytes},   {"vcpus", vcpus},
          {"workload", workload}, {"workload_args", workload_args}, {"qemu_args", extra_qemu_args},
          {"stock", stock}, {"libvirt", libvirt}, {"accel", accel}, {"boot", boot}, {"firmware", firmware}};
  nlohmann::json d = nlohmann::json::array(), n = nlohmann::json::array();
  for (const auto& x : disks) d.push_back(x.ToJson());
  for (const auto& x : nics) n.push_back(x.ToJson());
  j["disks"] = d;
  j["nics"] = n;
  return j;
}

Result<VmSpec> VmSpec::FromJson(const nlohmann::json& j) {
  VmSpec s;
  try {
    s.name = j.at("name").get<std::string>();
    // Integers only: converting a JSON float (1e80, -1.5) to an integer type
    // is undefined behaviour (found by fuzz/fuzz_control_request).
    if (!j.at("memory_bytes").is_number_unsigned()) return InvalidArgument("memory_bytes must be a positive integer");
    s.memory_bytes = j.at("memory_bytes").get<uint64_t>();
    if (j.contains("vcpus") && !(j["vcpus"].is_number_integer() && j["vcpus"].get<int64_t>() >= 1 &&
                                 j["vcpus"].get<int64_t>() <= 64))
      return InvalidArgument("vcpus must be between 1 and 64");
    s.vcpus = j.value("vcpus", 1);
    s.workload = j.value("workload", std::string("memverify"));
    s.workload_args = j.value("workload_args", std::map<std::string, std::string>{});
    s.extra_qemu_args = j.value("qemu_args", std::vector<std::string>{});
    s.stock = j.value("stock", false);
    s.libvirt = j.value("libvirt", false);
    if (j.contains("disks")) {
      if (!j["disks"].is_array() || j["disks"].size() > 8) return InvalidArgument("disks must be a list of at most 8");
      for (const auto& d : j["disks"]) {
        AGILE_ASSIGN_OR_RETURN(DiskSpec disk, DiskSpec::FromJson(d));
        s.disks.push_back(std::move(disk));
      }
    }
    if (j.contains("nics")) {
      if (!j["nics"].is_array() || j["nics"].size() > 8) return InvalidArgument("nics must be a list of at most 8");
      for (const auto& n : j["nics"]) {
        AGILE_ASSIGN_OR_RETURN(NicSpec nic, NicSpec::FromJson(n));
        s.nics.push_back(std::move(nic));
      }
    }
    s.accel = j.value("accel", s.accel);
    // A spec from before disks existed, or one that names disks but no
    // boot: a disk boots when there is one.
    s.boot = j.value("boot", s.disks.empty() ? std::string("kernel") : std::string("disk"));
    s.firmware = j.value("firmware", s.firmware);
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(std::string("bad VM spec: ") + e.what());
  }
  AGILE_RETURN_IF_ERROR(s.Validate());
  return s;
}

Status VmSpec::Validate() const {
  if (!SafeToken(name)) return InvalidArgument("VM name '" + name + "' must be 1-64 characters of [A-Za-z0-9_.-]");
  if (memory_bytes < kMinMemory) return InvalidArgument("VM memory must be at least 64 MiB");
  if (memory_bytes > MaxVmMemory())
    return InvalidArgument("VM memory " + std::to_string(memory_bytes >> 20) + " MiB exceeds this host's RAM (" +
                           std::to_string(MaxVmMemory() >> 20) + " MiB)");
  if (memory_bytes % (2ull << 20) != 0) return InvalidArgument("VM memory must be a multiple of 2 MiB");
  if (vcpus < 1 || vcpus > 64) return InvalidArgument("vcpus must be between 1 and 64");
  auto it = WorkloadKeys().find(workload);
  if (it == WorkloadKeys().end()) return InvalidArgument("unknown workload '" + workload + "' (memverify, memtouch, redis, diskverify, none)");
  for (const auto& [k, v] : workload_args) {
    if (!it->second.count(k)) {
      std::string allowed;
      for (const auto& a : it->second) allowed += (allowed.empty() ? "" : ", ") + a;
      return InvalidArgument("workload " + workload + " has no key '" + k + "' (keys: " + allowed + ")");
    }
    if (!SafeToken(v)) return InvalidArgument("workload value '" + v + "' for " + k + " must be [A-Za-z0-9_.-]");
  }
  if (accel != "auto" && accel != "kvm" && accel != "tcg") return InvalidArgument("accel '" + accel + "' (auto, kvm, tcg)");
  if (boot != "kernel" && boot != "disk") return InvalidArgument("boot '" + boot + "' (kernel, disk)");
  if (firmware != "bios" && firmware != "ovmf") return InvalidArgument("firmware '" + firmware + "' (bios, ovmf)");
  if (libvirt && stock) return InvalidArgument("a libvirt VM's RAM is agiled's: it cannot be stock");
  if (boot == "disk" && disks.empty()) return InvalidArgument("--boot disk needs a --disk");
  if (firmware == "ovmf" && boot != "disk") return InvalidArgument("--firmware ovmf boots a disk: add --boot disk");
  if (disks.size() > 8 || nics.size() > 8) return InvalidArgument("at most 8 disks and 8 NICs");
  for (const auto& d : disks) AGILE_RETURN_IF_ERROR(d.Validate());
  for (const auto& n : nics) AGILE_RETURN_IF_ERROR(n.Validate());
  // Which guest can run which workload: both run redis (the same script,
  // guest/redis.sh); only the disk image has a filesystem for diskverify.
  if (boot == "kernel" && workload == "diskverify") return InvalidArgument("workload diskverify needs --boot disk (the guest/disk image)");
  // The guest's own kernel and userland need room of their own: the
  // initramfs ~48 MiB, Debian with systemd ~160 MiB.
  const uint64_t os_mib = boot == "disk" ? 160 : 48;
  for (const char* key : {"size_mib", "mem_mib"}) {
    auto size = workload_args.find(key);
    if (size == workload_args.end()) continue;
    uint64_t mib = std::strtoull(size->second.c_str(), nullptr, 10);
    if ((mib == 0 && std::string(key) == "size_mib") || mib + os_mib > memory_bytes >> 20)
      return InvalidArgument(std::string(key) + "=" + size->second + " does not fit in " +
                             std::to_string(memory_bytes >> 20) + " MiB of VM memory (leave >= " +
                             std::to_string(os_mib) + " MiB for the guest's " +
                             (boot == "disk" ? "system" : "kernel") + ")");
  }
  return Status::Ok();
}

Result<std::map<std::string, std::string>> ParseWorkloadArgs(const std::string& s) {
  std::map<std::string, std::string> out;
  std::istringstream in(s);
  std::string tok;
  while (in >> tok) {
    auto eq = tok.find('=');
    if (eq == std::string::npos || eq == 0) return InvalidArgument("workload argument '" + tok + "' is not key=value");
    out[tok.substr(0, eq)] = tok.substr(eq + 1);
  }
  return out;
}

std::string GuestCmdline(const VmSpec& spec) {
  std::string c = "console=ttyS0 quiet panic=-1 agile.workload=" + spec.workload;
  for (const auto& [k, v] : spec.workload_args) c += " " + spec.workload + "." + k + "=" + v;
  return c;
}

bool KvmUsable() {
  int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

Result<std::string> ResolveAccel(const std::string& accel, bool kvm_usable) {
  if (accel == "tcg") return std::string("tcg");
  if (kvm_usable) return std::string("kvm");
  if (accel == "kvm") return Unsupported("--accel kvm: /dev/kvm is missing or not usable here (use --accel auto or tcg)");
  return std::string("tcg");
}

std::vector<std::string> GuestCredentials(const VmSpec& spec) {
  std::vector<std::string> c;
  if (spec.workload == "none") return c;
  std::string args;
  for (const auto& [k, v] : spec.workload_args) args += (args.empty() ? "" : " ") + k + "=" + v;
  // Values are SafeToken words: no ',' for QEMU's option parser to split on.
  c.push_back("io.systemd.credential:agile.workload=" + spec.workload);
  if (!args.empty()) c.push_back("io.systemd.credential:agile.args=" + args);
  return c;
}

std::vector<std::string> QemuArgv(const VmSpec& spec, const LaunchPaths& p, bool incoming) {
  std::string mem = std::to_string(spec.memory_bytes >> 20) + "M";
  auto accel = ResolveAccel(spec.accel, p.kvm_usable);
  std::vector<std::string> a = {
      p.qemu_binary,
      "-name", spec.name,
      "-machine", spec.stock ? "q35" : "q35,memory-backend=ram0",
      // Under KVM the guest's accesses to the shared RAM file fault through
      // KVM's own page faults into the same userfaultfd (as QEMU's post-copy
      // does), so nothing below changes with the accelerator.
      "-accel", accel.ok() ? *accel : "tcg",
      "-smp", std::to_string(spec.vcpus),
      "-m", mem,
  };
  if (!spec.stock) {
    a.push_back("-object");
    a.push_back("memory-backend-file,id=ram0,size=" + mem + ",mem-path=" + p.ram_file + ",share=on");
  }
  if (spec.boot == "kernel") {
    a.insert(a.end(), {"-kernel", p.kernel, "-initrd", p.initrd, "-append", GuestCmdline(spec)});
  } else {
    if (spec.firmware == "ovmf") a.insert(a.end(), {"-bios", kOvmfPath});
    for (const auto& c : GuestCredentials(spec)) a.insert(a.end(), {"-smbios", "type=11,value=" + c});
  }
  for (auto& x : DiskArgs(spec.disks)) a.push_back(std::move(x));
  for (auto& x : NicArgs(spec.name, spec.nics)) a.push_back(std::move(x));
  std::vector<std::string> rest = {
      "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
      "-serial", "file:" + p.serial_log,
      "-qmp", "unix:" + p.qmp_socket + ",server=on,wait=off",
  };
  a.insert(a.end(), rest.begin(), rest.end());
  if (p.sandbox) {
    // QEMU's seccomp filter, installed before the machine (and so before the
    // shim registers guest RAM): the shim's userfaultfd, socket, sendmsg,
    // ioctl, madvise and thread creation stay allowed (docs/security.md).
    // With -runas QEMU itself must setuid/setgid once, late in start-up
    // (after the filter is in): "deny" kills it with SIGSYS, and so does
    // "children" on QEMU 7.2 (both seen), so it gets "allow" - harmless once
    // it has dropped to the unprivileged user, whom the kernel refuses any
    // way back to root.
    a.push_back("-sandbox");
    // A bridge NIC runs qemu-bridge-helper (fork+exec), which spawn=deny
    // would kill QEMU for.
    bool bridge = false;
    for (const auto& n : spec.nics) bridge |= n.kind == "bridge";
    a.push_back(std::string("on,obsolete=deny,elevateprivileges=") + (p.run_as.empty() ? "deny" : "allow") +
                ",spawn=" + (bridge ? "allow" : "deny") + ",resourcecontrol=deny");
  }
  if (!p.run_as.empty()) {
    a.push_back("-runas");
    a.push_back(p.run_as);
  }
  if (incoming) {
    a.push_back("-incoming");
    a.push_back("defer");
  }
  for (const auto& x : spec.extra_qemu_args) a.push_back(x);
  return a;
}

}  // namespace agile::qemu
