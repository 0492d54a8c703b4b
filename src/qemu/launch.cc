#include "qemu/launch.h"

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
  return {{"name", name},         {"memory_bytes", memory_bytes},   {"vcpus", vcpus},
          {"workload", workload}, {"workload_args", workload_args}, {"qemu_args", extra_qemu_args},
          {"stock", stock}};
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
  if (it == WorkloadKeys().end()) return InvalidArgument("unknown workload '" + workload + "' (memverify, memtouch, redis, none)");
  for (const auto& [k, v] : workload_args) {
    if (!it->second.count(k)) {
      std::string allowed;
      for (const auto& a : it->second) allowed += (allowed.empty() ? "" : ", ") + a;
      return InvalidArgument("workload " + workload + " has no key '" + k + "' (keys: " + allowed + ")");
    }
    if (!SafeToken(v)) return InvalidArgument("workload value '" + v + "' for " + k + " must be [A-Za-z0-9_.-]");
  }
  auto size = workload_args.find("size_mib");
  if (size != workload_args.end()) {
    uint64_t mib = std::strtoull(size->second.c_str(), nullptr, 10);
    // The guest kernel and initramfs need room of their own.
    if (mib == 0 || mib + 48 > memory_bytes >> 20)
      return InvalidArgument("size_mib=" + size->second + " does not fit in " + std::to_string(memory_bytes >> 20) +
                             " MiB of VM memory (leave >= 48 MiB for the guest kernel)");
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

std::vector<std::string> QemuArgv(const VmSpec& spec, const LaunchPaths& p, bool incoming) {
  std::string mem = std::to_string(spec.memory_bytes >> 20) + "M";
  std::vector<std::string> a = {
      p.qemu_binary,
      "-name", spec.name,
      "-machine", spec.stock ? "q35" : "q35,memory-backend=ram0",
      "-accel", "tcg",
      "-smp", std::to_string(spec.vcpus),
      "-m", mem,
  };
  if (!spec.stock) {
    a.push_back("-object");
    a.push_back("memory-backend-file,id=ram0,size=" + mem + ",mem-path=" + p.ram_file + ",share=on");
  }
  std::vector<std::string> rest = {
      "-kernel", p.kernel,
      "-initrd", p.initrd,
      "-append", GuestCmdline(spec),
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
    a.push_back(std::string("on,obsolete=deny,elevateprivileges=") + (p.run_as.empty() ? "deny" : "allow") +
                ",spawn=deny,resourcecontrol=deny");
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
