#include "migrate/receiver_states.h"

#include <string>

namespace agile::migrate {
using wire::MigMsg;

const char* RecvPhaseName(RecvPhase p) {
  switch (p) {
    case RecvPhase::kHello: return "awaiting HELLO";
    case RecvPhase::kRounds: return "pre-copy rounds";
    case RecvPhase::kLocations: return "locations";
    case RecvPhase::kSwitched: return "after switchover";
    case RecvPhase::kQemu: return "qemu migration";
    case RecvPhase::kDone: return "done";
  }
  return "?";
}

Status Admit(RecvPhase phase, uint16_t msg, bool pages_after_switchover) {
  auto m = static_cast<MigMsg>(msg);
  bool ok = false;
  switch (phase) {
    case RecvPhase::kHello: ok = m == MigMsg::kHello; break;
    case RecvPhase::kRounds:
      ok = m == MigMsg::kPages || m == MigMsg::kRound || m == MigMsg::kLocations || m == MigMsg::kAbort;
      break;
    case RecvPhase::kLocations:
      ok = m == MigMsg::kPages || m == MigMsg::kLocations || m == MigMsg::kSwitchover || m == MigMsg::kAbort;
      break;
    case RecvPhase::kSwitched:
      ok = m == MigMsg::kAbort || (pages_after_switchover && (m == MigMsg::kPages || m == MigMsg::kDone));
      break;
    case RecvPhase::kQemu: ok = m == MigMsg::kRound || m == MigMsg::kDone || m == MigMsg::kAbort; break;
    case RecvPhase::kDone: ok = false; break;
  }
  if (ok) return Status::Ok();
  return Corruption(std::string("migration message ") + wire::MigMsgName(msg) + " is not valid " +
                    (phase == RecvPhase::kHello ? "before HELLO" : std::string("in phase '") + RecvPhaseName(phase) + "'"));
}

RecvPhase After(RecvPhase phase, uint16_t msg, wire::MigMode mode) {
  switch (static_cast<MigMsg>(msg)) {
    case MigMsg::kHello:
      return wire::IsQemuMode(mode) ? RecvPhase::kQemu : RecvPhase::kRounds;
    case MigMsg::kLocations: return RecvPhase::kLocations;
    case MigMsg::kSwitchover: return RecvPhase::kSwitched;
    case MigMsg::kDone: return RecvPhase::kDone;
    default: return phase;
  }
}

}  // namespace agile::migrate
