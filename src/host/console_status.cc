#include "host/console_status.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <optional>

#include "base/fd.h"
#include "base/io.h"

namespace agile::host {
using nlohmann::json;

namespace {

bool KeyChar(char c) { return (c >= 'a' && c <= 'z') || c == '_' || c == '/'; }
bool Digit(char c) { return c >= '0' && c <= '9'; }

// Where a status line starts in `line`, its workload name and whether it says
// FAIL. The leftmost of the three forms wins.
struct StatusStart {
  size_t at = 0;
  std::string workload;
  bool fail = false;
};

std::optional<StatusStart> FindStatus(std::string_view line) {
  static constexpr std::string_view kForms[] = {"memverify: ok ", "memverify: FAIL ", "redis: ok ", "redis: FAIL ",
                                                "memtouch: ops/s=", "diskverify: ok ", "diskverify: FAIL "};
  std::optional<StatusStart> best;
  for (std::string_view form : kForms) {
    size_t at = line.find(form);
    if (at == std::string_view::npos || (best && at >= best->at)) continue;
    best = StatusStart{at, std::string(form.substr(0, form.find(':'))), form.find("FAIL") != std::string_view::npos};
  }
  return best;
}

// Every key=<digits> pair, scanning left to right: a key is the longest run
// of [a-z_/] that ends right at '=', the value the digits after it.
void AddPairs(std::string_view line, json* out) {
  size_t i = 0;
  while (i < line.size()) {
    if (!KeyChar(line[i])) {
      ++i;
      continue;
    }
    size_t k = i;
    while (i < line.size() && KeyChar(line[i])) ++i;
    if (i >= line.size() || line[i] != '=' || i + 1 >= line.size() || !Digit(line[i + 1])) continue;
    std::string_view key = line.substr(k, i - k);
    ++i;  // '='
    uint64_t v = 0;
    bool overflow = false;
    while (i < line.size() && Digit(line[i])) {
      uint64_t d = static_cast<uint64_t>(line[i] - '0');
      if (v > (UINT64_MAX - d) / 10) overflow = true;
      else v = v * 10 + d;
      ++i;
    }
    if (!overflow) (*out)[std::string(key)] = v;
  }
}

}  // namespace

std::vector<std::string> SplitTailLines(std::string_view text, size_t n, bool partial_head, bool whole_lines_only) {
  if (partial_head) {
    size_t nl = text.find('\n');
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
  }
  if (whole_lines_only && !text.empty() && text.back() != '\n') {
    size_t nl = text.rfind('\n');
    text = nl == std::string_view::npos ? std::string_view() : text.substr(0, nl + 1);
  }
  std::vector<std::string> lines;
  if (text.empty() || n == 0) return lines;
  if (text.back() == '\n') text.remove_suffix(1);
  // Walk back from the end so only the last n lines are ever copied.
  size_t end = text.size();
  while (lines.size() < n) {
    size_t nl = end == 0 ? std::string_view::npos : text.rfind('\n', end - 1);
    size_t begin = nl == std::string_view::npos ? 0 : nl + 1;
    std::string_view l = text.substr(begin, end - begin);
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    lines.emplace_back(l.substr(0, kConsoleLineCap));
    if (nl == std::string_view::npos) break;
    end = nl;
  }
  std::reverse(lines.begin(), lines.end());
  return lines;
}

std::vector<std::string> TailLines(const std::string& path, size_t n, size_t max_bytes, bool whole_lines_only) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat st {};
  if (!fd || ::fstat(fd.get(), &st) != 0 || st.st_size <= 0) return {};
  size_t size = static_cast<size_t>(st.st_size);
  size_t len = std::min(size, max_bytes);
  std::string buf(len, '\0');
  ssize_t r = ::pread(fd.get(), buf.data(), len, static_cast<off_t>(size - len));
  if (r <= 0) return {};
  buf.resize(static_cast<size_t>(r));
  return SplitTailLines(buf, n, len < size, whole_lines_only);
}

json ParseConsoleStatus(const std::vector<std::string>& lines) {
  json g = json::object();
  uint64_t bad_pages = 0, bad_files = 0;
  for (auto it = lines.rbegin(); it != lines.rend(); ++it) {
    std::string_view l(*it);
    if (l.size() > kConsoleLineCap) l = l.substr(0, kConsoleLineCap);
    if (l.find("BAD page=") != std::string_view::npos) ++bad_pages;
    if (l.find("diskverify: BAD file=") != std::string_view::npos) ++bad_files;
    if (!g.empty()) continue;
    auto s = FindStatus(l);
    if (!s) continue;
    std::string_view line = l.substr(s->at);
    g["workload"] = s->workload;
    g["line"] = std::string(line);
    g["ok"] = !s->fail;
    AddPairs(line, &g);
  }
  if (!g.empty()) g["bad_page_lines"] = bad_pages;
  if (!g.empty() && g["workload"] == "diskverify") g["bad_file_lines"] = bad_files;
  return g;
}

json ConsoleStatusFromFile(const std::string& path) {
  // Whole lines only: the serial log is read while the guest writes it (a
  // status read mid-line once gave "errors": null, CI rehearsal of session 7).
  return ParseConsoleStatus(TailLines(path, kConsoleStatusLines, kConsoleTailBytes, /*whole_lines_only=*/true));
}

}  // namespace agile::host
