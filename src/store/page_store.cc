#include "store/page_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <set>

#include <spdlog/spdlog.h>

#include "base/size.h"
#include "store/vm_namespace.h"

namespace agile::memd {

// A namespace and its lock. `gone` is set by RELEASE under the lock, so a
// caller that found the entry just before it was erased sees it is dead.
struct PageStore::Entry {
  std::mutex mu;
  std::unique_ptr<VmNamespace> ns;
  bool gone = false;
  // The last TRANSFER (in memory only): who sent it, with which token, to
  // whom. A retry of it gets the same answer (see Transfer).
  std::string transferred_by, transferred_to;
  OwnerToken transferred_with{};
};

namespace {

// A token with a fresh 128-bit random secret.
Result<OwnerToken> NewToken(uint64_t epoch) {
  uint64_t v[2] = {0, 0};
  for (;;) {
    ssize_t r = ::getrandom(v, sizeof(v), 0);
    if (r == static_cast<ssize_t>(sizeof(v))) return OwnerToken{epoch, v[0], v[1]};
    if (r < 0 && errno != EINTR) return ErrnoStatus("getrandom");
  }
}

bool EndsWith(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Status EnsureDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) == 0 || errno == EEXIST) {
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) return ErrnoStatus("stat " + dir);
    if (!S_ISDIR(st.st_mode)) return InvalidArgument(dir + " is not a directory");
    return Status::Ok();
  }
  return ErrnoStatus("create data directory " + dir);
}

Result<std::vector<std::string>> ListDir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return ErrnoStatus("open directory " + dir);
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
  ::closedir(d);
  return names;
}

}  // namespace

PageStore::PageStore(Options opts)
    : opts_(std::move(opts)), capacity_pages_(opts_.capacity_bytes / kPageSize) {}

Result<std::unique_ptr<PageStore>> PageStore::Open(const Options& opts) {
  if (opts.capacity_bytes < kPageSize) return InvalidArgument("capacity must be at least one page (4 KiB)");
  std::unique_ptr<PageStore> store(new PageStore(opts));
  if (opts.data_dir.empty()) return store;

  AGILE_RETURN_IF_ERROR(EnsureDir(opts.data_dir));
  std::string lock_path = opts.data_dir + "/LOCK";
  store->dir_lock_.Reset(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!store->dir_lock_) return ErrnoStatus("open " + lock_path);
  if (::flock(store->dir_lock_.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK)
      return Unavailable("data directory " + opts.data_dir + " is in use by another agile-memd");
    return ErrnoStatus("lock " + lock_path);
  }
  AGILE_RETURN_IF_ERROR(store->Recover());
  // Group commit: the committer also syncs every sync_interval, which frees
  // retired slots when no session waits for durability (a caller of
  // PageStore alone). Periodic mode: only that.
  if (store->group_commit())
    store->commit_thread_ = std::jthread([s = store.get()](std::stop_token st) { s->CommitLoop(std::move(st)); });
  else if (!opts.sync_each_write)
    store->sync_thread_ = std::jthread([s = store.get()](std::stop_token st) { s->SyncLoop(std::move(st)); });
  return store;
}

Status PageStore::Recover() {
  const std::string& dir = opts_.data_dir;
  AGILE_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDir(dir));
  std::set<std::string> journals;
  for (const std::string& n : names)
    if (EndsWith(n, ".index")) journals.insert(n.substr(0, n.size() - 6));
  VmNamespace::Options ns_opts{dir, opts_.sync_each_write, group_commit()};
  for (const std::string& n : names) {
    std::string path = dir + "/" + n;
    // Leftovers of a crash: a compaction or claim that never committed, or a
    // release that removed the journal but not yet the data.
    bool orphan = EndsWith(n, ".index.tmp") ||
                  (EndsWith(n, ".pages") && !journals.contains(n.substr(0, n.size() - 6)));
    if (orphan) {
      spdlog::info("data dir: removing leftover {}", path);
      if (::unlink(path.c_str()) != 0) return ErrnoStatus("unlink " + path);
    }
  }
  for (const std::string& vm : journals) {
    if (Status st = ValidateVmId(vm); !st.ok()) {
      spdlog::warn("data dir: ignoring {}.index: {}", vm, st.message());
      continue;
    }
    auto ns = VmNamespace::Recover(ns_opts, vm);
    if (!ns.ok())
      return ns.status().Annotate("recover vm " + vm + " (move its files out of " + dir + " to start without it)");
    auto e = std::make_shared<Entry>();
    e->ns = std::move(ns).value();
    used_pages_ += e->ns->pages();
    spdlog::info("recovered vm {}: {} pages, owner {} (epoch {})", vm, e->ns->pages(), e->ns->owner(),
                 e->ns->token().epoch);
    namespaces_.emplace(vm, std::move(e));
  }
  if (used_pages_ > capacity_pages_)
    spdlog::warn("data dir holds {} pages, more than the capacity of {}; PUTs of new pages fail until some are freed",
                 used_pages_.load(), capacity_pages_);
  return Status::Ok();
}

PageStore::~PageStore() {
  if (commit_thread_.joinable()) {
    commit_thread_.request_stop();
    commit_thread_.join();
  }
  if (sync_thread_.joinable()) {
    sync_thread_.request_stop();
    sync_thread_.join();
  }
  if (Status st = Sync(); !st.ok()) spdlog::error("final sync failed: {}", st.ToString());
}

void PageStore::SyncLoop(std::stop_token stop) {
  std::unique_lock lock(sync_mu_);
  while (!stop.stop_requested()) {
    sync_cv_.wait_for(lock, stop, opts_.sync_interval, [] { return false; });
    if (stop.stop_requested()) break;
    if (Status st = Sync(); !st.ok()) spdlog::error("periodic sync failed: {}", st.ToString());
  }
}

Status PageStore::Sync() {
  // While the committer runs, a sync of our own could write journal records
  // staged after those a commit in flight took, and so before them: ask the
  // committer instead (a commit also frees retired slots).
  if (commit_thread_.joinable()) return WaitDurable(LastWrite());
  std::vector<std::shared_ptr<Entry>> entries;
  {
    std::shared_lock lock(map_mu_);
    for (const auto& [vm, e] : namespaces_) entries.push_back(e);
  }
  Status first;
  for (const auto& e : entries) {
    std::lock_guard lock(e->mu);
    if (e->gone || !e->ns->dirty()) continue;
    Status st = e->ns->Sync();
    if (!st.ok() && first.ok()) first = st;
  }
  return first;
}

Status PageStore::SyncAllUnlocked() {
  std::vector<std::shared_ptr<Entry>> entries;
  {
    std::shared_lock lock(map_mu_);
    for (const auto& [vm, e] : namespaces_) entries.push_back(e);
  }
  std::vector<std::pair<std::shared_ptr<Entry>, VmNamespace::SyncPlan>> plans;
  Status first;
  for (const auto& e : entries) {
    std::lock_guard lock(e->mu);
    if (e->gone || !e->ns->dirty()) continue;
    auto plan = e->ns->PrepareSync();
    if (!plan.ok()) {
      if (first.ok()) first = plan.status();
      continue;
    }
    plans.emplace_back(e, std::move(plan).value());
  }
  // Every data file before any journal record is written: a durable SET
  // record must find its bytes durable. Records staged after PrepareSync
  // stay in memory until the next commit, so the journal sync below never
  // makes durable a record whose data this commit did not sync.
  std::vector<bool> ok(plans.size(), true);
  for (size_t i = 0; i < plans.size(); ++i)
    if (::fdatasync(plans[i].second.data.get()) != 0) {
      ok[i] = false;
      if (first.ok()) first = ErrnoStatus("fdatasync page data");
    }
  for (size_t i = 0; i < plans.size(); ++i) {
    if (!ok[i]) continue;
    std::lock_guard lock(plans[i].first->mu);
    if (plans[i].first->gone) continue;
    if (Status st = plans[i].first->ns->WriteJournal(&plans[i].second); !st.ok()) {
      ok[i] = false;
      if (first.ok()) first = st;
    }
  }
  for (size_t i = 0; i < plans.size(); ++i)
    if (ok[i] && ::fdatasync(plans[i].second.journal.get()) != 0) {
      ok[i] = false;
      if (first.ok()) first = ErrnoStatus("fdatasync journal");
    }
  for (size_t i = 0; i < plans.size(); ++i) {
    std::lock_guard lock(plans[i].first->mu);
    if (!plans[i].first->gone) plans[i].first->ns->FinishSync(std::move(plans[i].second), ok[i]);
  }
  return first;
}

void PageStore::CommitLoop(std::stop_token stop) {
  std::unique_lock lock(commit_mu_);
  while (!stop.stop_requested()) {
    bool asked = commit_cv_.wait_for(lock, stop, opts_.sync_interval,
                                     [&] { return requested_seq_ > durable_seq_ && commit_failed_.ok(); });
    if (stop.stop_requested()) break;
    if (!asked && !commit_failed_.ok()) continue;  // nothing will be acknowledged; the destructor still syncs
    // Every change numbered up to here is complete in the files (a number is
    // taken after its write), so this commit covers them all. Changes made
    // while it runs wait for the next one.
    uint64_t target = written_seq_.load();
    lock.unlock();
    Status st = opts_.test_before_commit ? opts_.test_before_commit() : Status::Ok();
    if (st.ok()) st = SyncAllUnlocked();
    lock.lock();
    if (st.ok()) {
      durable_seq_ = std::max(durable_seq_, target);
      if (asked) commits_++;
    } else {
      // A writeback error is reported once and the pages it lost are no
      // longer dirty: a later fdatasync would succeed without them. So
      // nothing after the last good commit may ever be acknowledged.
      spdlog::error("group commit failed: {}; agile-memd acknowledges no more changes (restart it)",
                    st.ToString());
      commit_failed_ = st.Annotate("group commit");
    }
    commit_cv_.notify_all();
    const uint64_t one = 1;
    for (int efd : listeners_) (void)!::write(efd, &one, sizeof(one));
  }
}

uint64_t PageStore::DurableThrough(Status* failed) const {
  if (!group_commit()) return UINT64_MAX;
  std::lock_guard lock(commit_mu_);
  if (failed != nullptr) *failed = commit_failed_;
  return durable_seq_;
}

void PageStore::RequestCommit(uint64_t ticket) {
  if (!group_commit()) return;
  std::lock_guard lock(commit_mu_);
  if (ticket <= requested_seq_) return;
  requested_seq_ = ticket;
  commit_cv_.notify_all();
}

void PageStore::AddCommitListener(int efd) {
  std::lock_guard lock(commit_mu_);
  listeners_.push_back(efd);
}

void PageStore::RemoveCommitListener(int efd) {
  std::lock_guard lock(commit_mu_);
  std::erase(listeners_, efd);
}

Status PageStore::WaitDurable(uint64_t ticket) {
  if (!group_commit()) return Status::Ok();
  RequestCommit(ticket);
  std::unique_lock lock(commit_mu_);
  commit_cv_.wait(lock, [&] { return durable_seq_ >= ticket || !commit_failed_.ok(); });
  if (durable_seq_ >= ticket) return Status::Ok();
  return commit_failed_;
}

Result<ReclaimReply> PageStore::Reclaim(std::string_view host, std::string_view vm, OwnerToken token) {
  AGILE_ASSIGN_OR_RETURN(auto owned, Owned(host, vm, token));
  const VmNamespace& ns = *owned.first->ns;
  ReclaimReply r;
  r.pages = ns.pages();
  r.lost_unknown = ns.lost_unknown();
  r.lost.assign(ns.lost().begin(), ns.lost().end());
  return r;
}

bool PageStore::Reserve(uint64_t pages) {
  uint64_t used = used_pages_.load();
  do {
    if (used + pages > capacity_pages_) return false;
  } while (!used_pages_.compare_exchange_weak(used, used + pages));
  return true;
}

Result<std::pair<std::shared_ptr<PageStore::Entry>, std::unique_lock<std::mutex>>> PageStore::Owned(
    std::string_view host, std::string_view vm, OwnerToken token) {
  std::shared_ptr<Entry> e;
  {
    std::shared_lock lock(map_mu_);
    auto it = namespaces_.find(vm);
    if (it != namespaces_.end()) e = it->second;
  }
  if (!e) return NotFound("no namespace for vm '" + std::string(vm) + "' (never claimed, or released)");
  std::unique_lock lock(e->mu);
  if (e->gone) return NotFound("vm '" + std::string(vm) + "' was released");
  AGILE_RETURN_IF_ERROR(e->ns->CheckOwner(host, token));
  return std::make_pair(std::move(e), std::move(lock));
}

Result<OwnerToken> PageStore::Claim(std::string_view host, std::string_view vm) {
  AGILE_RETURN_IF_ERROR(ValidateVmId(vm));
  AGILE_RETURN_IF_ERROR(ValidateHostId(host));
  std::unique_lock lock(map_mu_);
  auto it = namespaces_.find(vm);
  if (it != namespaces_.end()) {
    std::lock_guard entry_lock(it->second->mu);
    if (!it->second->gone)
      return AlreadyExists("vm '" + std::string(vm) + "' is already claimed by host '" + it->second->ns->owner() +
                           "' (epoch " + std::to_string(it->second->ns->token().epoch) + ")");
  }
  AGILE_ASSIGN_OR_RETURN(OwnerToken token, NewToken(1));
  VmNamespace::Options ns_opts{opts_.data_dir, opts_.sync_each_write, group_commit()};
  AGILE_ASSIGN_OR_RETURN(auto ns, VmNamespace::Create(ns_opts, std::string(vm), std::string(host), token));
  auto e = std::make_shared<Entry>();
  e->ns = std::move(ns);
  namespaces_.insert_or_assign(std::string(vm), std::move(e));
  return token;
}

Result<uint64_t> PageStore::Put(std::string_view host, std::string_view vm, OwnerToken token,
                                std::span<const PageRef> pages) {
  AGILE_ASSIGN_OR_RETURN(auto owned, Owned(host, vm, token));
  VmNamespace& ns = *owned.first->ns;
  uint64_t fresh = ns.CountNew(pages);
  if (!Reserve(fresh)) {
    uint64_t used = used_pages_.load();
    uint64_t free_pages = used < capacity_pages_ ? capacity_pages_ - used : 0;
    return ResourceExhausted("store full: " + std::to_string(fresh) + " new pages do not fit in the " +
                             std::to_string(free_pages) + " free (capacity " +
                             FormatSize(capacity_pages_ * kPageSize) + "); nothing of this batch was stored");
  }
  if (Status st = ns.Put(pages); !st.ok()) {
    Unreserve(fresh);
    if (st.code() == Code::kNoSpace)
      return NoSpace("disk full under the data directory " + opts_.data_dir + ": nothing of this batch was stored (" +
                     st.message() + ")");
    return st;
  }
  written_seq_++;  // after the write: a sync that reads this number covers it
  return static_cast<uint64_t>(pages.size());
}

Result<uint32_t> PageStore::Get(std::string_view host, std::string_view vm, OwnerToken token,
                                std::span<const uint64_t> indexes, uint8_t* present, uint8_t* pages) {
  AGILE_ASSIGN_OR_RETURN(auto owned, Owned(host, vm, token));
  return owned.first->ns->Get(indexes, present, pages);
}

Result<PinnedPages> PageStore::GetPinned(std::string_view host, std::string_view vm, OwnerToken token,
                                        std::span<const uint64_t> indexes, uint8_t* present) {
  AGILE_ASSIGN_OR_RETURN(auto owned, Owned(host, vm, token));
  VmNamespace& ns = *owned.first->ns;
  PinnedPages p;
  p.pages_.reserve(indexes.size());
  if (ns.in_memory()) {
    p.pin_ = ns.Pin();
    p.entry_ = std::move(owned.first);
    ns.Peek(indexes, present, &p.pages_);
    return p;
  }
  // On disk the slots are not in memory to send from, and a page's hash is
  // checked on the way out anyway: read them, as Get does.
  p.copy_ = std::make_unique_for_overwrite<uint8_t[]>(indexes.size() * kPageSize);
  AGILE_ASSIGN_OR_RETURN(uint32_t n, ns.Get(indexes, present, p.copy_.get()));
  for (uint32_t i = 0; i < n; ++i) p.pages_.push_back(p.copy_.get() + static_cast<size_t>(i) * kPageSize);
  return p;
}

PinnedPages& PinnedPages::operator=(PinnedPages&& o) noexcept {
  if (this != &o) {
    Release();
    entry_ = std::move(o.entry_);
    pin_ = std::exchange(o.pin_, 0);
    pages_ = std::move(o.pages_);
    copy_ = std::move(o.copy_);
  }
  return *this;
}

void PinnedPages::Release() {
  // Moved out first: if this is the last reference, the entry (and its
  // mutex) must outlive the lock taken on it.
  if (std::shared_ptr<PageStore::Entry> e = std::move(entry_)) {
    std::lock_guard lock(e->mu);
    // A released namespace reuses no slot again; its memory goes with the
    // last reference to the entry.
    if (!e->gone) e->ns->Unpin(pin_);
  }
  pages_.clear();
  copy_.reset();
}

Result<uint64_t> PageStore::Delete(std::string_view host, std::string_view vm, OwnerToken token,
                                   std::span<const uint64_t> indexes) {
  AGILE_ASSIGN_OR_RETURN(auto owned, Owned(host, vm, token));
  AGILE_ASSIGN_OR_RETURN(uint64_t n, owned.first->ns->Delete(indexes));
  Unreserve(n);
  written_seq_++;
  return n;
}

Result<OwnerToken> PageStore::Transfer(std::string_view host, std::string_view vm, OwnerToken token,
                                       std::string_view new_host) {
  AGILE_RETURN_IF_ERROR(ValidateHostId(new_host));
  {
    // A lost reply: the old owner asks again, with the token the transfer
    // superseded, for the same new host, and nothing happened since (the new
    // owner has not passed it on). The answer is the token it did not get;
    // the old owner still cannot use it (rule 3: it is not the owner). Any
    // other stale token is refused as before.
    std::shared_ptr<Entry> e;
    {
      std::shared_lock lock(map_mu_);
      auto it = namespaces_.find(vm);
      if (it != namespaces_.end()) e = it->second;
    }
    if (e) {
      std::unique_lock lock(e->mu);
      const OwnerToken now = e->ns->token();
      if (!e->gone && !e->transferred_by.empty() && e->transferred_by == host && e->transferred_to == new_host &&
          e->ns->owner() == new_host && now.epoch == token.epoch + 1 && SameToken(token, e->transferred_with))
        return now;
    }
  }
  AGILE_ASSIGN_OR_RETURN(auto owned, Owned(host, vm, token));
  AGILE_ASSIGN_OR_RETURN(OwnerToken next, NewToken(token.epoch + 1));
  AGILE_RETURN_IF_ERROR(owned.first->ns->SetOwner(std::string(new_host), next));
  owned.first->transferred_by = std::string(host);
  owned.first->transferred_to = std::string(new_host);
  owned.first->transferred_with = token;
  return next;
}

Result<uint64_t> PageStore::Release(std::string_view host, std::string_view vm, OwnerToken token) {
  std::shared_ptr<Entry> e;
  uint64_t freed = 0;
  {
    AGILE_ASSIGN_OR_RETURN(auto owned, Owned(host, vm, token));
    e = owned.first;
    AGILE_RETURN_IF_ERROR(e->ns->Destroy());
    freed = e->ns->pages();
    e->gone = true;
    Unreserve(freed);
  }
  // Erase after dropping the entry lock: the lock order is map, then entry.
  std::unique_lock lock(map_mu_);
  auto it = namespaces_.find(vm);
  if (it != namespaces_.end() && it->second == e) namespaces_.erase(it);
  return freed;
}

StoreStats PageStore::Stats() const {
  StoreStats s;
  s.pages = used_pages_.load();
  s.capacity_pages = capacity_pages_;
  s.persistent = !opts_.data_dir.empty();
  std::shared_lock lock(map_mu_);
  for (const auto& [vm, e] : namespaces_) {
    std::lock_guard entry_lock(e->mu);
    if (e->gone) continue;
    s.vms.push_back(VmStat{vm, e->ns->owner(), e->ns->token().epoch, e->ns->pages()});
  }
  return s;
}

}  // namespace agile::memd
