// XXH3 entry points built for AVX2 (xxh3_avx2.cc); call only when the CPU
// has AVX2. The state is xxhash's XXH3_state_t, laid out the same in every
// build of it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace agile::wire::avx2 {

uint64_t Xxh3Seeded(const void* p, size_t len, uint64_t seed);
void Xxh3Update(void* state, const void* p, size_t len);
uint64_t Xxh3Digest(const void* state);

}  // namespace agile::wire::avx2
