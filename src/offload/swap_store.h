// One VM's namespace in the swap store, whatever engine holds it: agile-memd
// (MemdSwapStore) or a Redis Cluster (RedisSwapStore); MakeSwapStore() picks
// one from agiled's --store URL. Callers (fault server, evictor, migration
// sender and receiver, host) see only this.
//
// Contract shared by both backends:
// - Claim() creates the namespace owned by this host; Adopt() takes the token
//   a previous owner handed over (migration). Only the owner's token reads or
//   writes the pages, and the engine, not agiled, enforces it.
// - Put() returns ok only once every page is durable in the store's terms
//   (memd: stored; redis: on the master and acknowledged by a replica); only
//   then may the caller punch the page out of the RAM file.
// - Fetch() (vm::PageSource, the fault thread) and FetchBulk() (offloader)
//   use separate connections, so a bulk transfer never queues before a refault.
// - Transfer() hands ownership to new_host and returns the token to give it;
//   this host's token is void afterwards.
// - A store that lost pages it had acknowledged (memd's journal damaged, or
//   memd restarted without its data) says so through the LostPagesHandler
//   when the namespace is re-attached; agiled marks those pages damaged.
// Thread-safe: Fetch from the fault thread, the rest from the offloader or a
// migration, concurrently.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>
#include <optional>
#include <span>
#include <string>

#include "base/status.h"
#include "vm/page_source.h"
#include "wire/memd_proto.h"

namespace agile::offload {

// Bounds of every call to the store (docs/timeouts.md).
struct StoreTimeouts {
  int connect_ms = 3000;   // dial + handshake
  int request_ms = 10000;  // a request that moves no byte this long fails (kUnavailable)
};

// What the store lost of this VM's pages, learnt at a re-attach.
struct LostPages {
  std::vector<uint64_t> pages;  // lost page indexes
  bool all = false;  // the store lost the namespace itself, or records it could not name: any page may be gone
  std::string why;   // for logs
};

class SwapStore : public vm::PageSource {
 public:
  ~SwapStore() override = default;

  // Called (on the thread that dialled: fault or offload) after a re-attach
  // that found lost pages. Must not call back into this SwapStore, and must
  // not wait for pages to settle (the fault thread may hold one).
  using LostPagesHandler = std::function<void(const LostPages&)>;
  // Set before the first offload.
  virtual void SetLostPagesHandler(LostPagesHandler h) = 0;

  // Bounds of every store call (docs/timeouts.md); before the first call.
  virtual void SetTimeouts(const StoreTimeouts& t) = 0;

  virtual Status Claim() = 0;
  virtual void Adopt(memd::OwnerToken token) = 0;
  virtual bool claimed() const = 0;
  // Dials the fault path's connection ahead of need: an incoming VM does it
  // before switchover, so the first refault after the token arrives (QEMU's
  // own device-state load may be waiting on one) costs one request, not a
  // dial and a re-attach inside the downtime. Best effort: a failure is
  // left for the first fetch to meet. Any thread but the fault thread.
  virtual void Prepare() {}

  virtual Status Put(std::span<const memd::PageRef> pages) = 0;
  virtual Status FetchBulk(std::span<const uint64_t> idx, uint8_t* out, uint8_t* present) = 0;
  // A lost reply (the connection broke or timed out after the request went)
  // is resolved by the backend (memd: redial and resend; it answers a retry
  // of the transfer it just did with the same token). kUnavailable only when
  // the store stays unreachable: the owner is then unknown (ask OwnedHere).
  virtual Result<memd::OwnerToken> Transfer(const std::string& new_host) = 0;
  // Asks the store who owns the namespace: true when it is still this host,
  // at the epoch of the token held here. The lease check of `vm resume`
  // after an unclear switchover. kUnavailable when the store cannot be asked.
  virtual Result<bool> OwnedHere() = 0;
  // Drops the whole namespace (VM stopped for good).
  virtual Status Release() = 0;
  // Namespace stats: how many of this VM's pages the store holds.
  virtual Result<uint64_t> StoredPages() = 0;

  virtual const std::string& store_vm_id() const = 0;
  // The store's address as configured (--store): both sides of a migration
  // must name the same store.
  virtual const std::string& addr() const = 0;
  // The token while this host owns the namespace, in one look (a claim and
  // the token it holds cannot be seen apart); what agiled's state record keeps.
  virtual std::optional<memd::OwnerToken> owned_token() const = 0;
};

}  // namespace agile::offload
