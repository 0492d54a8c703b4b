#include "wire/memd_proto.h"

namespace agile::memd {

bool SameToken(const OwnerToken& a, const OwnerToken& b) {
  // Every word is looked at, whatever differs: no early exit to time.
  volatile uint64_t diff = (a.epoch ^ b.epoch) | (a.secret ^ b.secret) | (a.secret_hi ^ b.secret_hi);
  return diff == 0;
}
namespace {

using wire::Decoder;
using wire::Encoder;

constexpr size_t kPutEntrySize = 8 + kPageSize;
constexpr size_t kMaxCounterNameLen = 64;

void EncodeToken(Encoder& e, OwnerToken t) {
  e.U64(t.epoch);
  e.U64(t.secret);
  e.U64(t.secret_hi);
}

OwnerToken DecodeToken(Decoder& d) {
  OwnerToken t;
  t.epoch = d.U64();
  t.secret = d.U64();
  t.secret_hi = d.U64();
  return t;
}

void AppendIndexBatch(std::vector<uint8_t>* out, MsgType type, uint64_t id, std::string_view vm,
                      OwnerToken token, std::span<const uint64_t> indexes) {
  FrameBuilder fb(out, static_cast<uint16_t>(type));
  fb.enc().U64(id);
  fb.enc().Str(vm);
  EncodeToken(fb.enc(), token);
  fb.enc().U32(static_cast<uint32_t>(indexes.size()));
  for (uint64_t i : indexes) fb.enc().U64(i);
  fb.Finish();
}

Status Malformed(const char* what, const std::string& why) {
  return Corruption(std::string(what) + ": " + why);
}

// Checks a batch count against the limit and against the bytes left, so a
// lying count is caught before anything is allocated for it.
Status CheckCount(const char* what, uint32_t count, size_t entry_size, const Decoder& d) {
  if (count > kMaxBatchPages)
    return Malformed(what, "batch of " + std::to_string(count) + " exceeds the limit of " +
                               std::to_string(kMaxBatchPages));
  if (!d.ok() || d.remaining() != static_cast<size_t>(count) * entry_size)
    return Malformed(what, "count " + std::to_string(count) + " does not match the " +
                               std::to_string(d.remaining()) + " bytes that follow");
  return Status::Ok();
}

Result<std::vector<uint64_t>> DecodeIndexes(const char* what, Decoder& d) {
  uint32_t n = d.U32();
  AGILE_RETURN_IF_ERROR(CheckCount(what, n, 8, d));
  std::vector<uint64_t> v(n);
  for (auto& i : v) i = d.U64();
  return v;
}

void AppendResponseHead(Encoder& e, uint64_t id, const Status& st) {
  e.U64(id);
  e.U16(StatusToWire(st.code()));
  std::string_view msg = st.message();
  e.Str(msg.substr(0, kMaxMessageLen));
}

Status ExpectBody(const ResponseView& r, const char* what) {
  if (!r.status.ok()) return Internal(std::string(what) + ": decoding the body of an error response");
  return Status::Ok();
}

}  // namespace

const char* MsgTypeName(MsgType t) {
  switch (t) {
    case MsgType::kHello: return "HELLO";
    case MsgType::kClaim: return "CLAIM";
    case MsgType::kPut: return "PUT";
    case MsgType::kGet: return "GET";
    case MsgType::kDelete: return "DELETE";
    case MsgType::kTransfer: return "TRANSFER";
    case MsgType::kRelease: return "RELEASE";
    case MsgType::kStat: return "STAT";
    case MsgType::kReclaim: return "RECLAIM";
  }
  return "?";
}

bool IsRequestType(uint16_t type) {
  return type >= static_cast<uint16_t>(MsgType::kHello) && type <= static_cast<uint16_t>(MsgType::kReclaim);
}

Status ValidateVmId(std::string_view vm) {
  if (vm.empty() || vm.size() > kMaxIdLen)
    return InvalidArgument("vm id must be 1.." + std::to_string(kMaxIdLen) + " characters");
  if (vm[0] == '.') return InvalidArgument("vm id '" + std::string(vm) + "' must not start with '.'");
  for (char c : vm) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-';
    if (!ok) return InvalidArgument("vm id '" + std::string(vm) + "' may only use [A-Za-z0-9._-]");
  }
  return Status::Ok();
}

Status ValidateHostId(std::string_view host) {
  if (host.empty() || host.size() > kMaxIdLen)
    return InvalidArgument("host id must be 1.." + std::to_string(kMaxIdLen) + " characters");
  for (char c : host)
    if (c <= ' ' || c > '~') return InvalidArgument("host id must be printable ASCII without spaces");
  return Status::Ok();
}

// ---- Requests --------------------------------------------------------------

void AppendHello(std::vector<uint8_t>* out, uint64_t id, std::string_view host_id) {
  FrameBuilder fb(out, static_cast<uint16_t>(MsgType::kHello));
  fb.enc().U64(id);
  fb.enc().Str(host_id);
  fb.Finish();
}

void AppendClaim(std::vector<uint8_t>* out, uint64_t id, std::string_view vm, std::string_view host_id) {
  FrameBuilder fb(out, static_cast<uint16_t>(MsgType::kClaim));
  fb.enc().U64(id);
  fb.enc().Str(vm);
  fb.enc().Str(host_id);
  fb.Finish();
}

void AppendPut(std::vector<uint8_t>* out, uint64_t id, std::string_view vm, OwnerToken token,
               std::span<const PageRef> pages) {
  out->reserve(out->size() + wire::kFrameHeaderSize + 64 + vm.size() + pages.size() * kPutEntrySize);
  FrameBuilder fb(out, static_cast<uint16_t>(MsgType::kPut));
  fb.enc().U64(id);
  fb.enc().Str(vm);
  EncodeToken(fb.enc(), token);
  fb.enc().U32(static_cast<uint32_t>(pages.size()));
  for (const PageRef& p : pages) {
    fb.enc().U64(p.index);
    fb.enc().Bytes(p.data, kPageSize);
  }
  fb.Finish();
}

void AppendGet(std::vector<uint8_t>* out, uint64_t id, std::string_view vm, OwnerToken token,
               std::span<const uint64_t> indexes) {
  AppendIndexBatch(out, MsgType::kGet, id, vm, token, indexes);
}

void AppendDelete(std::vector<uint8_t>* out, uint64_t id, std::string_view vm, OwnerToken token,
                  std::span<const uint64_t> indexes) {
  AppendIndexBatch(out, MsgType::kDelete, id, vm, token, indexes);
}

void AppendTransfer(std::vector<uint8_t>* out, uint64_t id, std::string_view vm, OwnerToken token,
                    std::string_view new_host) {
  FrameBuilder fb(out, static_cast<uint16_t>(MsgType::kTransfer));
  fb.enc().U64(id);
  fb.enc().Str(vm);
  EncodeToken(fb.enc(), token);
  fb.enc().Str(new_host);
  fb.Finish();
}

void AppendRelease(std::vector<uint8_t>* out, uint64_t id, std::string_view vm, OwnerToken token) {
  FrameBuilder fb(out, static_cast<uint16_t>(MsgType::kRelease));
  fb.enc().U64(id);
  fb.enc().Str(vm);
  EncodeToken(fb.enc(), token);
  fb.Finish();
}

void AppendStat(std::vector<uint8_t>* out, uint64_t id) {
  FrameBuilder fb(out, static_cast<uint16_t>(MsgType::kStat));
  fb.enc().U64(id);
  fb.Finish();
}

void AppendReclaim(std::vector<uint8_t>* out, uint64_t id, std::string_view vm, OwnerToken token) {
  FrameBuilder fb(out, static_cast<uint16_t>(MsgType::kReclaim));
  fb.enc().U64(id);
  fb.enc().Str(vm);
  EncodeToken(fb.enc(), token);
  fb.Finish();
}

Result<Request> DecodeRequest(uint16_t type, const uint8_t* payload, size_t len) {
  if (!IsRequestType(type)) return Corruption("unknown request type " + std::to_string(type));
  auto t = static_cast<MsgType>(type);
  const char* what = MsgTypeName(t);
  Decoder d(payload, len);
  Request req;
  req.id = d.U64();
  switch (t) {
    case MsgType::kHello: {
      HelloRequest r;
      r.host_id = d.Str(kMaxIdLen);
      req.body = std::move(r);
      break;
    }
    case MsgType::kClaim: {
      ClaimRequest r;
      r.vm = d.Str(kMaxIdLen);
      r.host_id = d.Str(kMaxIdLen);
      req.body = std::move(r);
      break;
    }
    case MsgType::kPut: {
      PutRequest r;
      r.vm = d.Str(kMaxIdLen);
      r.token = DecodeToken(d);
      uint32_t n = d.U32();
      AGILE_RETURN_IF_ERROR(CheckCount(what, n, kPutEntrySize, d));
      r.pages.resize(n);
      for (PageRef& p : r.pages) {
        p.index = d.U64();
        p.data = d.Bytes(kPageSize);
      }
      req.body = std::move(r);
      break;
    }
    case MsgType::kGet: {
      GetRequest r;
      r.vm = d.Str(kMaxIdLen);
      r.token = DecodeToken(d);
      AGILE_ASSIGN_OR_RETURN(r.indexes, DecodeIndexes(what, d));
      req.body = std::move(r);
      break;
    }
    case MsgType::kDelete: {
      DeleteRequest r;
      r.vm = d.Str(kMaxIdLen);
      r.token = DecodeToken(d);
      AGILE_ASSIGN_OR_RETURN(r.indexes, DecodeIndexes(what, d));
      req.body = std::move(r);
      break;
    }
    case MsgType::kTransfer: {
      TransferRequest r;
      r.vm = d.Str(kMaxIdLen);
      r.token = DecodeToken(d);
      r.new_host = d.Str(kMaxIdLen);
      req.body = std::move(r);
      break;
    }
    case MsgType::kRelease: {
      ReleaseRequest r;
      r.vm = d.Str(kMaxIdLen);
      r.token = DecodeToken(d);
      req.body = std::move(r);
      break;
    }
    case MsgType::kStat:
      req.body = StatRequest{};
      break;
    case MsgType::kReclaim: {
      ReclaimRequest r;
      r.vm = d.Str(kMaxIdLen);
      r.token = DecodeToken(d);
      req.body = std::move(r);
      break;
    }
  }
  AGILE_RETURN_IF_ERROR(d.Finish(what));
  return req;
}

// ---- Responses -------------------------------------------------------------

void AppendErrorResponse(std::vector<uint8_t>* out, uint16_t type, uint64_t id, const Status& st) {
  FrameBuilder fb(out, type);
  AppendResponseHead(fb.enc(), id, st);
  fb.Finish();
}

void AppendHelloReply(std::vector<uint8_t>* out, uint64_t id, const HelloReply& r) {
  FrameBuilder fb(out, ResponseType(MsgType::kHello));
  AppendResponseHead(fb.enc(), id, Status::Ok());
  fb.enc().Str(std::string_view(r.server_id).substr(0, kMaxIdLen));
  fb.enc().U32(r.max_batch_pages);
  fb.enc().U32(r.max_payload);
  fb.Finish();
}

void AppendTokenReply(std::vector<uint8_t>* out, MsgType t, uint64_t id, OwnerToken token) {
  FrameBuilder fb(out, ResponseType(t));
  AppendResponseHead(fb.enc(), id, Status::Ok());
  EncodeToken(fb.enc(), token);
  fb.Finish();
}

void AppendCountReply(std::vector<uint8_t>* out, MsgType t, uint64_t id, uint64_t count) {
  FrameBuilder fb(out, ResponseType(t));
  AppendResponseHead(fb.enc(), id, Status::Ok());
  fb.enc().U64(count);
  fb.Finish();
}

void AppendStatReply(std::vector<uint8_t>* out, uint64_t id, const StatReply& r) {
  FrameBuilder fb(out, ResponseType(MsgType::kStat));
  Encoder& e = fb.enc();
  AppendResponseHead(e, id, Status::Ok());
  e.U64(r.pages);
  e.U64(r.bytes);
  e.U64(r.capacity_bytes);
  e.U8(r.persistent);
  e.U32(r.vm_count);
  size_t n_vms = std::min<size_t>(r.vms.size(), kMaxStatVms);
  e.U32(static_cast<uint32_t>(n_vms));
  for (size_t i = 0; i < n_vms; ++i) {
    e.Str(r.vms[i].vm);
    e.Str(r.vms[i].owner);
    e.U64(r.vms[i].epoch);
    e.U64(r.vms[i].pages);
  }
  size_t n_ctr = std::min<size_t>(r.counters.size(), kMaxStatCounters);
  e.U32(static_cast<uint32_t>(n_ctr));
  for (size_t i = 0; i < n_ctr; ++i) {
    e.Str(std::string_view(r.counters[i].first).substr(0, kMaxCounterNameLen));
    e.U64(r.counters[i].second);
  }
  fb.Finish();
}

GetReplyWriter::GetReplyWriter(std::vector<uint8_t>* out, uint64_t id, uint32_t count)
    : out_(out), fb_(out, ResponseType(MsgType::kGet)), id_(id), count_(count) {
  AppendResponseHead(fb_.enc(), id, Status::Ok());
  fb_.enc().U32(count);
  flags_off_ = out_->size();
  out_->resize(flags_off_ + count + static_cast<size_t>(count) * kPageSize);
}

void GetReplyWriter::Finish(uint32_t n_present) {
  out_->resize(flags_off_ + count_ + static_cast<size_t>(n_present) * kPageSize);
  fb_.Finish();
}

void GetReplyWriter::Fail(const Status& st) {
  out_->resize(fb_.start());
  AppendErrorResponse(out_, ResponseType(MsgType::kGet), id_, st);
}

void AppendGetReplyHead(std::vector<uint8_t>* out, uint64_t id, std::span<const uint8_t> present,
                        std::span<const uint8_t* const> pages) {
  size_t start = out->size();
  Encoder e(out);
  e.Skip(wire::kFrameHeaderSize);
  AppendResponseHead(e, id, Status::Ok());
  e.U32(static_cast<uint32_t>(present.size()));
  e.Bytes(present.data(), present.size());
  size_t head_len = out->size() - start - wire::kFrameHeaderSize;
  e.PatchU32(start, kMagic);
  e.PatchU16(start + 4, kVersion);
  e.PatchU16(start + 6, ResponseType(MsgType::kGet));
  e.PatchU32(start + 8, static_cast<uint32_t>(head_len + pages.size() * kPageSize));
  // The checksum runs over the pages where they lie: the only pass over
  // them before the kernel's own copy in send.
  wire::FrameHasher h(out->data() + start);
  h.Update(out->data() + start + wire::kFrameHeaderSize, head_len);
  for (const uint8_t* p : pages) h.Update(p, kPageSize);
  e.PatchU32(start + 12, h.Digest());
}

Result<ResponseView> DecodeResponse(uint16_t type, const uint8_t* payload, size_t len) {
  bool known = type == kProtocolErrorType || ((type & kResponseFlag) && IsRequestType(type & ~kResponseFlag));
  if (!known) return Corruption("unknown response type " + std::to_string(type));
  Decoder d(payload, len);
  ResponseView r;
  r.type = type;
  r.id = d.U64();
  uint16_t code = d.U16();
  std::string msg = d.Str(kMaxMessageLen);
  if (!d.ok()) return Corruption("response: truncated head");
  Code c = StatusFromWire(code);
  if (c == Code::kInternal && code != StatusToWire(Code::kInternal))
    msg = "unknown status code " + std::to_string(code) + ": " + msg;
  if (c == Code::kOk) {
    if (!msg.empty()) return Corruption("response: ok status with a message");
    if (type == kProtocolErrorType) return Corruption("protocol error frame with ok status");
    r.body = payload + (len - d.remaining());
    r.body_len = d.remaining();
  } else {
    if (!d.AtEnd()) return Corruption("error response: " + std::to_string(d.remaining()) + " trailing bytes");
    r.status = Status(c, msg);
  }
  return r;
}

Result<HelloReply> DecodeHelloReply(const ResponseView& r) {
  AGILE_RETURN_IF_ERROR(ExpectBody(r, "HELLO reply"));
  Decoder d(r.body, r.body_len);
  HelloReply h;
  h.server_id = d.Str(kMaxIdLen);
  h.max_batch_pages = d.U32();
  h.max_payload = d.U32();
  AGILE_RETURN_IF_ERROR(d.Finish("HELLO reply"));
  if (h.max_batch_pages == 0) return Corruption("HELLO reply: server allows no pages per batch");
  return h;
}

Result<OwnerToken> DecodeTokenReply(const ResponseView& r) {
  AGILE_RETURN_IF_ERROR(ExpectBody(r, "token reply"));
  Decoder d(r.body, r.body_len);
  OwnerToken t = DecodeToken(d);
  AGILE_RETURN_IF_ERROR(d.Finish("token reply"));
  return t;
}

Result<uint64_t> DecodeCountReply(const ResponseView& r) {
  AGILE_RETURN_IF_ERROR(ExpectBody(r, "count reply"));
  Decoder d(r.body, r.body_len);
  uint64_t n = d.U64();
  AGILE_RETURN_IF_ERROR(d.Finish("count reply"));
  return n;
}

Result<StatReply> DecodeStatReply(const ResponseView& r) {
  AGILE_RETURN_IF_ERROR(ExpectBody(r, "STAT reply"));
  Decoder d(r.body, r.body_len);
  StatReply s;
  s.pages = d.U64();
  s.bytes = d.U64();
  s.capacity_bytes = d.U64();
  s.persistent = d.U8();
  s.vm_count = d.U32();
  uint32_t n_vms = d.U32();
  if (n_vms > kMaxStatVms) return Corruption("STAT reply: " + std::to_string(n_vms) + " VMs listed");
  for (uint32_t i = 0; i < n_vms && d.ok(); ++i) {
    VmStat v;
    v.vm = d.Str(kMaxIdLen);
    v.owner = d.Str(kMaxIdLen);
    v.epoch = d.U64();
    v.pages = d.U64();
    s.vms.push_back(std::move(v));
  }
  uint32_t n_ctr = d.U32();
  if (n_ctr > kMaxStatCounters) return Corruption("STAT reply: " + std::to_string(n_ctr) + " counters");
  for (uint32_t i = 0; i < n_ctr && d.ok(); ++i) {
    std::string name = d.Str(kMaxCounterNameLen);
    uint64_t v = d.U64();
    s.counters.emplace_back(std::move(name), v);
  }
  AGILE_RETURN_IF_ERROR(d.Finish("STAT reply"));
  return s;
}

void AppendReclaimReply(std::vector<uint8_t>* out, uint64_t id, const ReclaimReply& r) {
  FrameBuilder fb(out, ResponseType(MsgType::kReclaim));
  Encoder& e = fb.enc();
  AppendResponseHead(e, id, Status::Ok());
  e.U64(r.pages);
  size_t n = std::min<size_t>(r.lost.size(), kMaxReclaimLost);
  // More lost pages than one reply lists: the rest are reported as unknown.
  e.U8(r.lost_unknown || n < r.lost.size() ? 1 : 0);
  e.U32(static_cast<uint32_t>(n));
  for (size_t i = 0; i < n; ++i) e.U64(r.lost[i]);
  fb.Finish();
}

Result<ReclaimReply> DecodeReclaimReply(const ResponseView& r) {
  AGILE_RETURN_IF_ERROR(ExpectBody(r, "RECLAIM reply"));
  Decoder d(r.body, r.body_len);
  ReclaimReply v;
  v.pages = d.U64();
  uint8_t unknown = d.U8();
  uint32_t n = d.U32();
  if (unknown > 1) return Corruption("RECLAIM reply: lost_unknown flag " + std::to_string(unknown));
  if (n > kMaxReclaimLost || d.remaining() != size_t{n} * 8)
    return Corruption("RECLAIM reply: " + std::to_string(n) + " lost pages in " + std::to_string(d.remaining()) +
                      " bytes");
  v.lost_unknown = unknown == 1;
  v.lost.reserve(n);
  for (uint32_t i = 0; i < n; ++i) v.lost.push_back(d.U64());
  AGILE_RETURN_IF_ERROR(d.Finish("RECLAIM reply"));
  return v;
}

Result<GetReplyView> DecodeGetReply(const ResponseView& r, uint32_t expected_count) {
  AGILE_RETURN_IF_ERROR(ExpectBody(r, "GET reply"));
  Decoder d(r.body, r.body_len);
  GetReplyView v;
  v.count = d.U32();
  if (v.count != expected_count)
    return Corruption("GET reply: " + std::to_string(v.count) + " flags for " + std::to_string(expected_count) +
                      " pages asked");
  v.present = d.Bytes(v.count);
  if (v.present == nullptr) return Corruption("GET reply: truncated presence flags");
  size_t n_present = 0;
  for (uint32_t i = 0; i < v.count; ++i) {
    if (v.present[i] > 1) return Corruption("GET reply: presence flag " + std::to_string(v.present[i]));
    n_present += v.present[i];
  }
  if (d.remaining() != n_present * kPageSize)
    return Corruption("GET reply: " + std::to_string(d.remaining()) + " page bytes for " +
                      std::to_string(n_present) + " present pages");
  v.pages = d.Bytes(n_present * kPageSize);
  return v;
}

// ---- Status codes ----------------------------------------------------------

uint16_t StatusToWire(Code c) {
  switch (c) {
    case Code::kOk: return 0;
    case Code::kInvalidArgument: return 1;
    case Code::kNotFound: return 2;
    case Code::kAlreadyExists: return 3;
    case Code::kUnavailable: return 4;
    case Code::kCorruption: return 5;
    case Code::kPermissionDenied: return 6;
    case Code::kResourceExhausted: return 7;
    case Code::kUnsupported: return 8;
    case Code::kInternal: return 9;
    case Code::kNoSpace: return 10;
  }
  return 9;
}

Code StatusFromWire(uint16_t w) {
  switch (w) {
    case 0: return Code::kOk;
    case 1: return Code::kInvalidArgument;
    case 2: return Code::kNotFound;
    case 3: return Code::kAlreadyExists;
    case 4: return Code::kUnavailable;
    case 5: return Code::kCorruption;
    case 6: return Code::kPermissionDenied;
    case 7: return Code::kResourceExhausted;
    case 8: return Code::kUnsupported;
    case 10: return Code::kNoSpace;
    default: return Code::kInternal;
  }
}

}  // namespace agile::memd
