#include "migrate/migration_record.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/fd.h"
#include "base/io.h"

namespace agile::migrate {
namespace {

constexpr char kMagic[] = "AGMIGRC1";
// The remote bitmap is pages/4 hex digits: 64 MiB covers 1 TiB of guest RAM.
constexpr size_t kMaxBody = 64u << 20;
constexpr char kHex[] = "0123456789abcdef";

std::string Hex16(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof(b), "%016llx", static_cast<unsigned long long>(v));
  return b;
}

// One bit per page, little-endian within a byte, as hex digits.
std::string PackBits(const std::vector<uint8_t>& bytes) {
  std::string out;
  out.reserve((bytes.size() + 7) / 8 * 2);
  for (size_t i = 0; i < bytes.size(); i += 8) {
    uint8_t b = 0;
    for (size_t k = 0; k < 8 && i + k < bytes.size(); ++k)
      if (bytes[i + k]) b |= static_cast<uint8_t>(1u << k);
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

Result<std::vector<uint8_t>> UnpackBits(const std::string& hex, uint64_t pages) {
  if (hex.size() != (pages + 7) / 8 * 2) return Corruption("migration record: remote bitmap does not match its pages");
  std::vector<uint8_t> out(pages, 0);
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = HexDigit(hex[i]), lo = HexDigit(hex[i + 1]);
    if (hi < 0 || lo < 0) return Corruption("migration record: remote bitmap is not hex");
    const uint8_t b = static_cast<uint8_t>(hi << 4 | lo);
    for (size_t k = 0; k < 8; ++k) {
      const uint64_t p = i / 2 * 8 + k;
      if (!(b & (1u << k))) continue;
      if (p >= pages) return Corruption("migration record: remote bitmap has bits past the last page");
      out[p] = 1;
    }
  }
  return out;
}

}  // namespace

std::string EncodeMigrationRecord(const MigrationRecord& r) {
  nlohmann::json j = {{"vm", r.vm},
                      {"role", r.role == MigrationRecord::Role::kSource ? "source" : "destination"},
                      {"mode", wire::MigModeName(r.mode)},
                      {"id", {r.id_lo, r.id_hi}},
                      {"peer_host", r.peer_host},
                      {"peer_addr", r.peer_addr},
                      {"tail", r.tail},
                      {"lease", r.lease},
                      {"bandwidth", r.bandwidth},
                      {"recover", r.recover},
                      {"store_vm_id", r.store_vm_id},
                      {"pages", r.pages}};
  j["resume"] = r.resume;
  if (r.role == MigrationRecord::Role::kDestination) j["remote"] = PackBits(r.remote);
  std::string body = j.dump();
  return std::string(kMagic) + " " + Hex16(XXH3_64bits(body.data(), body.size())) + " " +
         std::to_string(body.size()) + "\n" + body;
}

Result<MigrationRecord> DecodeMigrationRecord(const std::string& bytes) {
  size_t nl = bytes.find('\n');
  if (nl == std::string::npos || nl > 64) return Corruption("migration record: no header line");
  std::istringstream head(bytes.substr(0, nl));
  std::string magic, check;
  size_t len = 0;
  if (!(head >> magic >> check >> len) || magic != kMagic || check.size() != 16)
    return Corruption("migration record: bad header '" + bytes.substr(0, nl) + "'");
  if (len > kMaxBody || bytes.size() - nl - 1 != len)
    return Corruption("migration record: body is " + std::to_string(bytes.size() - nl - 1) + " bytes, header says " +
                      std::to_string(len) + " (torn?)");
  std::string body = bytes.substr(nl + 1);
  if (Hex16(XXH3_64bits(body.data(), body.size())) != check) return Corruption("migration record: checksum mismatch");
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Corruption("migration record: body is not a JSON object");
  MigrationRecord r;
  try {
    r.vm = j.at("vm").get<std::string>();
    const std::string role = j.at("role").get<std::string>();
    if (role == "source") r.role = MigrationRecord::Role::kSource;
    else if (role == "destination") r.role = MigrationRecord::Role::kDestination;
    else return Corruption("migration record: unknown role '" + role + "'");
    auto mode = wire::ParseMigMode(j.at("mode").get<std::string>());
    if (!mode.ok()) return Corruption("migration record: " + mode.status().message());
    r.mode = *mode;
    const auto& id = j.at("id");
    if (!id.is_array() || id.size() != 2) return Corruption("migration record: bad migration id");
    r.id_lo = id[0].get<uint64_t>();
    r.id_hi = id[1].get<uint64_t>();
    r.peer_host = j.at("peer_host").get<std::string>();
    r.peer_addr = j.at("peer_addr").get<std::string>();
    r.tail = j.at("tail").get<bool>();
    r.lease = j.at("lease").get<bool>();
    r.bandwidth = j.at("bandwidth").get<uint64_t>();
    r.recover = j.at("recover").get<bool>();
    r.store_vm_id = j.at("store_vm_id").get<std::string>();
    r.pages = j.at("pages").get<uint64_t>();
    if (r.role == MigrationRecord::Role::kDestination) {
      AGILE_ASSIGN_OR_RETURN(r.remote, UnpackBits(j.at("remote").get<std::string>(), r.pages));
      r.resume = j.value("resume", false);  // absent in records of agiled before 2026-12-02
    } else {
      r.resume = j.value("resume", true);  // absent in records before 2026-12-03: VMs migrated running
    }
  } catch (const nlohmann::json::exception& e) {
    return Corruption(std::string("migration record: ") + e.what());
  }
  if (r.vm.empty()) return Corruption("migration record: no VM name");
  return r;
}

Status WriteMigrationRecord(const std::string& dir, const MigrationRecord& r, const std::string& name) {
  return ReplaceFileDurably(dir, name, EncodeMigrationRecord(r));
}

Result<MigrationRecord> ReadMigrationRecord(const std::string& dir, const std::string& name) {
  std::string path = dir + "/" + name;
  AGILE_ASSIGN_OR_RETURN(std::string bytes, ReadSmallFile(path, kMaxBody + 128, "a migration record"));
  auto r = DecodeMigrationRecord(bytes);
  if (!r.ok()) return r.status().Annotate(path);
  return r;
}

Status RemoveMigrationRecord(const std::string& dir, const std::string& name) {
  std::string path = dir + "/" + name;
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return ErrnoStatus("remove " + path);
  }
  return SyncDir(dir);
}

}  // namespace agile::migrate
