// agile-memd's index journal, replayed as at start-up. The first byte picks
// the input's shape: raw journal bytes, or a header and records whose
// lengths and checksums the harness fills in (so mutations reach the record
// decoder instead of stopping at the first checksum).
#include <xxhash.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "store/index_journal.h"
#include "wire/journal_format.h"

using namespace agile;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::vector<uint8_t> j;
  if ((data[0] & 1) == 0) {
    j.assign(data + 1, data + size);
  } else {
    // [vm_len u8][vm][ (body_len u8, body)* ] -> header + checksummed records
    size_t off = 1;
    size_t vm_len = off < size ? data[off++] : 0;
    vm_len = std::min(vm_len, size - off);
    memd::AppendJournalHeader(&j, std::string_view(reinterpret_cast<const char*>(data + off), vm_len));
    off += vm_len;
    while (off < size) {
      size_t n = std::min<size_t>(data[off++], size - off);
      uint32_t sum = XXH32(data + off, n, 0);
      uint8_t head[8] = {static_cast<uint8_t>(n), static_cast<uint8_t>(n >> 8), 0, 0,
                         static_cast<uint8_t>(sum), static_cast<uint8_t>(sum >> 8), static_cast<uint8_t>(sum >> 16),
                         static_cast<uint8_t>(sum >> 24)};
      j.insert(j.end(), head, head + 8);
      j.insert(j.end(), data + off, data + off + n);
      off += n;
    }
  }
  memd::JournalState st;
  size_t good = 0;
  uint64_t records = 0;
  if (memd::ReplayJournalBytes(j.data(), j.size(), &st, &good, &records).ok() && good > j.size()) __builtin_trap();
  return 0;
}
