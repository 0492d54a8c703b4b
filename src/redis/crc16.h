// Redis Cluster key slots: CRC16-CCITT (XMODEM) of the key, or of its hash tag
// (the part between the first '{' and the next '}', if non-empty), mod 16384.
// The same function as redis/src/cluster.c keyHashSlot; crc16_test checks it
// against slots the real server reports (CLUSTER KEYSLOT).
#pragma once

#include <cstdint>
#include <string_view>

namespace agile::redis {

inline constexpr int kSlots = 16384;

uint16_t Crc16(std::string_view data);
uint16_t KeySlot(std::string_view key);

}  // namespace agile::redis
