#include "base/size.h"

#include <cctype>
#include <cmath>
#include <cstdio>

namespace agile {

Result<uint64_t> ParseSize(const std::string& in) {
  std::string s;
  for (char c : in)
    if (!std::isspace(static_cast<unsigned char>(c))) s += c;
  if (s.empty()) return InvalidArgument("empty size");
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  if (i == 0) return InvalidArgument("size '" + in + "' must start with a number");
  double num;
  try {
    num = std::stod(s.substr(0, i));
  } catch (...) {
    return InvalidArgument("bad number in size '" + in + "'");
  }
  std::string suf = s.substr(i);
  for (auto& c : suf) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  // "GiB", "GB" and "G" all mean 2^30 here; a lone "B" means bytes.
  if (suf.size() >= 3 && suf.compare(suf.size() - 2, 2, "IB") == 0) suf.resize(suf.size() - 2);
  else if (!suf.empty() && suf.back() == 'B') suf.pop_back();
  double mult = 1;
  if (suf.empty()) mult = 1;
  else if (suf == "K") mult = 1024.0;
  else if (suf == "M") mult = 1024.0 * 1024;
  else if (suf == "G") mult = 1024.0 * 1024 * 1024;
  else if (suf == "T") mult = 1024.0 * 1024 * 1024 * 1024;
  else return InvalidArgument("unknown size suffix in '" + in + "' (use K, M, G or T)");
  double bytes = num * mult;
  if (!std::isfinite(bytes) || bytes >= 1.8e19) return InvalidArgument("size '" + in + "' is too large");
  return static_cast<uint64_t>(std::llround(bytes));
}

std::string FormatSize(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0) std::snprintf(buf, sizeof(buf), "%llu B", static_cast<unsigned long long>(b));
  else std::snprintf(buf, sizeof(buf), "%.1f %s", v, units[u]);
  return buf;
}

}  // namespace agile
