#include "store/vm_namespace.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include <spdlog/spdlog.h>

#include "base/io.h"

namespace agile::memd {
namespace {

// Compact when the journal holds this many records more than twice the live pages.
constexpr uint64_t kCompactSlack = 65536;

std::string JoinPath(const std::string& dir, const std::string& vm, const char* ext) {
  return dir + "/" + vm + ext;
}

}  // namespace

VmNamespace::VmNamespace(Options opts, JournalState state, std::unique_ptr<PageSlots> slots,
                         std::optional<IndexJournal> journal)
    : opts_(std::move(opts)), state_(std::move(state)), slots_(std::move(slots)), journal_(std::move(journal)) {}

std::string VmNamespace::PathFor(const char* ext) const { return JoinPath(opts_.data_dir, state_.vm, ext); }

Result<std::unique_ptr<VmNamespace>> VmNamespace::Create(const Options& opts, std::string vm, std::string owner,
                                                         OwnerToken token) {
  JournalState st;
  st.vm = std::move(vm);
  st.owner = std::move(owner);
  st.token = token;
  if (opts.data_dir.empty())
    return std::unique_ptr<VmNamespace>(new VmNamespace(opts, std::move(st), NewMemorySlots(), std::nullopt));
  // Data file first: a crash before the journal exists leaves an orphan data
  // file, which the next start removes; the journal's rename commits the claim.
  AGILE_ASSIGN_OR_RETURN(auto slots, OpenFileSlots(JoinPath(opts.data_dir, st.vm, ".pages"), /*create=*/true));
  AGILE_ASSIGN_OR_RETURN(IndexJournal j, IndexJournal::Write(JoinPath(opts.data_dir, st.vm, ".index"), st));
  return std::unique_ptr<VmNamespace>(new VmNamespace(opts, std::move(st), std::move(slots), std::move(j)));
}

Result<std::unique_ptr<VmNamespace>> VmNamespace::Recover(const Options& opts, const std::string& vm) {
  std::string index_path = JoinPath(opts.data_dir, vm, ".index");
  uint64_t dropped = 0;
  AGILE_ASSIGN_OR_RETURN(auto replayed, IndexJournal::Replay(index_path, &dropped));
  auto& [journal, st] = replayed;
  if (st.vm != vm) return Corruption(index_path + ": journal is for vm '" + st.vm + "'");
  if (dropped > 0)
    spdlog::warn("vm {}: cut {} bytes of torn journal tail (an append interrupted by a crash)", vm, dropped);
  if (st.damaged_records > 0 || !st.lost.empty() || st.lost_unknown) {
    std::string list;
    for (uint64_t i : st.lost) {
      if (list.size() > 400) {
        list += " ...";
        break;
      }
      list += (list.empty() ? "" : " ") + std::to_string(i);
    }
    spdlog::error("vm {}: journal has {} damaged record(s), skipped; the rest is kept. Lost {} page(s){}{}{}", vm,
                  st.damaged_records, st.lost.size(), list.empty() ? "" : ": ", list,
                  st.lost_unknown ? "; and records naming no readable page (every page is suspect)" : "");
  }
  AGILE_ASSIGN_OR_RETURN(auto slots, OpenFileSlots(JoinPath(opts.data_dir, vm, ".pages"), /*create=*/false));

  // Every slot below the high-water mark that no page uses is free.
  uint64_t high = slots->Extent();
  for (const auto& [index, ref] : st.pages) high = std::max(high, ref.slot + 1);
  std::vector<bool> used(high);
  for (const auto& [index, ref] : st.pages) {
    if (used[ref.slot]) return Corruption(index_path + ": two pages share slot " + std::to_string(ref.slot));
    used[ref.slot] = true;
  }
  if (high > slots->Extent())
    spdlog::warn("vm {}: journal refers to slots past the end of the data file; those pages will read as corrupt",
                 vm);
  std::unique_ptr<VmNamespace> ns(new VmNamespace(opts, std::move(st), std::move(slots), std::move(journal)));
  ns->next_slot_ = high;
  for (uint64_t s = high; s-- > 0;)
    if (!used[s]) ns->free_.push_back(s);  // descending, so allocation pops ascending runs
  return ns;
}

Status VmNamespace::CheckOwner(std::string_view host, OwnerToken token) const {
  const std::string& vm = state_.vm;
  if (token.epoch < state_.token.epoch)
    return PermissionDenied("stale token for vm '" + vm + "': epoch " + std::to_string(token.epoch) +
                            ", but ownership moved to host '" + state_.owner + "' at epoch " +
                            std::to_string(state_.token.epoch));
  if (!SameToken(token, state_.token)) return PermissionDenied("wrong ownership token for vm '" + vm + "'");
  if (host != state_.owner)
    return PermissionDenied("vm '" + vm + "' is owned by host '" + state_.owner + "', not by '" +
                            std::string(host) + "'");
  return Status::Ok();
}

uint64_t VmNamespace::CountNew(std::span<const PageRef> pages) const {
  std::vector<uint64_t> fresh;
  for (const PageRef& p : pages)
    if (!state_.pages.contains(p.index)) fresh.push_back(p.index);
  std::sort(fresh.begin(), fresh.end());
  return static_cast<uint64_t>(std::unique(fresh.begin(), fresh.end()) - fresh.begin());
}

uint64_t VmNamespace::AllocateSlot() {
  if (free_.empty()) return next_slot_++;
  uint64_t s = free_.back();
  free_.pop_back();
  return s;
}

void VmNamespace::RetireSlot(uint64_t slot) {
  // In memory nothing can tear, so a slot is reusable at once, unless a GET
  // reply being sent from the slots may still point at it.
  if (persistent())
    retired_.push_back(slot);
  else if (pins_.empty())
    free_.push_back(slot);
  else
    held_.emplace_back(slot, pin_seq_);
}

uint64_t VmNamespace::Pin() {
  pins_.insert(++pin_seq_);
  return pin_seq_;
}

void VmNamespace::Unpin(uint64_t pin) {
  pins_.erase(pin);
  // A slot retired when the pin count was r is free once no pin <= r is out.
  uint64_t oldest = pins_.empty() ? UINT64_MAX : *pins_.begin();
  while (!held_.empty() && held_.front().second < oldest) {
    free_.push_back(held_.front().first);
    held_.pop_front();
  }
}

uint32_t VmNamespace::Peek(std::span<const uint64_t> indexes, uint8_t* present,
                           std::vector<const uint8_t*>* pages) const {
  uint32_t n = 0;
  for (size_t i = 0; i < indexes.size(); ++i) {
    auto it = state_.pages.find(indexes[i]);
    present[i] = it != state_.pages.end();
    if (!present[i]) continue;
    pages->push_back(slots_->Peek(it->second.slot));
    ++n;
  }
  return n;
}

Status VmNamespace::Put(std::span<const PageRef> pages) {
  std::vector<uint64_t> slots(pages.size());
  std::vector<const uint8_t*> data(pages.size());
  for (size_t i = 0; i < pages.size(); ++i) {
    slots[i] = AllocateSlot();
    data[i] = pages[i].data;
  }
  auto undo = [&] { free_.insert(free_.end(), slots.rbegin(), slots.rend()); };
  Status st = slots_->Write(slots, data);
  if (st.ok() && persistent() && opts_.sync_each_write) st = slots_->Sync();
  std::vector<std::pair<uint64_t, SlotRef>> sets(pages.size());
  for (size_t i = 0; i < pages.size(); ++i)
    sets[i] = {pages[i].index, SlotRef{slots[i], persistent() ? JournalPageHash(pages[i].data) : 0}};
  if (st.ok() && persistent()) st = opts_.defer_journal ? journal_->Stage(sets, {}) : journal_->Append(sets, {});
  if (!st.ok()) {
    undo();
    return st.Annotate("vm " + state_.vm + ": store pages");
  }
  // Journaled (or in memory): the pages are now the truth.
  for (const auto& [index, ref] : sets) {
    state_.lost.erase(index);  // stored again: no longer lost
    auto [it, inserted] = state_.pages.try_emplace(index, ref);
    if (!inserted) {
      RetireSlot(it->second.slot);
      it->second = ref;
    }
  }
  dirty_ = true;
  if (persistent() && opts_.sync_each_write) AGILE_RETURN_IF_ERROR(Sync());
  MaybeCompact();
  return Status::Ok();
}

Result<uint32_t> VmNamespace::Get(std::span<const uint64_t> indexes, uint8_t* present, uint8_t* pages) {
  uint32_t n = 0;
  for (size_t i = 0; i < indexes.size(); ++i) {
    auto it = state_.pages.find(indexes[i]);
    present[i] = it != state_.pages.end();
    if (!present[i]) continue;
    uint8_t* dst = pages + static_cast<size_t>(n) * kPageSize;
    // The message is built only on failure: this loop runs for every page a GET returns.
    if (Status st = slots_->Read(it->second.slot, dst); !st.ok())
      return st.Annotate("vm " + state_.vm + " page " + std::to_string(indexes[i]));
    if (persistent() && JournalPageHash(dst) != it->second.hash)
      return Corruption("vm " + state_.vm + " page " + std::to_string(indexes[i]) + ": stored bytes in slot " +
                        std::to_string(it->second.slot) + " fail their checksum");
    ++n;
  }
  return n;
}

Result<uint64_t> VmNamespace::Delete(std::span<const uint64_t> indexes) {
  std::vector<uint64_t> gone;
  for (uint64_t i : indexes) {
    if (state_.pages.contains(i)) gone.push_back(i);
    // The owner no longer wants a lost page: the loss is forgotten (in
    // memory; a replay may find it again until the next compaction, which
    // only repeats a loss the owner has already handled).
    state_.lost.erase(i);
  }
  std::sort(gone.begin(), gone.end());
  gone.erase(std::unique(gone.begin(), gone.end()), gone.end());
  if (gone.empty()) return uint64_t{0};
  if (persistent())
    AGILE_RETURN_IF_ERROR((opts_.defer_journal ? journal_->Stage({}, gone) : journal_->Append({}, gone))
                              .Annotate("vm " + state_.vm + ": delete"));
  for (uint64_t i : gone) {
    auto it = state_.pages.find(i);
    RetireSlot(it->second.slot);
    state_.pages.erase(it);
  }
  dirty_ = true;
  if (persistent() && opts_.sync_each_write) AGILE_RETURN_IF_ERROR(Sync());
  MaybeCompact();
  return static_cast<uint64_t>(gone.size());
}

Status VmNamespace::SetOwner(std::string owner, OwnerToken token) {
  // Ownership changes are rare and must not be forgotten: always synced.
  if (persistent()) {
    AGILE_RETURN_IF_ERROR(journal_->AppendOwner(owner, token));
    AGILE_RETURN_IF_ERROR(journal_->Sync());
  }
  state_.owner = std::move(owner);
  state_.token = token;
  return Status::Ok();
}

Status VmNamespace::Destroy() {
  if (!persistent()) return Status::Ok();
  // The journal goes first: without it the namespace no longer exists, and a
  // leftover data file is an orphan that the next start removes.
  for (const char* ext : {".index", ".pages"}) {
    std::string p = PathFor(ext);
    if (::unlink(p.c_str()) != 0 && errno != ENOENT) return ErrnoStatus("unlink " + p);
  }
  return SyncDir(opts_.data_dir);
}

Status VmNamespace::Sync() {
  if (!persistent()) return Status::Ok();
  // Data before journal: a durable SET record must find its bytes durable.
  AGILE_RETURN_IF_ERROR(slots_->Sync().Annotate("vm " + state_.vm));
  std::vector<uint8_t> staged = journal_->TakeStaged();
  if (Status st = journal_->AppendStaged(staged); !st.ok()) {
    journal_->Restage(std::move(staged));
    return st.Annotate("vm " + state_.vm);
  }
  AGILE_RETURN_IF_ERROR(journal_->Sync().Annotate("vm " + state_.vm));
  free_.insert(free_.end(), retired_.begin(), retired_.end());
  retired_.clear();
  dirty_ = false;
  return Status::Ok();
}

Result<VmNamespace::SyncPlan> VmNamespace::PrepareSync() {
  SyncPlan plan;
  if (!persistent() || !dirty_) return plan;
  plan.data.Reset(::fcntl(slots_->sync_fd(), F_DUPFD_CLOEXEC, 0));
  if (!plan.data) return ErrnoStatus("dup page data descriptor of vm " + state_.vm);
  plan.journal.Reset(::fcntl(journal_->fd(), F_DUPFD_CLOEXEC, 0));
  if (!plan.journal) return ErrnoStatus("dup journal descriptor of vm " + state_.vm);
  plan.retired = std::move(retired_);
  retired_.clear();
  plan.records = journal_->TakeStaged();
  plan.journal_gen = journal_gen_;
  dirty_ = false;
  return plan;
}

Status VmNamespace::WriteJournal(SyncPlan* plan) {
  // A compaction since PrepareSync wrote a journal from the whole state
  // (data synced first): these records are in it, and appending them again
  // could name slots that have changed since.
  if (persistent() && plan->journal_gen == journal_gen_)
    AGILE_RETURN_IF_ERROR(journal_->AppendStaged(plan->records).Annotate("vm " + state_.vm));
  plan->records.clear();  // written (or already in the journal): never restaged
  return Status::Ok();
}

void VmNamespace::FinishSync(SyncPlan plan, bool ok) {
  if (ok) {
    free_.insert(free_.end(), plan.retired.begin(), plan.retired.end());
  } else {
    // Not durable: the slots stay retired until a sync succeeds, and records
    // not yet written go back in front of those staged since.
    retired_.insert(retired_.end(), plan.retired.begin(), plan.retired.end());
    if (persistent() && plan.journal_gen == journal_gen_ && !plan.records.empty())
      journal_->Restage(std::move(plan.records));
    dirty_ = true;
  }
}

void VmNamespace::MaybeCompact(bool now) {
  if (!persistent() || (!now && journal_->records() <= 2 * state_.pages.size() + kCompactSlack)) return;
  uint64_t before = journal_->records();
  Status st = slots_->Sync();
  if (st.ok()) {
    auto j = IndexJournal::Write(PathFor(".index"), state_);
    st = j.status();
    if (j.ok()) {
      journal_ = std::move(j).value();  // staged records are in it (it holds the whole state)
      journal_gen_++;
    }
  }
  if (!st.ok()) {
    // The old journal is intact and still correct; try again after more writes.
    spdlog::warn("vm {}: journal compaction failed (will retry): {}", state_.vm, st.ToString());
    return;
  }
  // The rewritten journal is synced and names only live slots.
  free_.insert(free_.end(), retired_.begin(), retired_.end());
  retired_.clear();
  spdlog::debug("vm {}: compacted journal from {} to {} records", state_.vm, before, journal_->records());
}

}  // namespace agile::memd
