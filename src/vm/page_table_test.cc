#include "vm/page_table.h"

#include <gtest/gtest.h>

namespace agile::vm {
namespace {

TEST(PageTableTest, StartsAllZeroAndCounts) {
  PageTable t(100);
  EXPECT_EQ(t.Count(PageState::kZero), 100u);
  EXPECT_TRUE(t.Transition(5, PageState::kZero, PageState::kResident));
  EXPECT_FALSE(t.Transition(5, PageState::kZero, PageState::kResident));
  EXPECT_EQ(t.Count(PageState::kZero), 99u);
  EXPECT_EQ(t.Count(PageState::kResident), 1u);
  t.Set(5, PageState::kOffloaded);
  EXPECT_EQ(t.Count(PageState::kResident), 0u);
  EXPECT_EQ(t.Count(PageState::kOffloaded), 1u);
  EXPECT_EQ(t.Get(5), PageState::kOffloaded);
}

}  // namespace
}  // namespace agile::vm
