#include "base/size.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>

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

Result<uint64_t> ParseRate(const std::string& in) {
  std::string s;
  for (char c : in) s += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (s.size() > 2 && s.compare(s.size() - 2, 2, "/s") == 0) s.resize(s.size() - 2);
  if (s.size() > 3 && s.compare(s.size() - 3, 3, "bit") == 0) {
    std::string num = s.substr(0, s.size() - 3);
    double mult = 1;
    if (!num.empty() && (num.back() == 'k' || num.back() == 'm' || num.back() == 'g')) {
      mult = num.back() == 'k' ? 1e3 : num.back() == 'm' ? 1e6 : 1e9;
      num.pop_back();
    }
    char* end = nullptr;
    double v = std::strtod(num.c_str(), &end);
    if (num.empty() || end == nullptr || *end != '\0' || v <= 0)
      return InvalidArgument("bad rate '" + in + "' (e.g. 1gbit, 500mbit, 100M)");
    return static_cast<uint64_t>(v * mult / 8);
  }
  auto r = ParseSize(s);
  if (!r.ok()) return InvalidArgument("bad rate '" + in + "' (e.g. 1gbit, 500mbit, 100M)");
  return r;
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
