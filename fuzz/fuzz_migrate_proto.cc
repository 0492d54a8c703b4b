// The agiled<->agiled migration protocol, message by message, and the VM
// spec a HELLO carries (decoded as the receiver does).
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "base/json_depth.h"
#include "fuzz_input.h"
#include "qemu/launch.h"
#include "wire/frame.h"
#include "wire/migrate_proto.h"

using namespace agile;
using namespace agile::wire;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size >= kFrameHeaderSize) (void)DecodeFrameHeader(data, kMigMagic, kMigVersion, kMigMaxPayload);
  auto in = fuzz::SplitTyped(data, size);
  if (in.payload.size() > kMigMaxPayload) return 0;
  const auto& p = in.payload;
  switch (static_cast<MigMsg>(in.type)) {
    case MigMsg::kHello: {
      auto h = DecodeHello(p);
      if (h.ok() && JsonDepthWithin(h->spec_json)) {
        auto j = nlohmann::json::parse(h->spec_json, nullptr, false);
        if (!j.is_discarded()) (void)qemu::VmSpec::FromJson(j);
      }
      break;
    }
    case MigMsg::kHelloAck: (void)DecodeHelloAck(p); break;
    case MigMsg::kPages: {
      uint32_t round = 0;
      std::vector<MigPage> pages;
      if (DecodePages(p, &round, &pages).ok())
        for (const auto& pg : pages) (void)pg.data[kMigPageSize - 1];  // every page is in bounds
      break;
    }
    case MigMsg::kRound: {
      uint32_t round = 0;
      uint64_t n = 0;
      (void)DecodeRound(p, &round, &n);
      break;
    }
    case MigMsg::kLocations: {
      std::vector<MigRun> runs;
      (void)DecodeLocations(p, &runs);
      break;
    }
    case MigMsg::kSwitchover: (void)DecodeSwitchover(p); break;
    case MigMsg::kSwitchoverAck: (void)DecodeSwitchoverAck(p); break;
    case MigMsg::kPageRequest: {
      std::vector<uint64_t> idx;
      (void)DecodePageRequest(p, &idx);
      break;
    }
    case MigMsg::kAbort: (void)DecodeAbort(p); break;
    default:
      (void)MigMsgName(in.type);
      (void)ParseMigMode(std::string(p.begin(), p.end()));
      break;
  }
  return 0;
}
