#include "offload/memd_swap_store.h"

#include <spdlog/spdlog.h>

#include <vector>

#include "vm/fault_server.h"

namespace agile::offload {

MemdSwapStore::MemdSwapStore(std::string memd_addr, std::string host_id, std::string store_vm_id, int redial_ms,
                     std::shared_ptr<const tls::Credentials> tls)
    : addr_(std::move(memd_addr)),
      host_id_(std::move(host_id)),
      vm_id_(std::move(store_vm_id)),
      tls_(std::move(tls)),
      redial_ms_(redial_ms) {}

bool MemdSwapStore::claimed() const { return owner_.claimed(); }

std::optional<memd::OwnerToken> MemdSwapStore::owned_token() const { return owner_.owned(); }

void MemdSwapStore::SetTimeouts(const StoreTimeouts& t) {
  client_opts_.connect_timeout_ms = t.connect_ms;
  client_opts_.request_timeout_ms = t.request_ms;
  client_opts_.tcp_user_timeout_ms = t.request_ms;
}

void MemdSwapStore::Adopt(memd::OwnerToken token) { owner_.Adopt(token); }

void MemdSwapStore::Prepare() {
  std::lock_guard<std::mutex> l(fault_conn_.mu);
  // Not claimed yet, so no RECLAIM: memd checks the token on every GET, and
  // a connection that breaks before then redials and re-attaches as usual.
  auto c = Client(fault_conn_, /*rate_limited=*/false);
  if (!c.ok()) spdlog::warn("swap store {}: could not dial ahead for VM {}: {}", addr_, vm_id_, c.status().ToString());
}

Result<memd::MemdClient*> MemdSwapStore::Client(Conn& c, bool rate_limited) {
  if (c.client) return c.client.get();
  AGILE_ASSIGN_OR_RETURN(memd::MemdClient * client, c.Get(rate_limited, redial_ms_, addr_, [&] {
    memd::MemdClientOptions opts = client_opts_;
    opts.tls = tls_;
    return memd::MemdClient::Connect(addr_, host_id_, opts);
  }));
  spdlog::info("swap store {}: connected for VM {}", addr_, vm_id_);
  if (claimed()) Reattach(client);
  return client;
}

void MemdSwapStore::SetLostPagesHandler(LostPagesHandler h) {
  std::lock_guard<std::mutex> l(handler_mu_);
  lost_handler_ = std::move(h);
}

void MemdSwapStore::Reattach(memd::MemdClient* c) {
  std::optional<memd::OwnerToken> owner = owned_token();
  if (!owner) return;
  LostPages lost;
  auto r = c->Reclaim(vm_id_, *owner);
  if (r.ok()) {
    if (r->lost.empty() && !r->lost_unknown) {
      spdlog::info("swap store {}: re-attached VM {} ({} pages held, none lost)", addr_, vm_id_, r->pages);
      return;
    }
    lost.pages = std::move(r->lost);
    lost.all = r->lost_unknown;
    lost.why = "the swap store's journal was damaged";
  } else if (r.status().code() == Code::kNotFound) {
    // agile-memd restarted without its data (no --data-dir, or a new one):
    // every page this VM had offloaded is gone.
    lost.all = true;
    lost.why = "the swap store no longer has the VM's namespace (" + r.status().message() + ")";
  } else {
    // Unreachable again, not the owner any more (migrated), ...: the
    // requests that follow report it; nothing is known to be lost.
    spdlog::warn("swap store {}: re-attach of VM {} failed: {}", addr_, vm_id_, r.status().ToString());
    return;
  }
  spdlog::error("swap store {}: VM {} lost {} page(s){}: {}", addr_, vm_id_, lost.pages.size(),
                lost.all ? " (and possibly every offloaded page)" : "", lost.why);
  std::lock_guard<std::mutex> l(handler_mu_);
  if (lost_handler_) lost_handler_(lost);
}

Status MemdSwapStore::CheckPutBackoff() {
  if (put_backoff_until_ns_ == 0 || vm::NowNs() >= put_backoff_until_ns_) return Status::Ok();
  return NoSpace("swap store " + addr_ + ": disk full at the store; not offloading for " +
                 std::to_string((put_backoff_until_ns_ - vm::NowNs()) / 1000000) + " ms more (pages stay resident)");
}

void MemdSwapStore::NotePutResult(const Status& s) {
  if (s.code() != Code::kNoSpace) {
    if (s.ok() && put_backoff_ms_ != 0) spdlog::info("swap store {}: offloading again (store has room)", addr_);
    if (s.ok()) put_backoff_ms_ = put_backoff_until_ns_ = 0;
    return;
  }
  put_backoff_ms_ = put_backoff_ms_ == 0 ? 1000 : std::min<uint64_t>(put_backoff_ms_ * 2, 30000);
  put_backoff_until_ns_ = vm::NowNs() + put_backoff_ms_ * 1000000ULL;
  spdlog::warn("swap store {}: {}; VM {} keeps its pages resident, next offload in {} ms", addr_, s.message(), vm_id_,
               put_backoff_ms_);
}

Status MemdSwapStore::Claim() {
  std::lock_guard<std::mutex> l(bulk_conn_.mu);
  if (claimed()) return Status::Ok();
  AGILE_ASSIGN_OR_RETURN(memd::MemdClient * c, Client(bulk_conn_, false));
  auto t = c->Claim(vm_id_);
  if (!t.ok()) {
    Drop(bulk_conn_, t.status());
    return t.status().Annotate("claim " + vm_id_ + " in the swap store");
  }
  Adopt(*t);
  return Status::Ok();
}

Status MemdSwapStore::Fetch(std::span<const uint64_t> idx, uint8_t* out, uint8_t* present) {
  // An incoming VM's cold pages belong to the source until switchover hands
  // over the token; QEMU loading device state may touch one before that.
  // Asking memd now would only be refused: the vCPU waits and retries.
  std::optional<memd::OwnerToken> owner = owned_token();
  if (!owner)
    return Status(Code::kPermissionDenied,
                  "the VM's swap-store pages are not this host's yet (incoming migration before switchover)");
  std::lock_guard<std::mutex> l(fault_conn_.mu);
  AGILE_ASSIGN_OR_RETURN(memd::MemdClient * c, Client(fault_conn_, true));
  std::vector<uint8_t*> outs(idx.size());
  for (size_t i = 0; i < idx.size(); ++i) outs[i] = out + i * memd::kPageSize;
  Status s = c->Get(vm_id_, *owner, idx, outs, std::span<uint8_t>(present, idx.size()));
  if (!s.ok()) Drop(fault_conn_, s);
  return s;
}

Status MemdSwapStore::Put(std::span<const memd::PageRef> pages) {
  std::lock_guard<std::mutex> l(bulk_conn_.mu);
  AGILE_RETURN_IF_ERROR(CheckPutBackoff());
  Status s;
  for (int attempt = 0; attempt < 2; ++attempt) {
    bool fresh = !bulk_conn_.client;
    AGILE_ASSIGN_OR_RETURN(memd::MemdClient * c, Client(bulk_conn_, false));
    s = c->Put(vm_id_, owner_.last(), pages);
    if (!s.ok()) Drop(bulk_conn_, s);
    // A connection from before agile-memd restarted fails at its first use:
    // dial again (and re-attach) once; PUT is idempotent.
    if (s.ok() || s.code() != Code::kUnavailable || fresh) break;
  }
  NotePutResult(s);
  return s;
}

Status MemdSwapStore::FetchBulk(std::span<const uint64_t> idx, uint8_t* out, uint8_t* present) {
  std::lock_guard<std::mutex> l(bulk_conn_.mu);
  AGILE_ASSIGN_OR_RETURN(memd::MemdClient * c, Client(bulk_conn_, false));
  std::vector<uint8_t*> outs(idx.size());
  for (size_t i = 0; i < idx.size(); ++i) outs[i] = out + i * memd::kPageSize;
  Status s = c->Get(vm_id_, owner_.last(), idx, outs, std::span<uint8_t>(present, idx.size()));
  if (!s.ok()) Drop(bulk_conn_, s);
  return s;
}

Result<memd::OwnerToken> MemdSwapStore::Transfer(const std::string& new_host) {
  std::lock_guard<std::mutex> l(bulk_conn_.mu);
  std::optional<memd::OwnerToken> owner = owned_token();
  if (!owner) return InvalidArgument("VM " + vm_id_ + " has no pages in the swap store to hand over");
  Result<memd::OwnerToken> t = Unavailable("not sent");
  // Two tries: the second only after a broken connection, when the first
  // request may or may not have reached memd. The same request again is
  // safe either way (memd answers a retried TRANSFER with the same token).
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto c = Client(bulk_conn_, false);
    if (!c.ok()) {
      t = c.status();
      continue;
    }
    t = (*c)->Transfer(vm_id_, *owner, new_host);
    if (t.ok() || t.status().code() != Code::kUnavailable) break;
    Drop(bulk_conn_, t.status());
    spdlog::warn("swap store {}: TRANSFER of {} to {}: reply lost ({}); asking again", addr_, vm_id_, new_host,
                 t.status().ToString());
  }
  if (!t.ok()) {
    Drop(bulk_conn_, t.status());
    return t.status();
  }
  owner_.Void();  // the token is the new owner's now
  return *t;
}

Result<bool> MemdSwapStore::OwnedHere() {
  std::lock_guard<std::mutex> l(bulk_conn_.mu);
  AGILE_ASSIGN_OR_RETURN(memd::MemdClient * c, Client(bulk_conn_, false));
  auto st = c->Stat();
  if (!st.ok()) {
    Drop(bulk_conn_, st.status());
    return st.status().Annotate("asking swap store " + addr_ + " who owns " + vm_id_);
  }
  const uint64_t epoch = owner_.last().epoch;
  for (const auto& v : st->vms)
    if (v.vm == vm_id_) return v.owner == host_id_ && v.epoch == epoch;
  return false;  // not listed: owned by another host, or released
}

Status MemdSwapStore::Release() {
  std::optional<memd::OwnerToken> owner = owned_token();
  if (!owner) return Status::Ok();
  std::lock_guard<std::mutex> l(bulk_conn_.mu);
  AGILE_ASSIGN_OR_RETURN(memd::MemdClient * c, Client(bulk_conn_, false));
  auto r = c->Release(vm_id_, *owner);
  if (!r.ok()) {
    Drop(bulk_conn_, r.status());
    return r.status();
  }
  owner_.Void();
  return Status::Ok();
}

Result<uint64_t> MemdSwapStore::StoredPages() {
  std::lock_guard<std::mutex> l(bulk_conn_.mu);
  AGILE_ASSIGN_OR_RETURN(memd::MemdClient * c, Client(bulk_conn_, false));
  auto st = c->Stat();
  if (!st.ok()) {
    Drop(bulk_conn_, st.status());
    return st.status();
  }
  for (const memd::VmStat& v : st->vms)
    if (v.vm == vm_id_) return v.pages;
  // STAT lists a bounded number of namespaces: absent from a full list is unknown.
  if (st->vms.size() < st->vm_count) return NotFound("memd's STAT did not list namespace " + vm_id_);
  return uint64_t{0};
}

}  // namespace agile::offload
