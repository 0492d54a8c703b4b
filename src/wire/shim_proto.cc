#include "wire/shim_proto.h"

#include "wire/codec.h"
#include "wire/frame.h"

namespace agile::wire {
namespace {

template <typename T>
Result<T> Finish(const Decoder& d, T m, const char* what) {
  AGILE_RETURN_IF_ERROR(d.Finish(what));
  return m;
}

void Put(Encoder& e, const ShimHello& m) {
  e.U32(m.pid);
  e.U64(m.base);
  e.U64(m.length);
  e.U64(m.file_offset);
  e.U64(m.features);
  e.U64(m.ioctls);
  e.Str(m.ram_path);
}

void Put(Encoder& e, const ShimHelloAck& m) {
  e.U32(m.status);
  e.Str(m.message);
}

void Put(Encoder& e, const ShimDropPtes& m) {
  e.U64(m.seq);
  e.U64(m.offset);
  e.U64(m.length);
}

void Put(Encoder& e, const ShimDropPtesDone& m) {
  e.U64(m.seq);
  e.U32(m.err);
  e.U64(m.elapsed_ns);
}

}  // namespace

Result<ShimHello> DecodeShimHello(const std::vector<uint8_t>& p) {
  Decoder d(p.data(), p.size());
  ShimHello m;
  m.pid = d.U32();
  m.base = d.U64();
  m.length = d.U64();
  m.file_offset = d.U64();
  m.features = d.U64();
  m.ioctls = d.U64();
  m.ram_path = d.Str(4096);
  return Finish(d, m, "shim HELLO");
}

Result<ShimHelloAck> DecodeShimHelloAck(const std::vector<uint8_t>& p) {
  Decoder d(p.data(), p.size());
  ShimHelloAck m;
  m.status = d.U32();
  m.message = d.Str(4096);
  return Finish(d, m, "shim HELLO_ACK");
}

Result<ShimDropPtes> DecodeShimDropPtes(const std::vector<uint8_t>& p) {
  Decoder d(p.data(), p.size());
  ShimDropPtes m;
  m.seq = d.U64();
  m.offset = d.U64();
  m.length = d.U64();
  return Finish(d, m, "shim DROP_PTES");
}

Result<ShimDropPtesDone> DecodeShimDropPtesDone(const std::vector<uint8_t>& p) {
  Decoder d(p.data(), p.size());
  ShimDropPtesDone m;
  m.seq = d.U64();
  m.err = d.U32();
  m.elapsed_ns = d.U64();
  return Finish(d, m, "shim DROP_PTES_DONE");
}

template <typename M>
std::vector<uint8_t> Encode(const M& m) {
  std::vector<uint8_t> out;
  Encoder e(&out);
  Put(e, m);
  return out;
}
template std::vector<uint8_t> Encode(const ShimHello&);
template std::vector<uint8_t> Encode(const ShimHelloAck&);
template std::vector<uint8_t> Encode(const ShimDropPtes&);
template std::vector<uint8_t> Encode(const ShimDropPtesDone&);

template <typename M>
std::vector<uint8_t> ShimFrame(ShimMsg type, const M& m) {
  std::vector<uint8_t> out;
  FrameBuilder fb(&out, kShimMagic, kShimVersion, static_cast<uint16_t>(type));
  Put(fb.enc(), m);
  fb.Finish();
  return out;
}
template std::vector<uint8_t> ShimFrame(ShimMsg, const ShimHello&);
template std::vector<uint8_t> ShimFrame(ShimMsg, const ShimHelloAck&);
template std::vector<uint8_t> ShimFrame(ShimMsg, const ShimDropPtes&);
template std::vector<uint8_t> ShimFrame(ShimMsg, const ShimDropPtesDone&);

}  // namespace agile::wire
