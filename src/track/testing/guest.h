// Test helpers: a track_guest child (the QEMU stand-in with hot-set access
// patterns) under the real shim and fault server.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "vm/testing/guest_process.h"

namespace agile::track::testing {

inline std::unique_ptr<vm::testing::GuestProcess> StartTrackGuest(uint64_t pages) {
  auto g = vm::testing::GuestProcess::Start(AGILE_SHIM_PATH, AGILE_TRACK_GUEST_PATH, pages);
  EXPECT_TRUE(g.ok()) << g.status().ToString();
  return g.ok() ? std::move(g).value() : nullptr;
}

// Sends a command and expects an answer starting with "ok"; returns the answer.
inline std::string Ok(vm::testing::GuestProcess& g, const std::string& cmd) {
  auto r = g.Command(cmd);
  EXPECT_TRUE(r.ok()) << cmd << ": " << r.status().ToString();
  if (!r.ok()) return "";
  EXPECT_EQ(r->rfind("ok", 0), 0u) << cmd << " -> " << *r;
  return *r;
}

inline std::string Range(uint64_t first, uint64_t count) {
  return std::to_string(first) + " " + std::to_string(count);
}

}  // namespace agile::track::testing
