// One VM's pages in the swap store (agile-memd): its namespace id, the
// ownership token, and two connections - one for the fault thread (refaults,
// latency-critical) and one for the offloader (bulk PUTs) - so a big offload
// never queues in front of a vCPU's refault. Broken connections are re-dialled
// on the next call, at most every `redial_ms`, so a store that is down costs
// a faulting vCPU a wait, not a storm of connects; offload calls redial at once.
// Thread-safe: each connection has its own mutex.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>

#include "base/status.h"
#include "store/memd_client.h"
#include "vm/page_source.h"

namespace agile::offload {

class SwapStore : public vm::PageSource {
 public:
  // tls set: connections are mutual TLS with this host's certificate.
  SwapStore(std::string memd_addr, std::string host_id, std::string store_vm_id, int redial_ms = 250,
            std::shared_ptr<const tls::Credentials> tls = nullptr);

  // Creates the VM's namespace owned by this host (first offload), or adopts
  // a token handed over by a previous owner (migration).
  Status Claim();
  void Adopt(memd::OwnerToken token);
  bool claimed() const;

  // vm::PageSource, for the fault thread.
  Status Fetch(std::span<const uint64_t> idx, uint8_t* out, uint8_t* present) override;
  // Bulk store from the offloader.
  Status Put(std::span<const memd::PageRef> pages);
  // Bulk read on the offloader's connection (a migration sending cold pages).
  Status FetchBulk(std::span<const uint64_t> idx, uint8_t* out, uint8_t* present);
  // Hands the namespace to new_host; returns the token for it. From now on
  // this host's token is void.
  Result<memd::OwnerToken> Transfer(const std::string& new_host);
  // Drops the whole namespace (VM stopped for good).
  Status Release();

  const std::string& store_vm_id() const { return vm_id_; }
  // The token while this host owns the namespace, in one look (a claim and
  // the token it holds cannot be seen apart); what agiled's state record keeps.
  std::optional<memd::OwnerToken> owned_token() const;
  const std::string& addr() const { return addr_; }

 private:
  struct Conn {
    std::mutex mu;
    std::unique_ptr<memd::MemdClient> client;
    uint64_t last_dial_ns = 0;
  };
  // Returns a usable client for c (dialling if needed); c.mu must be held.
  // The fault connection redials at most every redial_ms (a vCPU retries every
  // millisecond); the bulk one redials on every call (an operator's retry).
  Result<memd::MemdClient*> Client(Conn& c, bool rate_limited);
  void Drop(Conn& c, const Status& why);
  memd::OwnerToken token() const;

  std::string addr_, host_id_, vm_id_;
  std::shared_ptr<const tls::Credentials> tls_;
  int redial_ms_;
  mutable std::mutex token_mu_;
  memd::OwnerToken token_{};
  bool claimed_ = false;
  Conn fault_conn_, bulk_conn_;
};

}  // namespace agile::offload
