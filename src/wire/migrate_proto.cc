#include "wire/migrate_proto.h"

#include "wire/codec.h"
#include "wire/frame.h"

namespace agile::wire {
namespace {

constexpr uint32_t kMaxRunsPerFrame = 32768;
constexpr uint32_t kMaxRequestPerFrame = 4096;

// Encodes a payload with `fill` straight into a frame on *out.
template <typename F>
void Append(std::vector<uint8_t>* out, MigMsg type, F fill) {
  FrameBuilder fb(out, kMigMagic, kMigVersion, static_cast<uint16_t>(type));
  fill(fb.enc());
  fb.Finish();
}

}  // namespace

const char* MigMsgName(uint16_t type) {
  switch (static_cast<MigMsg>(type)) {
    case MigMsg::kHello: return "HELLO";
    case MigMsg::kHelloAck: return "HELLO_ACK";
    case MigMsg::kPages: return "PAGES";
    case MigMsg::kRound: return "ROUND";
    case MigMsg::kLocations: return "LOCATIONS";
    case MigMsg::kSwitchover: return "SWITCHOVER";
    case MigMsg::kSwitchoverAck: return "SWITCHOVER_ACK";
    case MigMsg::kPageRequest: return "PAGE_REQUEST";
    case MigMsg::kDone: return "DONE";
    case MigMsg::kDoneAck: return "DONE_ACK";
    case MigMsg::kAbort: return "ABORT";
    case MigMsg::kResume: return "RESUME";
    case MigMsg::kResumeAck: return "RESUME_ACK";
  }
  return "UNKNOWN";
}

const char* MigModeName(MigMode m) {
  switch (m) {
    case MigMode::kAgile: return "agile";
    case MigMode::kPrecopy: return "precopy";
    case MigMode::kPostcopy: return "postcopy";
    case MigMode::kQemuPrecopy: return "qemu-precopy";
    case MigMode::kQemuPostcopy: return "qemu-postcopy";
    case MigMode::kQemuPrecopyTuned: return "qemu-precopy-tuned";
    case MigMode::kQemuHybrid: return "qemu-hybrid";
  }
  return "unknown";
}

bool IsQemuMode(MigMode m) { return m >= MigMode::kQemuPrecopy && m <= MigMode::kQemuHybrid; }

Result<MigMode> ParseMigMode(const std::string& s) {
  for (auto m : {MigMode::kAgile, MigMode::kPrecopy, MigMode::kPostcopy, MigMode::kQemuPrecopy, MigMode::kQemuPostcopy,
                 MigMode::kQemuPrecopyTuned, MigMode::kQemuHybrid})
    if (s == MigModeName(m)) return m;
  return InvalidArgument("unknown migration mode '" + s +
                         "' (agile, precopy, postcopy, qemu-precopy, qemu-postcopy, qemu-precopy-tuned, qemu-hybrid)");
}

void AppendHello(std::vector<uint8_t>* out, const MigHello& m) {
  Append(out, MigMsg::kHello, [&](Encoder& e) {
    e.U8(static_cast<uint8_t>(m.mode));
    e.U64(m.page_count);
    e.Str(m.spec_json);
    e.Str(m.src_host);
    e.Str(m.store_addr);
    e.Str(m.store_vm_id);
    e.U32(static_cast<uint32_t>(m.copy_disk_bytes.size()));
    for (uint64_t b : m.copy_disk_bytes) e.U64(b);
    e.U64(m.migration_id_lo);
    e.U64(m.migration_id_hi);
  });
}

void AppendHelloAck(std::vector<uint8_t>* out, const MigHelloAck& m) {
  Append(out, MigMsg::kHelloAck, [&](Encoder& e) {
    e.U32(m.status);
    e.Str(m.message);
    e.U16(m.qemu_port);
    e.Str(m.dst_host);
    e.U16(m.nbd_port);
  });
}

void AppendPages(std::vector<uint8_t>* out, uint32_t round, const MigPage* pages, size_t n) {
  out->reserve(out->size() + kFrameHeaderSize + 8 + n * (8 + kMigPageSize));
  Append(out, MigMsg::kPages, [&](Encoder& e) {
    e.U32(round);
    e.U32(static_cast<uint32_t>(n));
    for (size_t i = 0; i < n; ++i) {
      e.U64(pages[i].index);
      e.Bytes(pages[i].data, kMigPageSize);
    }
  });
}

void AppendRound(std::vector<uint8_t>* out, uint32_t round, uint64_t pages) {
  Append(out, MigMsg::kRound, [&](Encoder& e) {
    e.U32(round);
    e.U64(pages);
  });
}

void AppendLocations(std::vector<uint8_t>* out, const std::vector<MigRun>& runs, size_t first, size_t n) {
  Append(out, MigMsg::kLocations, [&](Encoder& e) {
    e.U32(static_cast<uint32_t>(n));
    for (size_t i = first; i < first + n; ++i) {
      e.U64(runs[i].first);
      e.U64(runs[i].count);
      e.U8(static_cast<uint8_t>(runs[i].where));
    }
  });
}

void AppendSwitchover(std::vector<uint8_t>* out, const MigSwitchover& m) {
  Append(out, MigMsg::kSwitchover, [&](Encoder& e) {
    e.U8(m.has_token ? 1 : 0);
    e.U64(m.epoch);
    e.U64(m.secret);
    e.U64(m.secret_hi);
    e.U8(m.resume ? 1 : 0);
  });
}

void AppendSwitchoverAck(std::vector<uint8_t>* out, const MigSwitchoverAck& m) {
  Append(out, MigMsg::kSwitchoverAck, [&](Encoder& e) {
    e.U32(static_cast<uint32_t>(m.status));
    e.Str(m.message);
    e.U8(m.has_token ? 1 : 0);
    e.U64(m.epoch);
    e.U64(m.secret);
    e.U64(m.secret_hi);
  });
}

void AppendPageRequest(std::vector<uint8_t>* out, const uint64_t* idx, size_t n) {
  Append(out, MigMsg::kPageRequest, [&](Encoder& e) {
    e.U32(static_cast<uint32_t>(n));
    for (size_t i = 0; i < n; ++i) e.U64(idx[i]);
  });
}

void AppendEmpty(std::vector<uint8_t>* out, MigMsg type) {
  Append(out, type, [](Encoder&) {});
}

void AppendAbort(std::vector<uint8_t>* out, const std::string& reason) {
  Append(out, MigMsg::kAbort, [&](Encoder& e) { e.Str(reason); });
}

Result<MigHello> DecodeHello(const std::vector<uint8_t>& p) {
  Decoder d(p.data(), p.size());
  MigHello m;
  uint8_t mode = d.U8();
  m.page_count = d.U64();
  m.spec_json = d.Str(64 * 1024);
  m.src_host = d.Str(256);
  m.store_addr = d.Str(256);
  m.store_vm_id = d.Str(256);
  uint32_t disks = d.U32();
  if (disks > kMigMaxCopyDisks) return Corruption("migration HELLO: " + std::to_string(disks) + " disks to copy");
  for (uint32_t i = 0; i < disks && d.ok(); ++i) m.copy_disk_bytes.push_back(d.U64());
  m.migration_id_lo = d.U64();
  m.migration_id_hi = d.U64();
  AGILE_RETURN_IF_ERROR(d.Finish("migration HELLO"));
  if (mode < 1 || mode > static_cast<uint8_t>(MigMode::kQemuHybrid))
    return Corruption("migration HELLO: unknown mode " + std::to_string(mode));
  m.mode = static_cast<MigMode>(mode);
  return m;
}

Result<MigHelloAck> DecodeHelloAck(const std::vector<uint8_t>& p) {
  Decoder d(p.data(), p.size());
  MigHelloAck m;
  m.status = d.U32();
  m.message = d.Str(4096);
  m.qemu_port = d.U16();
  m.dst_host = d.Str(256);
  m.nbd_port = d.U16();
  AGILE_RETURN_IF_ERROR(d.Finish("migration HELLO_ACK"));
  return m;
}

Status DecodePages(const std::vector<uint8_t>& p, uint32_t* round, std::vector<MigPage>* pages) {
  Decoder d(p.data(), p.size());
  *round = d.U32();
  uint32_t n = d.U32();
  if (n > kMigMaxPagesPerFrame) return Corruption("migration PAGES: " + std::to_string(n) + " pages in one frame");
  pages->clear();
  for (uint32_t i = 0; i < n; ++i) {
    uint64_t idx = d.U64();
    const uint8_t* data = d.Bytes(kMigPageSize);
    if (!d.ok()) break;
    pages->push_back({idx, data});
  }
  return d.Finish("migration PAGES");
}

Status DecodeRound(const std::vector<uint8_t>& p, uint32_t* round, uint64_t* pages) {
  Decoder d(p.data(), p.size());
  *round = d.U32();
  *pages = d.U64();
  return d.Finish("migration ROUND");
}

Status DecodeLocations(const std::vector<uint8_t>& p, std::vector<MigRun>* runs) {
  Decoder d(p.data(), p.size());
  uint32_t n = d.U32();
  if (n > kMaxRunsPerFrame) return Corruption("migration LOCATIONS: too many runs");
  for (uint32_t i = 0; i < n && d.ok(); ++i) {
    MigRun r;
    r.first = d.U64();
    r.count = d.U64();
    uint8_t w = d.U8();
    if (w > static_cast<uint8_t>(PageWhere::kAtSource)) return Corruption("migration LOCATIONS: unknown place " + std::to_string(w));
    r.where = static_cast<PageWhere>(w);
    if (d.ok()) runs->push_back(r);
  }
  return d.Finish("migration LOCATIONS");
}

Result<MigSwitchover> DecodeSwitchover(const std::vector<uint8_t>& p) {
  Decoder d(p.data(), p.size());
  MigSwitchover m;
  uint8_t has = d.U8();
  m.epoch = d.U64();
  m.secret = d.U64();
  m.secret_hi = d.U64();
  uint8_t resume = d.U8();
  AGILE_RETURN_IF_ERROR(d.Finish("migration SWITCHOVER"));
  if (has > 1 || resume > 1) return Corruption("migration SWITCHOVER: bad flag");
  m.has_token = has == 1;
  m.resume = resume == 1;
  return m;
}

Result<MigSwitchoverAck> DecodeSwitchoverAck(const std::vector<uint8_t>& p) {
  Decoder d(p.data(), p.size());
  MigSwitchoverAck m;
  const uint32_t status = d.U32();
  m.message = d.Str(4096);
  const uint8_t has = d.U8();
  m.epoch = d.U64();
  m.secret = d.U64();
  m.secret_hi = d.U64();
  AGILE_RETURN_IF_ERROR(d.Finish("migration SWITCHOVER_ACK"));
  // An unknown status is not guessed at: the source treats the ACK as a
  // failure it cannot read, and stays fenced.
  if (status > static_cast<uint32_t>(SwitchoverResult::kNotResumed))
    return Corruption("migration SWITCHOVER_ACK: unknown status " + std::to_string(status));
  m.status = static_cast<SwitchoverResult>(status);
  if (has > 1) return Corruption("migration SWITCHOVER_ACK: bad flag");
  // Only a VM that never ran at the destination goes back with its lease.
  if (has == 1 && m.status != SwitchoverResult::kNotResumed)
    return Corruption("migration SWITCHOVER_ACK: a store token with a status other than not-resumed");
  m.has_token = has == 1;
  return m;
}

Status DecodePageRequest(const std::vector<uint8_t>& p, std::vector<uint64_t>* idx) {
  Decoder d(p.data(), p.size());
  uint32_t n = d.U32();
  if (n > kMaxRequestPerFrame) return Corruption("migration PAGE_REQUEST: too many pages");
  idx->clear();
  for (uint32_t i = 0; i < n && d.ok(); ++i) idx->push_back(d.U64());
  return d.Finish("migration PAGE_REQUEST");
}

Result<std::string> DecodeAbort(const std::vector<uint8_t>& p) {
  Decoder d(p.data(), p.size());
  std::string r = d.Str(4096);
  AGILE_RETURN_IF_ERROR(d.Finish("migration ABORT"));
  return r;
}

void AppendResume(std::vector<uint8_t>* out, const MigResume& m) {
  Append(out, MigMsg::kResume, [&](Encoder& e) {
    e.Str(m.vm);
    e.Str(m.src_host);
    e.U64(m.migration_id_lo);
    e.U64(m.migration_id_hi);
  });
}

void AppendResumeAck(std::vector<uint8_t>* out, const MigResumeAck& m) {
  Append(out, MigMsg::kResumeAck, [&](Encoder& e) {
    e.U32(m.status);
    e.Str(m.message);
    e.U64(m.pages_remote);
  });
}

Result<MigResume> DecodeResume(const std::vector<uint8_t>& p) {
  Decoder d(p.data(), p.size());
  MigResume m;
  m.vm = d.Str(256);
  m.src_host = d.Str(256);
  m.migration_id_lo = d.U64();
  m.migration_id_hi = d.U64();
  AGILE_RETURN_IF_ERROR(d.Finish("migration RESUME"));
  return m;
}

Result<MigResumeAck> DecodeResumeAck(const std::vector<uint8_t>& p) {
  Decoder d(p.data(), p.size());
  MigResumeAck m;
  m.status = d.U32();
  m.message = d.Str(4096);
  m.pages_remote = d.U64();
  AGILE_RETURN_IF_ERROR(d.Finish("migration RESUME_ACK"));
  return m;
}

}  // namespace agile::wire
