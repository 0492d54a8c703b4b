#include "migrate/receiver_states.h"

#include <gtest/gtest.h>

namespace agile::migrate {
namespace {
using wire::MigMode;
using wire::MigMsg;

uint16_t T(MigMsg m) { return static_cast<uint16_t>(m); }

// Feeds a sequence through the machine; returns the index of the first refused message, or -1.
int FirstRefused(MigMode mode, std::initializer_list<MigMsg> msgs, bool tail = false) {
  RecvPhase p = RecvPhase::kHello;
  int i = 0;
  for (MigMsg m : msgs) {
    if (!Admit(p, T(m), tail).ok()) return i;
    p = After(p, T(m), mode);
    ++i;
  }
  return -1;
}

TEST(ReceiverStates, OrdinaryMigrationsPass) {
  EXPECT_EQ(FirstRefused(MigMode::kAgile, {MigMsg::kHello, MigMsg::kPages, MigMsg::kRound, MigMsg::kPages,
                                           MigMsg::kLocations, MigMsg::kLocations, MigMsg::kSwitchover}),
            -1);
  EXPECT_EQ(FirstRefused(MigMode::kPostcopy, {MigMsg::kHello, MigMsg::kLocations, MigMsg::kSwitchover, MigMsg::kPages,
                                              MigMsg::kPages, MigMsg::kDone},
                         /*tail=*/true),
            -1);
  for (MigMode m : {MigMode::kQemuPrecopy, MigMode::kQemuPostcopy, MigMode::kQemuPrecopyTuned, MigMode::kQemuHybrid})
    EXPECT_EQ(FirstRefused(m, {MigMsg::kHello, MigMsg::kRound, MigMsg::kRound, MigMsg::kDone}), -1);
}

TEST(ReceiverStates, DuplicateOrOutOfOrderMessagesAreRefused) {
  EXPECT_EQ(FirstRefused(MigMode::kAgile, {MigMsg::kPages}), 0);  // before HELLO
  EXPECT_EQ(FirstRefused(MigMode::kAgile, {MigMsg::kHello, MigMsg::kPages, MigMsg::kHello}), 2);
  EXPECT_EQ(FirstRefused(MigMode::kAgile, {MigMsg::kHello, MigMsg::kSwitchover}), 1);  // before LOCATIONS
  EXPECT_EQ(FirstRefused(MigMode::kAgile, {MigMsg::kHello, MigMsg::kLocations, MigMsg::kSwitchover,
                                           MigMsg::kSwitchover}, true),
            3);
  EXPECT_EQ(FirstRefused(MigMode::kAgile, {MigMsg::kHello, MigMsg::kLocations, MigMsg::kSwitchover, MigMsg::kPages}),
            3);  // no pages after switchover without a tail
  EXPECT_EQ(FirstRefused(MigMode::kAgile, {MigMsg::kHello, MigMsg::kLocations, MigMsg::kSwitchover, MigMsg::kLocations},
                         true),
            3);
  EXPECT_EQ(FirstRefused(MigMode::kPostcopy, {MigMsg::kHello, MigMsg::kLocations, MigMsg::kSwitchover, MigMsg::kDone,
                                              MigMsg::kPages}, true),
            4);  // after DONE
  EXPECT_EQ(FirstRefused(MigMode::kQemuPrecopy, {MigMsg::kHello, MigMsg::kPages}), 1);
  EXPECT_EQ(FirstRefused(MigMode::kQemuPrecopy, {MigMsg::kHello, MigMsg::kSwitchover}), 1);
  // Messages only the destination sends are never valid here.
  for (MigMsg m : {MigMsg::kHelloAck, MigMsg::kSwitchoverAck, MigMsg::kPageRequest, MigMsg::kDoneAck})
    EXPECT_EQ(FirstRefused(MigMode::kAgile, {MigMsg::kHello, m}), 1);
  EXPECT_EQ(Admit(RecvPhase::kRounds, 999, false).code(), Code::kCorruption);
}

}  // namespace
}  // namespace agile::migrate
