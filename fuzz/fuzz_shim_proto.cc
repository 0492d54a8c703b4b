// The shim handshake: HELLO as agiled decodes it, HELLO_ACK and DROP_PTES as
// the shim (inside QEMU) does, DROP_PTES_DONE back in agiled.
#include <cstddef>
#include <cstdint>

#include "fuzz_input.h"
#include "wire/frame.h"
#include "wire/shim_proto.h"

using namespace agile::wire;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size >= kFrameHeaderSize) (void)DecodeFrameHeader(data, kShimMagic, kShimVersion, kShimMaxPayload);
  auto in = agile::fuzz::SplitTyped(data, size);
  if (in.payload.size() > kShimMaxPayload) return 0;
  switch (static_cast<ShimMsg>(in.type)) {
    case ShimMsg::kHello: (void)DecodeShimHello(in.payload); break;
    case ShimMsg::kHelloAck: (void)DecodeShimHelloAck(in.payload); break;
    case ShimMsg::kDropPtes: (void)DecodeShimDropPtes(in.payload); break;
    case ShimMsg::kDropPtesDone: (void)DecodeShimDropPtesDone(in.payload); break;
    default:
      (void)DecodeShimHello(in.payload);
      (void)DecodeShimDropPtes(in.payload);
      break;
  }
  return 0;
}
