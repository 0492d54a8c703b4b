// The agile-memd backend of SwapStore: one VM's namespace id, the
// ownership token, and two connections - one for the fault thread (refaults,
// latency-critical) and one for the offloader (bulk PUTs) - so a big offload
// never queues in front of a vCPU's refault. Broken connections are re-dialled
// on the next call, at most every `redial_ms`, so a store that is down costs
// a faulting vCPU a wait, not a storm of connects; offload calls redial at once.
// Every new connection of a claimed namespace re-attaches with RECLAIM (same
// token: agile-memd kept it across its restart) and hands the pages the
// store lost to the LostPagesHandler. A full disk at the store (kNoSpace)
// makes Put fail fast for a back-off period (1 s doubling to 30 s), so the
// offloader keeps its pages resident instead of hammering a full store.
// Thread-safe: each connection has its own mutex.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>

#include "base/status.h"
#include "offload/owner_slot.h"
#include "offload/store_conn.h"
#include "offload/swap_store.h"
#include "store/memd_client.h"

namespace agile::offload {

class MemdSwapStore final : public SwapStore {
 public:
  // tls set: connections are mutual TLS with this host's certificate.
  MemdSwapStore(std::string memd_addr, std::string host_id, std::string store_vm_id, int redial_ms = 250,
            std::shared_ptr<const tls::Credentials> tls = nullptr);

  void SetTimeouts(const StoreTimeouts& t) override;
  void SetLostPagesHandler(LostPagesHandler h) override;

  // Creates the VM's namespace owned by this host (first offload), or adopts
  // a token handed over by a previous owner (migration).
  Status Claim() override;
  void Adopt(memd::OwnerToken token) override;
  void Prepare() override;
  bool claimed() const override;

  // vm::PageSource, for the fault thread.
  Status Fetch(std::span<const uint64_t> idx, uint8_t* out, uint8_t* present) override;
  // Bulk store from the offloader.
  Status Put(std::span<const memd::PageRef> pages) override;
  // Bulk read on the offloader's connection (a migration sending cold pages).
  Status FetchBulk(std::span<const uint64_t> idx, uint8_t* out, uint8_t* present) override;
  // Hands the namespace to new_host; returns the token for it. From now on
  // this host's token is void. A lost reply is resolved by redialling and
  // sending the same TRANSFER again: agile-memd answers a retry of the
  // transfer it just did with the same token (docs/memd-protocol.md).
  Result<memd::OwnerToken> Transfer(const std::string& new_host) override;
  // STAT lists the asking host's namespaces with their epoch.
  Result<bool> OwnedHere() override;
  // Drops the whole namespace (VM stopped for good).
  Status Release() override;

  Result<uint64_t> StoredPages() override;
  std::optional<memd::OwnerToken> owned_token() const override;
  const std::string& store_vm_id() const override { return vm_id_; }
  const std::string& addr() const override { return addr_; }

 private:
  using Conn = StoreConn<memd::MemdClient>;
  // Returns a usable client for c (dialling if needed, and re-attaching a
  // claimed namespace); c.mu must be held. The fault connection redials at
  // most every redial_ms; the bulk one on every call (StoreConn).
  Result<memd::MemdClient*> Client(Conn& c, bool rate_limited);
  void Drop(Conn& c, const Status& why) { c.Drop(why, addr_); }
  // RECLAIM on a fresh connection of a claimed namespace.
  void Reattach(memd::MemdClient* c);
  // kNoSpace back-off for Put (bulk_conn_.mu held).
  Status CheckPutBackoff();
  void NotePutResult(const Status& s);

  std::string addr_, host_id_, vm_id_;
  std::shared_ptr<const tls::Credentials> tls_;
  int redial_ms_;
  memd::MemdClientOptions client_opts_;  // tls_ is added at each dial
  OwnerSlot owner_;
  Conn fault_conn_, bulk_conn_;
  std::mutex handler_mu_;
  LostPagesHandler lost_handler_;
  uint64_t put_backoff_until_ns_ = 0;  // under bulk_conn_.mu
  uint64_t put_backoff_ms_ = 0;
};

}  // namespace agile::offload
