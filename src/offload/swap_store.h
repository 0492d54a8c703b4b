// One VM's pages in the swap store (agile-memd): its namespace id, the
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
#include <functional>
#include <vector>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>

#include "base/status.h"
#include "store/memd_client.h"
#include "vm/page_source.h"

namespace agile::offload {

// What the store lost of this VM's pages, learnt at a re-attach.
struct LostPages {
  std::vector<uint64_t> pages;  // lost page indexes
  bool all = false;  // the store lost the namespace itself, or records it could not name: any page may be gone
  std::string why;   // for logs
};

class SwapStore : public vm::PageSource {
 public:
  // Called (on the thread that dialled: fault or offload) after a re-attach
  // that found lost pages. Must not call back into this SwapStore, and must
  // not wait for pages to settle (the fault thread may hold one).
  using LostPagesHandler = std::function<void(const LostPages&)>;

  // tls set: connections are mutual TLS with this host's certificate.
  SwapStore(std::string memd_addr, std::string host_id, std::string store_vm_id, int redial_ms = 250,
            std::shared_ptr<const tls::Credentials> tls = nullptr);

  // Creates the VM's namespace owned by this host (first offload), or adopts
  // a token handed over by a previous owner (migration).
  Status Claim();
  void Adopt(memd::OwnerToken token);
  bool claimed() const;
  // Set before the first offload; see LostPagesHandler.
  void SetLostPagesHandler(LostPagesHandler h);

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
  // RECLAIM on a fresh connection of a claimed namespace.
  void Reattach(memd::MemdClient* c);
  // kNoSpace back-off for Put (bulk_conn_.mu held).
  Status CheckPutBackoff();
  void NotePutResult(const Status& s);
  memd::OwnerToken token() const;
  // The token while this host owns the namespace, in one look (a claim and
  // the token it holds cannot be seen apart).
  std::optional<memd::OwnerToken> owned_token() const;

  std::string addr_, host_id_, vm_id_;
  std::shared_ptr<const tls::Credentials> tls_;
  int redial_ms_;
  mutable std::mutex token_mu_;
  memd::OwnerToken token_{};
  bool claimed_ = false;
  Conn fault_conn_, bulk_conn_;
  std::mutex handler_mu_;
  LostPagesHandler lost_handler_;
  uint64_t put_backoff_until_ns_ = 0;  // under bulk_conn_.mu
  uint64_t put_backoff_ms_ = 0;
};

}  // namespace agile::offload
