#include "qemu/devices.h"

#include <filesystem>
#include <set>
#include <sstream>

namespace agile::qemu {
namespace {

bool SafeIfName(const std::string& s) {
  // Linux interface names: at most 15 bytes; no ',' or '=' so QEMU's option
  // parser cannot be confused.
  if (s.empty() || s.size() > 15) return false;
  for (char c : s)
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) return false;
  return true;
}

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep)) out.push_back(cur);
  if (!s.empty() && s.back() == sep) out.push_back("");
  return out;
}

// QEMU's cache= shorthand in -blockdev terms: the host page cache
// (cache.direct), flushes (cache.no-flush) and the guest-visible write cache
// (the device's write-cache property).
struct CacheMode {
  bool direct;
  bool no_flush;
  bool write_cache;
};
CacheMode CacheOf(const std::string& mode) {
  if (mode == "none") return {true, false, true};
  if (mode == "writethrough") return {false, false, false};
  if (mode == "directsync") return {true, false, false};
  if (mode == "unsafe") return {false, true, true};
  return {false, false, true};  // writeback
}

}  // namespace

std::string DiskNodeName(size_t i) { return "disk" + std::to_string(i); }

nlohmann::json DiskSpec::ToJson() const {
  return {{"path", path}, {"format", format}, {"cache", cache}, {"bus", bus}};
}

Result<DiskSpec> DiskSpec::FromJson(const nlohmann::json& j) {
  DiskSpec d;
  try {
    d.path = j.at("path").get<std::string>();
    d.format = j.value("format", d.format);
    d.cache = j.value("cache", d.cache);
    d.bus = j.value("bus", d.bus);
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(std::string("bad disk spec: ") + e.what());
  }
  AGILE_RETURN_IF_ERROR(d.Validate());
  return d;
}

Status DiskSpec::Validate() const {
  if (path.empty() || path[0] != '/') return InvalidArgument("disk path '" + path + "' must be absolute");
  if (path.size() > 4096) return InvalidArgument("disk path is too long");
  for (char c : path)
    if (c == '\0' || c == '\n') return InvalidArgument("disk path holds a NUL or newline");
  if (format != "qcow2" && format != "raw") return InvalidArgument("disk format '" + format + "' (qcow2, raw)");
  static const std::set<std::string> kCache = {"writeback", "none", "writethrough", "directsync", "unsafe"};
  if (!kCache.count(cache))
    return InvalidArgument("disk cache '" + cache + "' (writeback, none, writethrough, directsync, unsafe)");
  if (bus != "virtio-blk" && bus != "virtio-scsi") return InvalidArgument("disk bus '" + bus + "' (virtio-blk, virtio-scsi)");
  return Status::Ok();
}

nlohmann::json NicSpec::ToJson() const { return {{"kind", kind}, {"ifname", ifname}}; }

Result<NicSpec> NicSpec::FromJson(const nlohmann::json& j) {
  NicSpec n;
  try {
    n.kind = j.at("kind").get<std::string>();
    n.ifname = j.value("ifname", std::string());
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(std::string("bad NIC spec: ") + e.what());
  }
  AGILE_RETURN_IF_ERROR(n.Validate());
  return n;
}

Status NicSpec::Validate() const {
  if (kind == "user") {
    if (!ifname.empty()) return InvalidArgument("a user NIC names no interface");
    return Status::Ok();
  }
  if (kind != "tap" && kind != "bridge") return InvalidArgument("NIC kind '" + kind + "' (user, tap=IF, bridge=BR)");
  if (!SafeIfName(ifname)) return InvalidArgument("NIC " + kind + " interface '" + ifname + "' must be 1-15 of [A-Za-z0-9_.-]");
  return Status::Ok();
}

Result<DiskSpec> ParseDiskOption(const std::string& s) {
  auto parts = Split(s, ',');
  if (parts.empty() || parts[0].empty()) return InvalidArgument("--disk needs a path: PATH[,format=..][,cache=..][,bus=..]");
  DiskSpec d;
  // The daemon's working directory is not the caller's: resolve here.
  d.path = parts[0][0] == '/' ? parts[0] : std::filesystem::absolute(parts[0]).lexically_normal().string();
  for (size_t i = 1; i < parts.size(); ++i) {
    auto eq = parts[i].find('=');
    std::string k = parts[i].substr(0, eq), v = eq == std::string::npos ? "" : parts[i].substr(eq + 1);
    if (k == "format") d.format = v;
    else if (k == "cache") d.cache = v;
    else if (k == "bus") d.bus = v;
    else return InvalidArgument("--disk option '" + parts[i] + "' (format=, cache=, bus=; a path holding ',' is not supported)");
  }
  AGILE_RETURN_IF_ERROR(d.Validate());
  return d;
}

Result<NicSpec> ParseNicOption(const std::string& s) {
  NicSpec n;
  auto eq = s.find('=');
  n.kind = s.substr(0, eq);
  if (eq != std::string::npos) n.ifname = s.substr(eq + 1);
  AGILE_RETURN_IF_ERROR(n.Validate());
  return n;
}

std::vector<std::string> DiskArgs(const std::vector<DiskSpec>& disks) {
  std::vector<std::string> a;
  bool scsi = false;
  for (const auto& d : disks) scsi |= d.bus == "virtio-scsi";
  if (scsi) a.insert(a.end(), {"-device", "virtio-scsi-pci,id=scsi0"});
  for (size_t i = 0; i < disks.size(); ++i) {
    const DiskSpec& d = disks[i];
    CacheMode c = CacheOf(d.cache);
    // JSON -blockdev: the path needs no escaping of QEMU's ',' syntax.
    nlohmann::json file = {{"driver", "file"},
                           {"filename", d.path},
                           {"cache", {{"direct", c.direct}, {"no-flush", c.no_flush}}}};
    nlohmann::json node = {{"driver", d.format}, {"node-name", DiskNodeName(i)}, {"file", file},
                           {"cache", {{"direct", c.direct}, {"no-flush", c.no_flush}}}};
    a.insert(a.end(), {"-blockdev", node.dump()});
    std::string dev = d.bus == "virtio-scsi" ? "scsi-hd,bus=scsi0.0" : "virtio-blk-pci";
    dev += ",id=" + DiskNodeName(i) + "-dev,drive=" + DiskNodeName(i) + ",bootindex=" + std::to_string(i + 1) +
           ",write-cache=" + (c.write_cache ? "on" : "off");
    a.insert(a.end(), {"-device", dev});
  }
  return a;
}

std::vector<std::string> NicArgs(const std::string& vm_name, const std::vector<NicSpec>& nics) {
  std::vector<std::string> a;
  // FNV-1a of the name: a stable, locally administered MAC per (VM, NIC).
  uint32_t h = 2166136261u;
  for (char c : vm_name) h = (h ^ static_cast<uint8_t>(c)) * 16777619u;
  for (size_t i = 0; i < nics.size(); ++i) {
    const NicSpec& n = nics[i];
    std::string id = "net" + std::to_string(i);
    std::string nd = n.kind == "user"  ? "user,id=" + id
                     : n.kind == "tap" ? "tap,id=" + id + ",ifname=" + n.ifname + ",script=no,downscript=no"
                                       : "bridge,id=" + id + ",br=" + n.ifname;
    char mac[32];
    snprintf(mac, sizeof mac, "52:54:%02x:%02x:%02x:%02x", (h >> 24) & 0xff, (h >> 16) & 0xff, (h >> 8) & 0xff,
             static_cast<unsigned>((h + i) & 0xff));
    a.insert(a.end(), {"-netdev", nd, "-device", "virtio-net-pci,netdev=" + id + ",mac=" + mac});
  }
  return a;
}

}  // namespace agile::qemu
