// agiled's end of the shim protocol (wire/shim_proto.h) for one VM: accepts the
// shim's HELLO with the userfaultfd, validates it against what we launched,
// and afterwards carries DROP_PTES requests into QEMU's address space.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>

#include "base/fd.h"
#include "base/status.h"
#include "wire/shim_proto.h"

namespace agile::vm {

struct GuestMapping {
  uint64_t base = 0;         // address of the RAM mapping in the VM process
  uint64_t length = 0;
  uint64_t file_offset = 0;  // where the mapping starts in the RAM file
  uint32_t pid = 0;
  uint64_t features = 0;
};

class ShimLink {
 public:
  // Waits up to timeout_ms on listen_fd for the shim, then checks its HELLO:
  // the RAM path must be `ram_path` and the mapping must cover exactly
  // `expected_length` bytes from offset 0. `alive` is polled so a VM process
  // that dies before connecting fails fast. On success the caller owns *uffd;
  // the HELLO_ACK is sent by Accept() (ok) or with the refusal reason.
  static Result<ShimLink> Accept(int listen_fd, const std::string& ram_path, uint64_t expected_length,
                                 int timeout_ms, int pidfd, UniqueFd* uffd);

  const GuestMapping& mapping() const { return map_; }

  // Drops the page-table entries of [offset, offset+len) of the RAM file inside
  // the VM process; data stays in the file. Serialised: one request at a time.
  Status DropPtes(uint64_t offset, uint64_t len, uint64_t* elapsed_ns = nullptr);

  ShimLink(ShimLink&& o) noexcept : conn_(std::move(o.conn_)), map_(o.map_), seq_(o.seq_) {}
  ShimLink(const ShimLink&) = delete;

 private:
  ShimLink(UniqueFd conn, GuestMapping map) : conn_(std::move(conn)), map_(map) {}
  UniqueFd conn_;
  GuestMapping map_;
  std::mutex mu_;
  uint64_t seq_ = 0;
};

}  // namespace agile::vm
