// agile-memd's protocol: requests as the server decodes them, responses as
// the client does, and the frame header both read first.
#include <cstddef>
#include <cstdint>

#include "fuzz_input.h"
#include "wire/frame.h"
#include "wire/memd_proto.h"

using namespace agile;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size >= wire::kFrameHeaderSize)
    (void)wire::DecodeFrameHeader(data, memd::kMagic, memd::kVersion, memd::kMaxPayload);
  auto in = fuzz::SplitTyped(data, size);
  if (in.payload.size() > memd::kMaxPayload) return 0;  // the frame reader refuses it first
  (void)memd::DecodeRequest(in.type, in.payload.data(), in.payload.size());
  auto r = memd::DecodeResponse(in.type, in.payload.data(), in.payload.size());
  if (r.ok() && r->status.ok()) {
    (void)memd::DecodeHelloReply(*r);
    (void)memd::DecodeTokenReply(*r);
    (void)memd::DecodeCountReply(*r);
    (void)memd::DecodeStatReply(*r);
    (void)memd::DecodeReclaimReply(*r);
    // The client knows how many pages it asked for; try the count the
    // payload would have if it were honest, and a fixed one.
    (void)memd::DecodeGetReply(*r, static_cast<uint32_t>(r->body_len > 0 ? r->body[0] : 0));
    (void)memd::DecodeGetReply(*r, 1);
  }
  return 0;
}
