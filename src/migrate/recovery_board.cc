#include "migrate/recovery_board.h"

namespace agile::migrate {

Status RecoveryBoard::Register(const std::string& vm, Entry e) {
  std::lock_guard<std::mutex> l(mu_);
  if (closed_) return Unavailable("agiled is stopping: no post-copy recovery");
  if (!entries_.emplace(vm, std::move(e)).second)
    return AlreadyExists("a migration of VM " + vm + " is registered for recovery already");
  return Status::Ok();
}

void RecoveryBoard::Unregister(const std::string& vm) {
  std::lock_guard<std::mutex> l(mu_);
  entries_.erase(vm);
}

void RecoveryBoard::Close() {
  std::lock_guard<std::mutex> l(mu_);
  closed_ = true;
  for (auto& [vm, e] : entries_)
    if (e.deliver) e.deliver(nullptr);
}

void RecoveryBoard::Completed(const std::string& vm) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = entries_.find(vm);
  if (it == entries_.end()) return;
  Entry done = std::move(it->second);
  done.deliver = nullptr;
  entries_.erase(it);
  completed_[vm] = std::move(done);
}

void RecoveryBoard::Dropped(const std::string& vm, Entry e) {
  std::lock_guard<std::mutex> l(mu_);
  e.deliver = nullptr;
  dropped_[vm] = std::move(e);
}

bool RecoveryBoard::NeverRan(const wire::MigResume& r, const std::string& peer_identity, std::string* store_vm_id) {
  if (!peer_identity.empty() && r.src_host != peer_identity) return false;
  std::lock_guard<std::mutex> l(mu_);
  // A migration waiting here (registered at SWITCHOVER) may run here.
  if (entries_.count(r.vm) != 0) return false;
  auto d = dropped_.find(r.vm);
  if (d == dropped_.end() || d->second.src_host != r.src_host || d->second.id_lo != r.migration_id_lo ||
      d->second.id_hi != r.migration_id_hi)
    return false;
  if (store_vm_id != nullptr) *store_vm_id = d->second.store_vm_id;
  return true;
}

Status RecoveryBoard::Offer(const wire::MigResume& r, const std::string& peer_identity, std::unique_ptr<Channel>* ch) {
  if (!peer_identity.empty() && r.src_host != peer_identity)
    return PermissionDenied("RESUME says it comes from host '" + r.src_host + "', but the peer's certificate names '" +
                            peer_identity + "'");
  std::lock_guard<std::mutex> l(mu_);
  auto it = entries_.find(r.vm);
  if (it == entries_.end()) {
    auto c = completed_.find(r.vm);
    if (c != completed_.end() && c->second.src_host == r.src_host && c->second.id_lo == r.migration_id_lo &&
        c->second.id_hi == r.migration_id_hi)
      return AlreadyExists("the migration of VM '" + r.vm + "' has completed here: every page arrived");
    return NotFound("no migration of VM '" + r.vm + "' is waiting for recovery here");
  }
  const Entry& e = it->second;
  if (r.src_host != e.src_host)
    return PermissionDenied("the migration of VM '" + r.vm + "' came from host '" + e.src_host + "', not '" +
                            r.src_host + "'");
  // The id is a 128-bit random secret of the two agileds: a guess, or a
  // stale source from an earlier migration of the same VM, is refused.
  if (r.migration_id_lo != e.id_lo || r.migration_id_hi != e.id_hi)
    return PermissionDenied("RESUME names another migration of VM '" + r.vm + "' than the one waiting here");
  e.deliver(std::move(*ch));
  return Status::Ok();
}

}  // namespace agile::migrate
