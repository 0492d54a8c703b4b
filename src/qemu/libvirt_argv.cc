#include "qemu/libvirt_argv.h"

#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>

#include "base/size.h"

namespace agile::qemu {
namespace {

constexpr const char* kNeedsSharedFile =
    "the domain needs <memoryBacking><source type='file'/><access mode='shared'/></memoryBacking> "
    "so that agiled can own its RAM (docs/libvirt.md)";

// The value following each occurrence of `opt`.
std::vector<std::pair<size_t, std::string>> OptionValues(const std::vector<std::string>& argv, const std::string& opt) {
  std::vector<std::pair<size_t, std::string>> out;
  for (size_t i = 1; i + 1 < argv.size(); ++i)
    if (argv[i] == opt) out.emplace_back(i + 1, argv[i + 1]);
  return out;
}

std::string Get(const std::vector<std::pair<std::string, std::string>>& kv, const std::string& key) {
  for (const auto& [k, v] : kv)
    if (k == key) return v;
  return {};
}

std::string EscapeKeyval(const std::string& v) {
  std::string out;
  for (char c : v) {
    out += c;
    if (c == ',') out += ',';
  }
  return out;
}

// One -object value as key/values, whether libvirt wrote it as JSON (libvirt
// >= 7 with QEMU >= 6) or in keyval syntax (older pairs).
struct ObjectArg {
  bool json = false;
  nlohmann::json j;
  std::vector<std::pair<std::string, std::string>> kv;

  std::string Str(const std::string& key) const {
    if (!json) return Get(kv, key);
    auto it = j.find(key);
    if (it == j.end()) return {};
    if (it->is_string()) return it->get<std::string>();
    if (it->is_boolean()) return it->get<bool>() ? "on" : "off";
    if (it->is_number_unsigned()) return std::to_string(it->get<uint64_t>());
    return it->dump();
  }
};

Result<ObjectArg> ParseObject(const std::string& v) {
  ObjectArg o;
  if (!v.empty() && v[0] == '{') {
    o.json = true;
    o.j = nlohmann::json::parse(v, nullptr, false);
    if (o.j.is_discarded() || !o.j.is_object()) return InvalidArgument("unparsable -object " + v);
    return o;
  }
  o.kv = SplitKeyval(v);
  // The implied key of -object is the type.
  if (!o.kv.empty() && o.kv[0].first.empty()) o.kv[0].first = "qom-type";
  return o;
}

bool IsOn(const std::string& v) { return v == "on" || v == "true" || v == "yes" || v == "y"; }

}  // namespace

std::vector<std::pair<std::string, std::string>> SplitKeyval(const std::string& s) {
  std::vector<std::pair<std::string, std::string>> out;
  std::string cur;
  std::vector<std::string> parts;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == ',') {
      if (i + 1 < s.size() && s[i + 1] == ',') {
        cur += ',';
        ++i;
        continue;
      }
      parts.push_back(cur);
      cur.clear();
      continue;
    }
    cur += s[i];
  }
  parts.push_back(cur);
  for (size_t i = 0; i < parts.size(); ++i) {
    auto eq = parts[i].find('=');
    if (eq == std::string::npos) out.emplace_back(i == 0 ? "" : parts[i], i == 0 ? parts[i] : "on");
    else out.emplace_back(parts[i].substr(0, eq), parts[i].substr(eq + 1));
  }
  return out;
}

bool IsDomainStart(const std::vector<std::string>& argv) { return !OptionValues(argv, "-name").empty(); }

Result<LibvirtVm> ParseLibvirtArgv(const std::vector<std::string>& argv) {
  LibvirtVm vm;
  auto names = OptionValues(argv, "-name");
  if (names.empty()) return InvalidArgument("no -name: not a domain start");
  auto name_kv = SplitKeyval(names.back().second);
  vm.name = Get(name_kv, "guest");
  if (vm.name.empty()) vm.name = Get(name_kv, "");
  if (vm.name.empty()) return InvalidArgument("-name " + names.back().second + " names no guest");
  if (!OptionValues(argv, "-incoming").empty())
    return Unsupported("libvirt is starting domain " + vm.name +
                       " as a migration destination; migrating libvirt domains under agiled is not supported yet "
                       "(docs/libvirt.md)");

  std::string backend;
  for (const auto& [i, v] : OptionValues(argv, "-machine")) {
    std::string b = Get(SplitKeyval(v), "memory-backend");
    if (!b.empty()) backend = b;
  }
  if (backend.empty())
    return InvalidArgument("domain " + vm.name + ": QEMU's main RAM is not a memory backend (no -machine memory-backend=); " +
                           kNeedsSharedFile);

  bool found = false;
  for (const auto& [i, v] : OptionValues(argv, "-object")) {
    AGILE_ASSIGN_OR_RETURN(ObjectArg o, ParseObject(v));
    if (o.Str("id") != backend) continue;
    found = true;
    if (o.Str("qom-type") != "memory-backend-file" || !IsOn(o.Str("share")))
      return InvalidArgument("domain " + vm.name + ": its RAM backend is " + o.Str("qom-type") +
                             (IsOn(o.Str("share")) ? "" : " without share=on") + "; " + kNeedsSharedFile);
    std::string size = o.Str("size");
    if (o.json) {
      if (!o.j.contains("size") || !o.j["size"].is_number_unsigned())
        return InvalidArgument("domain " + vm.name + ": RAM backend without an integer size");
      vm.memory_bytes = o.j["size"].get<uint64_t>();
    } else {
      AGILE_ASSIGN_OR_RETURN(vm.memory_bytes, ParseSize(size));
    }
    vm.ram_object_arg = i;
  }
  if (!found) return InvalidArgument("domain " + vm.name + ": no -object with id " + backend + "; " + kNeedsSharedFile);

  for (const auto& [i, v] : OptionValues(argv, "-smp")) {
    auto kv = SplitKeyval(v);
    std::string n = Get(kv, "cpus");
    if (n.empty()) n = Get(kv, "");
    if (!n.empty()) vm.vcpus = std::atoi(n.c_str());
  }

  // The first serial port's log, for `vm stat` and `vm console`.
  std::map<std::string, int> fdsets;  // "/dev/fdset/N" -> descriptor
  for (const auto& [i, v] : OptionValues(argv, "-add-fd")) {
    auto kv = SplitKeyval(v);
    std::string set = Get(kv, "set"), fd = Get(kv, "fd");
    if (!set.empty() && !fd.empty()) fdsets["/dev/fdset/" + set] = std::atoi(fd.c_str());
  }
  for (const auto& [i, v] : OptionValues(argv, "-chardev")) {
    auto kv = SplitKeyval(v);
    if (Get(kv, "id") != "charserial0") continue;
    std::string log = Get(kv, "logfile");
    if (log.empty()) break;
    auto it = fdsets.find(log);
    if (it != fdsets.end()) vm.serial_log_fd = it->second;
    else if (log.rfind("/dev/fdset/", 0) != 0) vm.serial_log = log;
    break;
  }
  return vm;
}

std::vector<std::string> AgileArgv(const std::vector<std::string>& argv, const LibvirtVm& vm,
                                   const std::string& ram_path, const std::string& qmp_socket) {
  std::vector<std::string> out = argv;
  std::string& obj = out.at(vm.ram_object_arg);
  if (!obj.empty() && obj[0] == '{') {
    auto j = nlohmann::json::parse(obj);
    j["mem-path"] = ram_path;
    obj = j.dump();
  } else {
    std::string rebuilt;
    for (auto [k, v] : SplitKeyval(obj)) {
      if (k == "mem-path") v = ram_path;
      rebuilt += (rebuilt.empty() ? "" : ",") + (k.empty() ? "" : k + "=") + EscapeKeyval(v);
    }
    obj = rebuilt;
  }
  out.insert(out.end(), {"-qmp", "unix:" + EscapeKeyval(qmp_socket) + ",server=on,wait=off"});
  return out;
}

}  // namespace agile::qemu
