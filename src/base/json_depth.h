// A guard for JSON text from a peer: nlohmann::json parses nesting of any
// depth, but copying, comparing or dumping the result recurses once per level,
// so a line of a million '[' overflows the stack. Check the text first.
#pragma once

#include <cstddef>
#include <string_view>

namespace agile {

constexpr size_t kMaxJsonDepth = 64;

// True when no array or object in `text` nests deeper than max_depth
// (brackets inside strings do not count). Does not validate the JSON.
bool JsonDepthWithin(std::string_view text, size_t max_depth = kMaxJsonDepth);

}  // namespace agile
