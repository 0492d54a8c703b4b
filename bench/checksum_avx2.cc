// The frame checksum as agile built it before libxxhash's dispatcher: XXH3
// inlined and compiled with -mavx2 (this file alone). Kept only so
// checksum_bench can compare it with what frame.cc now calls; callers check
// the CPU for AVX2 first.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cstddef>
#include <cstdint>

namespace agile::bench {

uint64_t OwnAvx2Xxh3(const void* p, size_t len, uint64_t seed) { return XXH3_64bits_withSeed(p, len, seed); }

}  // namespace agile::bench
