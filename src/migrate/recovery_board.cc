#include "migrate/recovery_board.h"

#include <spdlog/spdlog.h>

#include <filesystem>

#include "migrate/migration_record.h"

namespace agile::migrate {
namespace {

constexpr char kArriving[] = ".arriving";
constexpr char kDropped[] = ".dropped";

MigrationRecord ToRecord(const std::string& vm, const RecoveryBoard::Entry& e) {
  MigrationRecord r;
  r.vm = vm;
  r.role = MigrationRecord::Role::kDestination;
  r.mode = e.mode;
  r.id_lo = e.id_lo;
  r.id_hi = e.id_hi;
  r.peer_host = e.src_host;
  r.store_vm_id = e.store_vm_id;
  r.recover = false;
  return r;
}

RecoveryBoard::Entry FromRecord(const MigrationRecord& r) {
  RecoveryBoard::Entry e;
  e.id_lo = r.id_lo;
  e.id_hi = r.id_hi;
  e.src_host = r.peer_host;
  e.store_vm_id = r.store_vm_id;
  e.mode = r.mode;
  return e;
}

Status EnsureDir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Internal("create " + dir + ": " + ec.message());
  return Status::Ok();
}

}  // namespace

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

Status RecoveryBoard::Dropped(const std::string& vm, Entry e) {
  e.deliver = nullptr;
  Status s;
  if (!dir_.empty()) {
    // The .dropped record first, then the .arriving one goes: a crash in
    // between leaves both, and LoadDropped makes the same of either.
    s = EnsureDir(dir_);
    if (s.ok()) s = WriteMigrationRecord(dir_, ToRecord(vm, e), vm + kDropped);
    if (s.ok()) s = RemoveMigrationRecord(dir_, vm + kArriving);
  }
  std::lock_guard<std::mutex> l(mu_);
  dropped_[vm] = std::move(e);
  return s.Annotate("the dropped migration of VM " + vm + " is remembered only until agiled stops");
}

Status RecoveryBoard::Arriving(const std::string& vm, const Entry& e) {
  if (dir_.empty()) return Status::Ok();
  AGILE_RETURN_IF_ERROR(EnsureDir(dir_));
  return WriteMigrationRecord(dir_, ToRecord(vm, e), vm + kArriving);
}

Status RecoveryBoard::Arrived(const std::string& vm) {
  if (dir_.empty()) return Status::Ok();
  return RemoveMigrationRecord(dir_, vm + kArriving);
}

size_t RecoveryBoard::LoadDropped(const std::function<bool(const std::string&)>& runs_here) {
  if (dir_.empty()) return 0;
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<std::string> arriving, dropped;
  for (auto& f : fs::directory_iterator(dir_, ec)) {
    const std::string name = f.path().filename().string();
    auto ends = [&](const std::string& sfx) {
      return name.size() > sfx.size() && name.compare(name.size() - sfx.size(), sfx.size(), sfx) == 0;
    };
    if (ends(kDropped)) dropped.push_back(name.substr(0, name.size() - sizeof(kDropped) + 1));
    else if (ends(kArriving)) arriving.push_back(name.substr(0, name.size() - sizeof(kArriving) + 1));
  }
  if (ec && ec != std::errc::no_such_file_or_directory)
    spdlog::error("recovery board: reading {}: {}", dir_, ec.message());
  auto read = [&](const std::string& vm, const char* suffix) -> Result<MigrationRecord> {
    auto r = ReadMigrationRecord(dir_, vm + suffix);
    if (r.ok() && r->vm != vm) return Corruption(dir_ + "/" + vm + suffix + " names VM " + r->vm);
    return r;
  };
  for (const auto& vm : dropped) {
    auto r = read(vm, kDropped);
    if (!r.ok()) {
      spdlog::error("recovery board: {} (its source, should it ask, hears not-found)", r.status().ToString());
      continue;
    }
    std::lock_guard<std::mutex> l(mu_);
    dropped_[vm] = FromRecord(*r);
  }
  // After the .dropped ones: a crash inside Dropped may have left both
  // records of one VM, which say the same.
  for (const auto& vm : arriving) {
    auto r = read(vm, kArriving);
    if (!r.ok()) {
      spdlog::error("recovery board: {} (its source, should it ask, hears not-found)", r.status().ToString());
      continue;
    }
    if (runs_here(vm)) {
      // Cannot happen (Arrived goes before the VM may run): never tell a
      // source that a VM running here never ran here.
      spdlog::error("recovery board: VM {} runs here, yet its arrival from {} was never marked taken over; "
                    "its source will not be told it may resume it", vm, r->peer_host);
      Status s = RemoveMigrationRecord(dir_, vm + kArriving);
      if (!s.ok()) spdlog::error("recovery board: {}", s.ToString());
      continue;
    }
    spdlog::warn("vm {}: its arrival from {} ended with the previous agiled, before SWITCHOVER was taken: the VM "
                 "never ran here, and its source is told so if it asks", vm, r->peer_host);
    Status s = Dropped(vm, FromRecord(*r));
    if (!s.ok()) spdlog::error("recovery board: {}", s.ToString());
  }
  std::lock_guard<std::mutex> l(mu_);
  return dropped_.size();
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
