// A guest's serial console log (the guest writes every byte of it): split
// into lines as the log tail is, then parsed for the workload's status.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "host/console_status.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  auto lines = agile::host::SplitTailLines(text, agile::host::kConsoleStatusLines, data[0] & 1);
  for (const auto& l : lines)
    if (l.size() > agile::host::kConsoleLineCap) __builtin_trap();
  auto g = agile::host::ParseConsoleStatus(lines);
  (void)g.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return 0;
}
