// Reading a guest's serial console safely. The console is written by the
// guest, so everything here is bounded: at most kConsoleTailBytes are read
// from the end of the log, lines are cut at kConsoleLineCap bytes, and the
// status parser is a plain left-to-right scan (no regex: std::regex recurses
// per character and a long guest line overflowed agiled's stack).
//
// Pure functions, safe from any thread.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace agile::host {

constexpr size_t kConsoleLineCap = 4096;            // longer lines are cut here
constexpr size_t kConsoleTailBytes = 1u << 20;      // read at most this much of a log
constexpr size_t kConsoleStatusLines = 200;         // lines GuestStatus looks at

// The last n lines of `text` (a '\r' before the '\n' dropped, each line cut
// at kConsoleLineCap bytes). When `partial_head` is true the text starts in
// the middle of a line, whose remainder is dropped. When `whole_lines_only`
// is true a last line with no '\n' yet (the guest still writing it) is
// dropped too: status parsing must not read "errors=" off a line cut short.
std::vector<std::string> SplitTailLines(std::string_view text, size_t n, bool partial_head,
                                        bool whole_lines_only = false);

// The last n lines of the file at path, reading at most max_bytes from its
// end. A missing or unreadable file is no lines.
std::vector<std::string> TailLines(const std::string& path, size_t n, size_t max_bytes = kConsoleTailBytes,
                                   bool whole_lines_only = false);

// The newest per-second status line of the guest workload (guest/README.md):
//   memverify: ok|FAIL pages=<n> gen=<g> errors=<e>
//   memtouch: ops/s=<n> hot_mib=<h> phase=<k> write_pct=<w>
//   redis: ok|FAIL keys=<n> used_memory=<bytes> clients=<c> cmds=<n> ops_per_sec=<n>
//   diskverify: ok|FAIL files=<f> round=<r> writes=<w> reads=<n> errors=<e>
// found anywhere in a line (SeaBIOS escape codes can precede it), as
// {"workload", "line", "ok", every key=<digits> pair as a number,
// "bad_page_lines": lines saying "BAD page=", and for diskverify
// "bad_file_lines": lines saying "diskverify: BAD file="}; {} when there is none. A value
// that does not fit in 64 bits is left out.
nlohmann::json ParseConsoleStatus(const std::vector<std::string>& lines);

// ParseConsoleStatus over the last kConsoleStatusLines lines of a log file.
nlohmann::json ConsoleStatusFromFile(const std::string& path);

}  // namespace agile::host
