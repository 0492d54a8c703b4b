// The frame checksum's hash (XXH3-64 seeded by the frame header, wire/frame.h)
// on the payloads agile checksums most: one 4 KiB page (memd GET of one page,
// the journal's page hash) and a migration PAGES frame of 64 pages
// (64 x (8 + 4096) bytes + 8). Compares
//   dispatch  - libxxhash's XXH3_64bits_withSeed_dispatch (what frame.cc uses;
//               picks SSE2/AVX2/AVX-512 at run time)
//   frame     - wire::FrameChecksum itself (dispatch + the 12-byte seed hash)
//   stream    - wire::FrameHasher fed page by page (FrameReader::ReceiveRest)
//   baseline  - libxxhash's plain XXH3_64bits_withSeed (Debian builds it for
//               baseline x86-64: SSE2)
//   own-avx2  - our former build: XXH3 inlined with -mavx2 (checksum_avx2.cc)
// Rounds interleave the contenders (every hash once per round, ~--mib MiB
// each), so a burst of other work on this shared machine hits all of them;
// best and median of --rounds are reported. GB/s = 1e9 bytes per second.
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>
#define XXH_DISPATCH_DISABLE_REPLACE
#include <xxh_x86dispatch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/page.h"
#include "wire/frame.h"
#include "wire/migrate_proto.h"

namespace agile::bench {
uint64_t OwnAvx2Xxh3(const void* p, size_t len, uint64_t seed);
}

namespace {

using Hash = std::function<uint64_t(const uint8_t*, size_t, uint64_t)>;

// One timed pass of h over ~total_bytes in len-byte pieces, in GB/s.
double GBps(const std::vector<uint8_t>& buf, size_t len, const Hash& h, size_t total_bytes) {
  size_t iters = std::max<size_t>(1, total_bytes / len);
  size_t slots = buf.size() / len;  // walk a 1 MiB buffer: cache-warm, as a frame just received is
  static volatile uint64_t sink = 0;
  auto t0 = std::chrono::steady_clock::now();
  uint64_t acc = 0;
  for (size_t i = 0; i < iters; ++i) acc += h(buf.data() + (i % slots) * len, len, i);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  sink = sink + acc;
  return static_cast<double>(iters * len) / s / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"checksum_bench: XXH3 frame checksum throughput, libxxhash dispatch vs our former AVX2 build"};
  std::string json_path;
  int rounds = 15;
  size_t mib = 256;
  app.add_option("--json", json_path, "also write the results as JSON to this file");
  app.add_option("--rounds", rounds, "rounds; best and median are reported (default 15)")->check(CLI::Range(1, 100));
  app.add_option("--mib", mib, "MiB hashed per contender per round (default 256)")->check(CLI::Range(1, 1 << 20));
  CLI11_PARSE(app, argc, argv);

  const bool avx2 = __builtin_cpu_supports("avx2") != 0;
  const size_t frame_len = 8 + agile::wire::kMigMaxPagesPerFrame * (8 + agile::kPageSize);
  std::vector<uint8_t> buf(4 * frame_len);  // 1 MiB: in L2/L3 like a frame just received
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<uint8_t>(i * 131 + (i >> 12));
  uint8_t header[12] = {0x41, 0x47, 0x4d, 0x47, 2, 0, 3, 0, 0, 0, 0, 0};

  std::vector<std::pair<std::string, Hash>> hashes = {
      {"dispatch", [](const uint8_t* p, size_t n, uint64_t s) { return XXH3_64bits_withSeed_dispatch(p, n, s); }},
      {"frame", [&](const uint8_t* p, size_t n, uint64_t) { return agile::wire::FrameChecksum(header, p, n); }},
      {"stream",
       [&](const uint8_t* p, size_t n, uint64_t) {
         agile::wire::FrameHasher h(header);
         for (size_t at = 0; at < n; at += agile::kPageSize) h.Update(p + at, std::min(agile::kPageSize, n - at));
         return uint64_t{h.Digest()};
       }},
      {"baseline", [](const uint8_t* p, size_t n, uint64_t s) { return XXH3_64bits_withSeed(p, n, s); }},
  };
  if (avx2) hashes.push_back({"own-avx2", [](const uint8_t* p, size_t n, uint64_t s) { return agile::bench::OwnAvx2Xxh3(p, n, s); }});

  // Same answers first: a faster wrong hash is no contender.
  uint64_t seed = XXH3_64bits(header, 12);
  for (auto& [name, h] : hashes) {
    if (name == "frame" || name == "stream") continue;
    if (h(buf.data(), frame_len, seed) != XXH3_64bits_withSeed(buf.data(), frame_len, seed)) {
      std::fprintf(stderr, "checksum_bench: %s disagrees with XXH3_64bits_withSeed\n", name.c_str());
      return 1;
    }
  }

  size_t n = hashes.size();
  std::vector<std::vector<double>> page(n), frame(n);
  for (int r = 0; r < rounds; ++r) {
    for (size_t k = 0; k < n; ++k) {
      page[k].push_back(GBps(buf, agile::kPageSize, hashes[k].second, mib << 20));
      frame[k].push_back(GBps(buf, frame_len, hashes[k].second, mib << 20));
    }
  }
  auto best = [](std::vector<double> v) { return *std::max_element(v.begin(), v.end()); };
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  nlohmann::json results = nlohmann::json::object();
  std::printf("%-10s %24s %24s\n", "GB/s", "4 KiB page best/median", "64-page frame best/median");
  for (size_t k = 0; k < n; ++k) {
    std::printf("%-10s %15.2f / %6.2f %17.2f / %6.2f\n", hashes[k].first.c_str(), best(page[k]), median(page[k]),
                best(frame[k]), median(frame[k]));
    results[hashes[k].first] = {{"page_4k_gbps_best", best(page[k])},
                                {"page_4k_gbps_median", median(page[k])},
                                {"frame_64_pages_gbps_best", best(frame[k])},
                                {"frame_64_pages_gbps_median", median(frame[k])}};
  }

  if (!json_path.empty()) {
    nlohmann::json j = {
        {"bench", "checksum_bench"},
        {"cpu_avx2", avx2},
        {"cpu_avx512f", __builtin_cpu_supports("avx512f") != 0},
        {"frame_bytes", frame_len},
        {"mib_per_round", mib},
        {"rounds", rounds},
        {"gbps", results},
    };
    std::ofstream f(json_path);
    f << j.dump(2) << "\n";
    if (!f) {
      std::fprintf(stderr, "checksum_bench: cannot write %s\n", json_path.c_str());
      return 1;
    }
  }
  return 0;
}
