#include "host/vm_record.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/fd.h"
#include "base/io.h"

namespace agile::host {
namespace {

constexpr char kMagic[] = "AGVMREC1";
constexpr size_t kMaxBody = 1 << 20;

std::string Hex16(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof(b), "%016llx", static_cast<unsigned long long>(v));
  return b;
}

}  // namespace

std::string EncodeVmRecord(const VmRecord& r) {
  nlohmann::json j = {{"spec", r.spec.ToJson()},
                      {"pid", r.pid},
                      {"pid_start_ticks", r.pid_start_ticks},
                      {"incoming", r.incoming},
                      {"unconfirmed", r.unconfirmed},
                      {"store_vm_id", r.store_vm_id},
                      {"store_owned", r.store_owned},
                      {"token", {r.token_epoch, r.token_secret, r.token_secret_hi}}};
  std::string body = j.dump();
  return std::string(kMagic) + " " + Hex16(XXH3_64bits(body.data(), body.size())) + " " +
         std::to_string(body.size()) + "\n" + body;
}

Result<VmRecord> DecodeVmRecord(const std::string& bytes) {
  size_t nl = bytes.find('\n');
  if (nl == std::string::npos || nl > 64) return Corruption("VM record: no header line");
  std::istringstream head(bytes.substr(0, nl));
  std::string magic, check;
  size_t len = 0;
  if (!(head >> magic >> check >> len) || magic != kMagic || check.size() != 16)
    return Corruption("VM record: bad header '" + bytes.substr(0, nl) + "'");
  if (len > kMaxBody || bytes.size() - nl - 1 != len)
    return Corruption("VM record: body is " + std::to_string(bytes.size() - nl - 1) + " bytes, header says " +
                      std::to_string(len) + " (torn?)");
  std::string body = bytes.substr(nl + 1);
  if (Hex16(XXH3_64bits(body.data(), body.size())) != check) return Corruption("VM record: checksum mismatch");
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Corruption("VM record: body is not a JSON object");
  VmRecord r;
  try {
    auto spec = qemu::VmSpec::FromJson(j.at("spec"));
    if (!spec.ok()) return Corruption("VM record: bad spec: " + spec.status().message());
    r.spec = *spec;
    r.pid = j.at("pid").get<int32_t>();
    r.pid_start_ticks = j.at("pid_start_ticks").get<uint64_t>();
    r.incoming = j.at("incoming").get<bool>();
    r.unconfirmed = j.value("unconfirmed", false);  // absent in records of agiled before 2026-12-02
    r.store_vm_id = j.at("store_vm_id").get<std::string>();
    r.store_owned = j.at("store_owned").get<bool>();
    const auto& t = j.at("token");
    if (!t.is_array() || t.size() != 3) return Corruption("VM record: bad token");
    r.token_epoch = t[0].get<uint64_t>();
    r.token_secret = t[1].get<uint64_t>();
    r.token_secret_hi = t[2].get<uint64_t>();
  } catch (const nlohmann::json::exception& e) {
    return Corruption(std::string("VM record: ") + e.what());
  }
  return r;
}

Status WriteVmRecord(const std::string& dir, const VmRecord& r) {
  return ReplaceFileDurably(dir, kVmRecordFile, EncodeVmRecord(r));
}

Result<VmRecord> ReadVmRecord(const std::string& dir) {
  std::string path = dir + "/" + kVmRecordFile;
  AGILE_ASSIGN_OR_RETURN(std::string bytes, ReadSmallFile(path, kMaxBody + 128, "a VM record"));
  auto r = DecodeVmRecord(bytes);
  if (!r.ok()) return r.status().Annotate(path);
  return r;
}

Result<uint64_t> ProcessStartTicks(int32_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!f || !std::getline(f, line)) return NotFound("process " + std::to_string(pid) + " is gone");
  // The command name (field 2) may hold spaces and parentheses: count fields
  // after the last ')'.
  size_t rp = line.rfind(')');
  if (rp == std::string::npos) return Corruption("unreadable /proc/" + std::to_string(pid) + "/stat");
  std::istringstream rest(line.substr(rp + 2));
  std::string field;
  for (int i = 3; i <= 22; ++i) {
    if (!(rest >> field)) return Corruption("short /proc/" + std::to_string(pid) + "/stat");
  }
  return std::stoull(field);
}

}  // namespace agile::host
