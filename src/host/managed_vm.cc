#include "host/managed_vm.h"

#include "offload/store_url.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <deque>
#include <filesystem>
#include <fstream>

#include "base/fault_point.h"
#include "base/size.h"
#include "base/socket.h"
#include "host/console_status.h"
#include "offload/store_url.h"
#include "uffd/compat.h"
#include "uffd/register.h"

namespace agile::host {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

enum State : int { kStarting, kRunning, kStopping, kStopped, kExited, kCrashed, kIncoming, kMigrated, kLost };

const char* StateName(int s) {
  switch (s) {
    case kStarting: return "starting";
    case kRunning: return "running";
    case kStopping: return "stopping";
    case kStopped: return "stopped";
    case kExited: return "exited";
    case kCrashed: return "crashed";
    case kIncoming: return "incoming";
    case kMigrated: return "migrated";
    case kLost: return "lost";
  }
  return "unknown";
}

}  // namespace

ManagedVm::ManagedVm(qemu::VmSpec spec, const HostConfig& host) : spec_(std::move(spec)), host_(host) {
  dir_ = host_.state_dir + "/vms/" + spec_.name;
  ram_dir_ = host_.shm_root + "/" + spec_.name;
  ram_path_ = ram_dir_ + "/ram";
  qmp_path_ = dir_ + "/qmp.sock";
  serial_path_ = dir_ + "/serial.log";
  qemu_log_path_ = dir_ + "/qemu.log";
  locations_path_ = dir_ + "/locations";
}

Result<std::unique_ptr<ManagedVm>> ManagedVm::Launch(const qemu::VmSpec& spec, const HostConfig& host,
                                                   bool incoming, const std::string& store_vm_id) {
  AGILE_RETURN_IF_ERROR(spec.Validate());
  std::unique_ptr<ManagedVm> vm(new ManagedVm(spec, host));
  Status st = vm->Start(incoming, store_vm_id);
  if (!st.ok()) {
    vm->Cleanup();
    return st;
  }
  return vm;
}

Status ManagedVm::Start(bool incoming, const std::string& store_vm_id) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return Internal("create " + dir_ + ": " + ec.message());
  for (const auto& f : {serial_path_, qemu_log_path_, qmp_path_}) fs::remove(f, ec);

  std::string shim_sock = dir_ + "/shim.sock";
  UniqueFd listen;
  if (!spec_.stock) {
    fs::create_directories(ram_dir_, ec);
    if (ec) return Internal("create " + ram_dir_ + ": " + ec.message());
    // The RAM file is created empty and sized, never pre-filled: every first
    // touch reaches our fault server, which is how we know what is resident.
    ram_fd_.Reset(::open(ram_path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!ram_fd_) return ErrnoStatus("create RAM file " + ram_path_ + " (is another VM of that name running?)");
    if (::ftruncate(ram_fd_.get(), static_cast<off_t>(spec_.memory_bytes)) != 0) return ErrnoStatus("size RAM file");
    AGILE_ASSIGN_OR_RETURN(listen, UnixListen(shim_sock, 1));
  }

  UniqueFd log(::open(qemu_log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!log) return ErrnoStatus("create " + qemu_log_path_);
  qemu::LaunchPaths paths{host_.qemu_binary, host_.kernel, host_.initrd, ram_path_, qmp_path_, serial_path_};
  paths.sandbox = host_.qemu_sandbox;
  paths.run_as = host_.qemu_run_as;
  paths.kvm_usable = qemu::KvmUsable();
  AGILE_ASSIGN_OR_RETURN(std::string accel, qemu::ResolveAccel(spec_.accel, paths.kvm_usable));
  SpawnOptions opts;
  opts.argv = qemu::QemuArgv(spec_, paths, incoming);
  if (!spec_.stock)
    opts.env = {"LD_PRELOAD=" + host_.shim_path, "AGILE_RAM_PATH=" + ram_path_, "AGILE_SHIM_SOCK=" + shim_sock};
  opts.stdout_fd = log.get();
  opts.stderr_fd = log.get();
  std::vector<std::string> needed = {host_.qemu_binary, host_.shim_path};
  if (spec_.boot == "kernel") needed.insert(needed.end(), {host_.kernel, host_.initrd});
  for (const auto& f : needed)
    if (!fs::exists(f)) return NotFound("missing " + f + " (run `make` to build the shim and guest image)");
  for (const auto& d : spec_.disks)
    if (!fs::exists(d.path)) return NotFound("disk " + d.path + " does not exist on this host" +
                                             (incoming ? " (a migration without --copy-storage needs shared storage)" : ""));
  if (spec_.firmware == "ovmf" && !fs::exists(qemu::kOvmfPath))
    return NotFound(std::string("--firmware ovmf: ") + qemu::kOvmfPath + " missing (install the ovmf package)");
  spdlog::info("vm {}: starting {}QEMU ({} MiB, {} vCPUs, {}, boot {}, {} disks, workload {}){}", spec_.name,
               spec_.stock ? "stock " : "", spec_.memory_bytes >> 20, spec_.vcpus, accel, spec_.boot,
               spec_.disks.size(), spec_.workload, incoming ? " for an incoming migration" : "");
  // Recorded before QEMU may run at all (the child waits at Spawn's exec
  // gate): a restarted agiled must know every QEMU this one started, or one
  // killed in between leaves a QEMU nobody adopts or stops (session 9's
  // soak: an incoming QEMU left in `inmigrate` for good).
  opts.before_exec = [&](pid_t pid) {
    std::lock_guard<std::mutex> l(record_mu_);
    record_.spec = spec_;
    record_.pid = pid;
    auto ticks = ProcessStartTicks(pid);  // unchanged by the exec to come
    record_.pid_start_ticks = ticks.ok() ? *ticks : 0;
    record_.incoming = incoming;
    Status s = WriteVmRecord(dir_, record_).Annotate("vm " + spec_.name + ": write its state record before QEMU starts");
    if (s.ok() && FaultPoint("exit-in-exec-gate")) {
      // Tests: agiled dies with a QEMU forked and recorded, not yet run.
      spdlog::critical("AGILE_FAULT=exit-in-exec-gate: exiting now");
      std::_Exit(86);
    }
    return s;
  };
  AGILE_ASSIGN_OR_RETURN(qemu_, Spawn(opts));
  started_ns_ = vm::NowNs();
  if (!spec_.stock) AGILE_RETURN_IF_ERROR(TakeOverMemory(listen.get(), incoming, store_vm_id));

  auto qmp = qemu::QmpClient::Connect(qmp_path_, 15000, qemu_.pidfd());
  if (!qmp.ok()) {
    (void)qemu_.Signal(SIGKILL);
    qemu_.Wait(5000);
    return qmp.status().Annotate("vm " + spec_.name).Annotate(QemuLogTail());
  }
  qmp_ = std::make_unique<qemu::QmpClient>(std::move(qmp).value());
  monitor_wake_.Reset(::eventfd(0, EFD_CLOEXEC));
  state_ = incoming ? kIncoming : kRunning;
  guest_paused_ = incoming;  // -incoming: QEMU runs the guest only after the migration's cont
  monitor_ = std::thread([this] { Monitor(); });
  return Status::Ok();
}

Status ManagedVm::TakeOverMemory(int listen_fd, bool incoming, const std::string& store_vm_id,
                                 const VmRecord* adopt) {
  UniqueFd uffd_fd;
  auto link = vm::ShimLink::Accept(listen_fd, ram_path_, spec_.memory_bytes, host_.handoff_timeout_ms,
                                   qemu_.pidfd(), &uffd_fd);
  if (!link.ok()) {
    (void)qemu_.Signal(SIGKILL);
    qemu_.Wait(5000);
    return link.status().Annotate("vm " + spec_.name + " did not start").Annotate(QemuLogTail());
  }
  memory_ = std::make_shared<vm::GuestMemory>(std::move(ram_fd_), uffd::Uffd(std::move(uffd_fd)),
                                              std::move(link).value(),
                                              incoming ? vm::PageState::kRemote : vm::PageState::kZero);
  const uint64_t pages = memory_->pages();
  if (adopt == nullptr) {
    auto map = vm::LocationMap::Create(locations_path_, pages);
    if (!map.ok()) return map.status().Annotate("vm " + spec_.name);
    memory_->AttachLocationMap(std::move(map).value());
  } else {
    auto map = vm::LocationMap::Open(locations_path_, pages);
    if (!map.ok() && !(map.status().code() == Code::kNotFound && !adopt->store_owned))
      return map.status().Annotate("page locations of vm " + spec_.name + " (offloaded pages cannot be found)");
    if (!map.ok()) map = vm::LocationMap::Create(locations_path_, pages);  // never offloaded: nothing to find
    if (!map.ok()) return map.status();
    memory_->AttachLocationMap(std::move(map).value());
    // An arriving VM's holes include the pages still at the migration
    // source, which only the migration record tells from zero pages.
    const bool arriving = pending_migration_ && pending_migration_->role == migrate::MigrationRecord::Role::kDestination;
    AGILE_RETURN_IF_ERROR(memory_->Recover(arriving ? &pending_migration_->remote : nullptr)
                              .Annotate("recover page states of vm " + spec_.name));
  }
  std::string recorded_id = adopt != nullptr ? adopt->store_vm_id : "";
  if (!host_.memd_addr.empty() || !recorded_id.empty()) {
    if (host_.memd_addr.empty())
      return Unsupported("vm " + spec_.name + " has pages in swap-store namespace " + recorded_id +
                         " but this agiled has no --memd");
    // The store namespace id outlives this host's copy of the VM (migration
    // carries it), so it is unique per VM incarnation, not per name.
    std::string id = !recorded_id.empty() ? recorded_id
                     : !store_vm_id.empty() ? store_vm_id
                                            : spec_.name + "-" + std::to_string(qemu_.pid()) + "-" +
                                                  std::to_string(started_ns_ % 1000000007ULL);
    auto store = offload::MakeSwapStore(host_.memd_addr, host_.id, id, host_.tls);
    if (!store.ok()) {
      (void)qemu_.Signal(SIGKILL);
      qemu_.Wait(5000);
      return store.status().Annotate("vm " + spec_.name + " did not start");
    }
    store_ = std::move(store).value();
    store_->SetTimeouts({host_.timeouts.memd_connect_ms, host_.timeouts.memd_request_ms});
    store_->SetLostPagesHandler([this](const offload::LostPages& lost) { OnLostPages(lost); });
    if (adopt != nullptr && adopt->store_owned)
      store_->Adopt(memd::OwnerToken{adopt->token_epoch, adopt->token_secret, adopt->token_secret_hi});
    {
      std::lock_guard<std::mutex> l(record_mu_);
      record_.store_vm_id = id;
    }
    (void)PersistRecord();
  }
  faults_ = std::make_unique<vm::FaultServer>(memory_.get(), store_.get(), host_.prefetch_pages);
  fault_policy_ = std::make_unique<offload::LastFaultPolicy>(memory_.get());
  policy_ = fault_policy_.get();
  track::TrackerOptions topts;
  topts.cpu_budget_pct = host_.tracking_cpu_pct;
  auto tracker = track::AccessTracker::Create(memory_.get(), &faults_->stats(), topts);
  if (tracker.ok()) {
    tracker_ = std::move(tracker).value();
    tracker_policy_ = std::make_unique<offload::TrackerPolicy>(tracker_.get(), fault_policy_.get());
    policy_ = tracker_policy_.get();
    observers_ = std::make_unique<offload::FanOutObserver>(tracker_.get(), fault_policy_.get());
    faults_->set_access_observer(observers_.get());
  } else {
    spdlog::warn("vm {}: no working-set tracking ({}); offload picks least-recently-faulted pages", spec_.name,
                 tracker.status().ToString());
    faults_->set_access_observer(fault_policy_.get());
  }
  if (store_)
    evictor_ = std::make_unique<offload::Evictor>(memory_.get(), store_.get());
  faults_->set_on_fatal([name = spec_.name](const Status& s) {
    spdlog::warn("vm {}: fault service ended: {}", name, s.ToString());
  });
  AGILE_RETURN_IF_ERROR(faults_->Start());
  // vCPUs may wait on faults the previous agiled read and never resolved:
  // woken, they fault again, to us.
  if (adopt != nullptr) AGILE_RETURN_IF_ERROR(memory_->WakeAll().Annotate("wake the adopted VM's waiting faults"));
  if (tracker_) tracker_->Start();
  spdlog::info("vm {}: QEMU pid {} handed over {} MiB of guest RAM (features: {})", spec_.name, qemu_.pid(),
               memory_->mapping().length >> 20, uffd::FeatureNames(memory_->mapping().features));
  return Status::Ok();
}

void ManagedVm::Monitor() {
  pollfd p[2] = {{qemu_.pidfd(), POLLIN, 0}, {monitor_wake_.get(), POLLIN, 0}};
  while (::poll(p, 2, -1) < 0 && errno == EINTR) {
  }
  if (!(p[0].revents & POLLIN)) return;  // woken by Stop()
  qemu_.Wait(1000);
  if (stopping_) return;
  if (spec_.libvirt) {
    // libvirt ended its QEMU (virsh shutdown/destroy, a guest power-off, a
    // crash it reports): nothing of the VM is ours to keep. Its RAM file,
    // swap-store pages and record go now; VmManager drops the entry. A Stop()
    // already under way cleans up itself.
    std::unique_lock<std::mutex> l(stop_mu_, std::try_to_lock);
    if (!l.owns_lock() || stopping_) return;
    state_ = kExited;
    exit_reason_ = "QEMU ended (libvirt stopped the domain, or the guest powered off or crashed: see virsh domstate --reason)";
    spdlog::info("vm {}: libvirt's QEMU ended; releasing its guest RAM and swap-store pages", spec_.name);
    Cleanup();
    return;
  }
  std::string why = qemu_.ExitDescription();
  bool clean = why == "exited with code 0";
  state_ = clean ? kExited : kCrashed;
  exit_reason_ = why;
  if (clean) spdlog::info("vm {}: QEMU {} (guest powered off)", spec_.name, why);
  else spdlog::error("vm {}: QEMU {} unexpectedly. {}", spec_.name, why, QemuLogTail());
  if (tracker_) tracker_->Stop();
  if (faults_) faults_->Stop();  // a stock VM has none
}

bool ManagedVm::QemuEnded() const {
  // By its pidfd, never Process::Poll: the monitor thread owns qemu_'s exit status.
  pollfd ended{qemu_.pidfd(), POLLIN, 0};
  return ::poll(&ended, 1, 0) > 0;
}

void ManagedVm::ConnectQmpLate() {
  const uint64_t since = vm::NowNs();
  bool told = false;
  while (!stopping_) {
    auto qmp = qemu::QmpClient::Connect(qmp_path_, 15000, qemu_.pidfd());
    if (qmp.ok()) {
      {
        std::lock_guard<std::mutex> l(qmp_mu_);
        if (stopping_) return;
        qmp_ = std::make_unique<qemu::QmpClient>(std::move(qmp).value());
        qmp_connecting_ = false;
      }
      (void)Qmp("query-status");
      spdlog::info("vm {}: QMP of the re-adopted QEMU answers ({:.1f} s after adoption)", spec_.name,
                   static_cast<double>(vm::NowNs() - since) / 1e9);
      return;
    }
    if (QemuEnded()) return;  // the monitor reports how it ended
    if (!told)
      spdlog::warn("vm {}: QMP of the re-adopted QEMU does not answer yet ({}); its main loop may wait for a page "
                   "still at the migration source or in a swap store that is down. Retrying until it does; QMP "
                   "requests fail meanwhile",
                   spec_.name, qmp.status().ToString());
    told = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

Result<json> ManagedVm::Qmp(const std::string& cmd, const json& args) {
  std::lock_guard<std::mutex> l(qmp_mu_);
  if (!qmp_)
    return Unavailable(qmp_connecting_ ? "QMP of the re-adopted QEMU does not answer yet (its main loop may "
                                              "wait for a page still at the migration source or in a swap store "
                                              "that is down)"
                                            : "no QMP connection");
  auto r = qmp_->Execute(cmd, args, host_.timeouts.qmp_ms);
  if (r.ok()) {
    if (cmd == "stop") guest_paused_ = true;
    else if (cmd == "cont") guest_paused_ = false;
    else if (cmd == "query-status") guest_paused_ = !r->value("running", true);
  }
  return r;
}

Status ManagedVm::Stop(int timeout_ms) {
  std::lock_guard<std::mutex> l(stop_mu_);
  if (state_ == kStopped) return Status::Ok();
  stopping_ = true;
  state_ = kStopping;
  if (qemu_.running() && !qemu_.Poll()) {
    spdlog::info("vm {}: stopping", spec_.name);
    auto q = Qmp("quit");
    if (!q.ok()) spdlog::warn("vm {}: QMP quit failed ({}); sending SIGTERM", spec_.name, q.status().ToString());
    if (!q.ok() || !qemu_.Wait(timeout_ms)) {
      (void)qemu_.Signal(SIGTERM);
      if (!qemu_.Wait(5000)) {
        spdlog::warn("vm {}: QEMU ignored SIGTERM; killing it", spec_.name);
        (void)qemu_.Signal(SIGKILL);
        qemu_.Wait(5000);
      }
    }
  }
  if (monitor_wake_) {
    uint64_t one = 1;
    (void)!::write(monitor_wake_.get(), &one, sizeof(one));
  }
  if (monitor_.joinable()) monitor_.join();
  if (qmp_late_.joinable()) qmp_late_.join();  // QEMU has ended: its connect fails now
  Cleanup();
  state_ = kStopped;
  spdlog::info("vm {}: stopped, guest RAM released", spec_.name);
  return Status::Ok();
}

void ManagedVm::Cleanup() {
  if (tracker_) tracker_->Stop();
  if (faults_) faults_->Stop();
  if (store_ && store_->claimed() && !keep_store_ && Unconfirmed()) {
    // Never ran here: the source's paused copy may be the VM, and these are
    // its cold pages. Kept (a leak at worst, never a loss).
    spdlog::warn("vm {}: its swap-store namespace is kept: the VM arrived but never ran here, and its source may "
                 "hold the only whole copy", spec_.name);
    keep_store_ = true;
  }
  if (store_ && store_->claimed() && !keep_store_) {
    Status s = store_->Release();
    if (!s.ok()) spdlog::warn("vm {}: could not release its swap-store pages: {}", spec_.name, s.ToString());
  }
  {
    std::lock_guard<std::mutex> l(qmp_mu_);
    qmp_.reset();
  }
  // Workers that still hold the memory (an offload, a migration) now fail
  // cleanly; the descriptors close when the last of them lets go.
  if (memory_) memory_->Retire();
  ram_fd_.Reset();
  std::error_code ec;
  fs::remove_all(ram_dir_, ec);
  fs::remove(dir_ + "/shim.sock", ec);
  fs::remove(qmp_path_, ec);
  // The VM is no longer ours to adopt after a restart.
  if (state_ != kLost) {
    fs::remove(dir_ + "/" + kVmRecordFile, ec);
    fs::remove(locations_path_, ec);
    fs::remove(dir_ + "/" + migrate::kMigrationRecordFile, ec);
  }
}

ManagedVm::~ManagedVm() { (void)Stop(); }

void ManagedVm::BecomeRunning() { state_ = kRunning; }

std::string ManagedVm::state() const { return StateName(state_); }

std::string ManagedVm::QemuLogTail() const {
  std::string out;
  for (const auto& l : TailLines(qemu_log_path_, 5, 64u << 10)) out += (out.empty() ? "" : " | ") + l;
  return out.empty() ? "QEMU printed nothing" : "QEMU said: " + out;
}

json ManagedVm::GuestStatus() const {
  // Bounded and regex-free: console_status.h.
  return ConsoleStatusFromFile(serial_path_);
}

void ManagedVm::OnLostPages(const offload::LostPages& lost) {
  // A lost page this host still holds (resident, zero, or being offloaded
  // again) is not lost: our copy is the page, and the next offload stores it
  // anew. An offloaded one has no other copy: the VM is damaged. Its vCPUs
  // wait on such a page forever rather than see zeros (invariant 2).
  std::vector<uint64_t> gone;
  auto offloaded = [&](uint64_t i) { return i < memory_->pages() && memory_->state(i) == vm::PageState::kOffloaded; };
  if (lost.all) {
    for (uint64_t i = 0; i < memory_->pages(); ++i)
      if (offloaded(i)) gone.push_back(i);
  } else {
    for (uint64_t i : lost.pages)
      if (offloaded(i)) gone.push_back(i);
  }
  size_t kept = lost.all ? 0 : lost.pages.size() - gone.size();
  std::lock_guard<std::mutex> l(damage_mu_);
  damaged_pages_.insert(gone.begin(), gone.end());
  if (gone.empty()) {
    spdlog::warn("vm {}: the swap store lost {} page(s) ({}); this host still holds every one of them: nothing lost",
                 spec_.name, lost.pages.size(), lost.why);
    return;
  }
  damage_reason_ = lost.why;
  spdlog::error("vm {}: DAMAGED: {} offloaded page(s) are lost ({}); {} other lost page(s) were still held here. "
                "A vCPU touching a lost page waits, it is never given zeros. First lost page: {}",
                spec_.name, gone.size(), lost.why, kept, gone.front());
}

json ManagedVm::Stat() {
  // QEMU's own word on whether the guest runs, for VMs whose QEMU others
  // drive too (libvirt's monitor) or whose QEMU alone holds the RAM (stock:
  // its main loop never waits on a page of ours, so the ask is brief).
  if ((spec_.libvirt || spec_.stock) && state_ == kRunning) RefreshPausedFromQemu();
  json j;
  j["name"] = spec_.name;
  j["state"] = state_ == kRunning && guest_paused_ ? "paused" : state();
  j["memory_bytes"] = spec_.memory_bytes;
  j["workload"] = spec_.workload;
  j["spec"] = spec_.ToJson();
  if (!exit_reason_.empty()) j["exit"] = exit_reason_;
  j["stock"] = spec_.stock;
  {
    std::lock_guard<std::mutex> l(migration_mu_);
    if (!migration_status_.is_null()) j["migration"] = migration_status_;
  }
  if (qemu_.pid() > 0) j["pid"] = qemu_.pid();
  j["uptime_s"] = UptimeS();
  if (memory_) {
    j["pages"] = {{"total", memory_->pages()},
                  {"resident", memory_->count(vm::PageState::kResident)},
                  {"zero", memory_->count(vm::PageState::kZero)},
                  {"offloaded", memory_->count(vm::PageState::kOffloaded)},
                  {"in_flight", memory_->count(vm::PageState::kInFlight)},
                  {"remote", memory_->count(vm::PageState::kRemote)}};
  }
  if (faults_) {
    const auto& f = faults_->stats();
    j["faults"] = {{"first_touch", f.first_touch.load()},
                   {"minor", f.minor.load()},
                   {"refault", f.refault.load()},
                   {"spurious", f.spurious.load()},
                   {"deferred", f.deferred.load()},
                   {"fetch_errors", f.fetch_errors.load()},
                   {"prefetched", f.prefetched.load()},
                   {"first_touch_p50_us", f.first_touch_latency.PercentileUs(50)},
                   {"first_touch_p99_us", f.first_touch_latency.PercentileUs(99)},
                   {"refault_p50_us", f.refault_latency.PercentileUs(50)},
                   {"refault_p99_us", f.refault_latency.PercentileUs(99)}};
    // A vCPU waits on a page its store cannot give (docs/timeouts.md): the
    // VM is degraded until a fetch succeeds again.
    const uint64_t failing = f.fetch_failing_since_ns.load();
    if (failing != 0) {
      j["health"] = "degraded";
      j["degraded"] = {{"reason", "swap store unreachable: vCPUs faulting on offloaded pages wait"},
                       {"since_ms", static_cast<double>(vm::NowNs() - failing) / 1e6}};
    }
  }
  {
    // A restart now would adopt an older record (an older token, an
    // arriving VM taken for one that never switched over...).
    std::lock_guard<std::mutex> l(record_error_mu_);
    if (!record_error_.empty()) {
      const std::string why = "state record not written (" + record_error_ + "): a restart of agiled now would " +
                              "adopt an older one";
      j["health"] = "degraded";
      if (j.contains("degraded")) j["degraded"]["reason"] = j["degraded"]["reason"].get<std::string>() + "; " + why;
      else j["degraded"] = {{"reason", why}};
    }
  }
  if (!j.contains("health")) j["health"] = "ok";
  {
    std::lock_guard<std::mutex> l(fence_mu_);
    if (!fence_reason_.empty()) j["fenced"] = {{"reason", fence_reason_}, {"lease", fence_lease_}};
  }
  {
    std::lock_guard<std::mutex> l(damage_mu_);
    j["damaged"] = !damaged_pages_.empty();
    j["lost_pages"] = damaged_pages_.size();
    if (!damaged_pages_.empty()) j["damage_reason"] = damage_reason_;
  }
  if (tracker_) {
    j["wss_bytes"] = EstimatedWssBytes();
    j["wss"] = WorkingSet();
  }
  if (store_) {
    std::lock_guard<std::mutex> l(offload_stats_mu_);
    j["offload"] = {{"store", store_->addr()},
                    {"store_vm_id", store_->store_vm_id()},
                    {"policy", policy_ ? policy_->name() : "none"},
                    {"pages_offloaded", offload_total_.pages_offloaded},
                    {"pages_zero_dropped", offload_total_.pages_zero},
                    {"bytes_offloaded", offload_total_.bytes_sent},
                    {"seconds", offload_total_.seconds}};
  }
  // Measured, not inferred: what the RAM file really occupies in tmpfs.
  if (memory_ && !memory_->retired()) j["host"] = {{"ram_file_bytes", memory_->RamFileBytes()}};
  j["guest"] = GuestStatus();
  return j;
}

Status ManagedVm::PersistRecord() {
  std::lock_guard<std::mutex> l(record_mu_);
  if (store_) {
    record_.store_vm_id = store_->store_vm_id();
    auto t = store_->owned_token();
    record_.store_owned = t.has_value();
    if (t) {
      record_.token_epoch = t->epoch;
      record_.token_secret = t->secret;
      record_.token_secret_hi = t->secret_hi;
    }
  }
  Status s = WriteVmRecord(dir_, record_);
  std::lock_guard<std::mutex> el(record_error_mu_);
  if (!s.ok()) {
    if (record_error_.empty())
      spdlog::error("vm {}: cannot write its state record ({}): a restart meanwhile would adopt an older one",
                    spec_.name, s.ToString());
    record_error_ = s.ToString();
  } else if (!record_error_.empty()) {
    spdlog::info("vm {}: its state record is written again (it had failed: {})", spec_.name, record_error_);
    record_error_.clear();
  }
  return s;
}

std::unique_ptr<ManagedVm> ManagedVm::Lost(const std::string& name, const HostConfig& host, const std::string& why) {
  qemu::VmSpec spec;
  spec.name = name;
  std::unique_ptr<ManagedVm> vm(new ManagedVm(spec, host));
  vm->MarkLost(why, nullptr);
  return vm;
}

std::unique_ptr<ManagedVm> ManagedVm::Adopt(const VmRecord& rec, const HostConfig& host) {
  std::unique_ptr<ManagedVm> vm(new ManagedVm(rec.spec, host));
  {
    std::lock_guard<std::mutex> l(vm->record_mu_);
    vm->record_ = rec;
  }
  auto ticks = ProcessStartTicks(rec.pid);
  // A QEMU that exited but was not reaped yet (its parent, the agiled that
  // died, cannot; the reaper may not have run) still has its /proc entry and
  // start time: its pidfd tells. Known at once, it costs the start-up nothing
  // (it waited 15 s on the dead QMP socket: docs/reliability.md, finding 7).
  auto proc = ticks.ok() && *ticks == rec.pid_start_ticks ? Process::Adopt(rec.pid) : Result<Process>(NotFound(""));
  if (!proc.ok() || proc->Poll()) {
    // An arriving VM's QEMU (or one agiled died before letting it exec) held
    // no copy the source lacks unless it had switched over, which its
    // migration record (or, stock, its QEMU) would have told.
    vm->MarkLost("QEMU (pid " + std::to_string(rec.pid) + ") ended while agiled was down" +
                     (rec.incoming ? std::string(" (it was the destination of a migration; the VM is at its source "
                                                 "unless that migration had switched over)")
                                   : std::string()),
                 &rec);
    return vm;
  }
  Status s = vm->AdoptRunning(rec);
  if (!s.ok()) {
    // QEMU lives but cannot be served safely: end it rather than leave it
    // frozen on faults nobody will serve.
    if (vm->qemu_.pid() > 0) {
      (void)vm->qemu_.Signal(SIGKILL);
      vm->qemu_.Wait(5000);
    } else if (auto p = Process::Adopt(rec.pid); p.ok()) {
      (void)p->Signal(SIGKILL);
      p->Wait(5000);
    }
    vm->MarkLost("could not be re-adopted: " + s.ToString(), &rec);
  }
  return vm;
}

Status ManagedVm::AdoptRunning(const VmRecord& rec) {
  // A post-copy past its commit point when agiled died (docs/invariants.md,
  // "A migration in flight when agiled dies"): migration.record says which.
  auto mig = migrate::ReadMigrationRecord(dir_);
  if (!mig.ok() && mig.status().code() != Code::kNotFound) {
    if (rec.incoming)
      return mig.status().Annotate("the pages still at the migration source cannot be told from zero pages");
    // The source of a migration whose state is unreadable: the VM may run
    // at the destination now, so it stays fenced here (operator's call).
    spdlog::error("vm {}: {}", spec_.name, mig.status().ToString());
    SetFenced("its migration record is damaged: the VM may run at the destination", false);
  } else if (mig.ok() && mig->role == migrate::MigrationRecord::Role::kDestination && !rec.incoming) {
    // Every page had arrived (the record goes right after that is recorded).
    (void)migrate::RemoveMigrationRecord(dir_);
  } else if (mig.ok() && (mig->role == migrate::MigrationRecord::Role::kDestination) != rec.incoming) {
    return Corruption("its migration record says it was the source, its state record that it was arriving");
  } else if (mig.ok()) {
    if (mig->vm != spec_.name || mig->pages != spec_.memory_bytes / kPageSize)
      return Corruption("its migration record names another VM (" + mig->vm + ")");
    pending_migration_ = std::move(mig).value();
    if (pending_migration_->role == migrate::MigrationRecord::Role::kSource)
      SetFenced("its migration to " + pending_migration_->peer_host + " (" + pending_migration_->peer_addr +
                    ") had passed the commit point when agiled restarted",
                pending_migration_->lease);
  }
  // A stock VM arriving by QEMU's own migration (qemu-* modes) has no
  // migration record: its QEMU alone knows whether it switched over, below.
  const bool stock_arrival = rec.incoming && !pending_migration_ && spec_.stock;
  const std::string before_switchover =
      "it was the destination of a migration that agiled's restart interrupted before the switchover (the VM "
      "stays at the source)";
  if (rec.incoming && !pending_migration_ && !stock_arrival) return Unavailable(before_switchover);
  AGILE_ASSIGN_OR_RETURN(qemu_, Process::Adopt(rec.pid));
  started_ns_ = vm::NowNs();
  spdlog::info("vm {}: re-adopting QEMU pid {}", spec_.name, rec.pid);
  if (!spec_.stock) {
    ram_fd_.Reset(::open(ram_path_.c_str(), O_RDWR | O_CLOEXEC));
    if (!ram_fd_) return ErrnoStatus("open RAM file " + ram_path_);
    AGILE_ASSIGN_OR_RETURN(UniqueFd listen, UnixListen(dir_ + "/shim.sock", 1));
    AGILE_RETURN_IF_ERROR(TakeOverMemory(listen.get(), false, "", &rec));
  }
  monitor_wake_.Reset(::eventfd(0, EFD_CLOEXEC));
  // QEMU's main loop may itself wait on a guest page (a device, a monitor
  // command reading guest RAM) that only comes later: from the migration
  // source, whose RESUME this agiled can take only once it serves (after
  // adoption: waiting for QMP first would deadlock), or from a swap store
  // that is down. Its silence is never a reason to kill it (that lost the
  // only running copy of a VM: CI stop 18): QMP connects once QEMU answers.
  const bool pages_at_source =
      pending_migration_ && pending_migration_->role == migrate::MigrationRecord::Role::kDestination;
  Result<qemu::QmpClient> qmp = pages_at_source
                                    ? Result<qemu::QmpClient>(Unavailable("not tried: pages still at the source"))
                                    : qemu::QmpClient::Connect(qmp_path_, 15000, qemu_.pidfd());
  if (!qmp.ok() && QemuEnded()) return qmp.status().Annotate("QMP of the adopted QEMU (it ended)");
  // Stock arrivals are QEMU's own business end to end (no page of theirs waits
  // on agiled): a QMP that stays silent leaves nothing to tell them by.
  if (!qmp.ok() && stock_arrival)
    return qmp.status().Annotate("QMP of the arriving QEMU, the only witness of whether it switched over");
  state_ = kRunning;
  if (qmp.ok()) {
    qmp_ = std::make_unique<qemu::QmpClient>(std::move(qmp).value());
    auto run = Qmp("query-status");  // paused or running, as the previous agiled left it
    if (run.ok() && run->value("running", false)) {
      std::lock_guard<std::mutex> l(record_mu_);
      record_.unconfirmed = false;  // it has run here (PersistRecord below)
    }
    if (stock_arrival) {
      // Past "inmigrate" QEMU has loaded the device state and runs the guest
      // (pre-copy done, or post-copy pulling its pages by itself): this is
      // the copy that runs now, and the source (no DONE_ACK: docs/migration.md)
      // holds a paused, fenced one. Killing it lost the VM (soak seed 6,
      // runs 73 and 93).
      if (!run.ok()) return run.status().Annotate("QMP query-status of the arriving QEMU");
      const std::string status = run->value("status", "");
      if (status == "inmigrate") return Unavailable(before_switchover);
      spdlog::warn("vm {}: re-adopted as arrived: QEMU's own migration had switched it over here (QEMU status {}) "
                   "when agiled restarted. Its source keeps a paused, fenced copy to be stopped there",
                   spec_.name, status);
      std::lock_guard<std::mutex> l(record_mu_);
      record_.incoming = false;  // PersistRecord below
    }
  } else {
    if (!pages_at_source)
      spdlog::warn("vm {}: QMP of the re-adopted QEMU does not answer ({}); adopted all the same, its faults are "
                   "served, QMP connects once QEMU answers", spec_.name, qmp.status().ToString());
    qmp_connecting_ = true;
    qmp_late_ = std::thread([this] { ConnectQmpLate(); });
  }
  monitor_ = std::thread([this] { Monitor(); });
  (void)PersistRecord();
  spdlog::info("vm {}: re-adopted ({} pages resident, {} offloaded, {} zero){}", spec_.name,
               memory_ ? memory_->count(vm::PageState::kResident) : 0,
               memory_ ? memory_->count(vm::PageState::kOffloaded) : 0,
               memory_ ? memory_->count(vm::PageState::kZero) : 0, guest_paused_ ? ", paused" : "");
  return Status::Ok();
}

void ManagedVm::MarkLost(const std::string& why, const VmRecord* rec) {
  state_ = kLost;
  exit_reason_ = why;
  spdlog::error("vm {}: lost: {}", spec_.name, why);
  if (faults_) faults_->Stop();
  if (tracker_) tracker_->Stop();
  // Its swap-store pages can serve no one now; an incoming VM's namespace
  // is the source's, never ours to drop.
  if (rec != nullptr && rec->store_owned && !rec->incoming && !rec->unconfirmed && !host_.memd_addr.empty()) {
    if (!store_) {
      auto made = offload::MakeSwapStore(host_.memd_addr, host_.id, rec->store_vm_id, host_.tls);
      if (made.ok()) {
        store_ = std::move(made).value();
        store_->SetTimeouts({host_.timeouts.memd_connect_ms, host_.timeouts.memd_request_ms});
      } else {
        spdlog::warn("vm {}: cannot release its swap-store namespace: {}", spec_.name, made.status().ToString());
      }
    }
    if (store_ && !store_->claimed())
      store_->Adopt(memd::OwnerToken{rec->token_epoch, rec->token_secret, rec->token_secret_hi});
  }
  Cleanup();
}

Status ManagedVm::AdoptStore(const std::string& store_vm_id, uint64_t epoch, uint64_t secret, uint64_t secret_hi) {
  if (store_ == nullptr || store_->store_vm_id() != store_vm_id) {
    if (host_.memd_addr.empty())
      return Unsupported("the VM's cold pages are in a swap store but this agiled has no --store");
    // The fault server holds a PageSource pointer: it must not change under it.
    if (store_ != nullptr) return Internal("vm " + spec_.name + " already uses another store namespace");
    return Internal("incoming VM " + spec_.name + " was launched without its store namespace");
  }
  store_->Adopt(memd::OwnerToken{epoch, secret, secret_hi});
  // No PersistRecord here: this runs with the guest paused at both ends,
  // and a record rewrite is two fsyncs on a shared disk. The record keeps
  // `incoming` until MarkRunning (right after the SWITCHOVER_ACK), which
  // writes the token too; until then a crash makes the VM lost here
  // whether or not the token is on disk (docs/invariants.md, "The
  // switchover at the destination").
  return Status::Ok();
}

Result<memd::OwnerToken> ManagedVm::HandBackStore(const std::string& host) {
  if (store_ == nullptr || !store_->claimed())
    return Internal("vm " + spec_.name + " holds no swap-store namespace to hand back");
  auto token = store_->Transfer(host);
  if (!token.ok()) {
    // memd may have done it or not: either way the pages are the VM's only
    // copy of its cold memory, so the copy dropped here must not release them.
    keep_store_ = true;
    return token.status().Annotate("handing the swap-store namespace back to " + host);
  }
  (void)PersistRecord();  // the token is void here now
  spdlog::info("vm {}: swap-store namespace handed back to {} (epoch {})", spec_.name, host, token->epoch);
  return token;
}

void ManagedVm::MarkRunning(bool all_pages_here) {
  // Only an arriving VM becomes running: a QEMU that exited meanwhile (killed
  // right after the switch, while post-copy still pushed its pages) stays
  // crashed, or `vm stat` would report a running VM that no process runs (soak
  // run 7 of 2026-12-01 21:01, docs/reliability.md).
  int from = kIncoming;
  if (!state_.compare_exchange_strong(from, kRunning) && from != kRunning) {
    spdlog::error("vm {}: its migration completed, but the VM is {} here", spec_.name, StateName(from));
    return;
  }
  {
    std::lock_guard<std::mutex> l(record_mu_);
    record_.incoming = !all_pages_here;
    record_.unconfirmed = false;  // `cont` ran here (or the source kept nothing to resume)
  }
  (void)PersistRecord();  // an arrived VM is adopted after a restart like any other
}

Status ManagedVm::RecordArrival(bool arrived) {
  {
    std::lock_guard<std::mutex> l(record_mu_);
    record_.incoming = !arrived;
    record_.unconfirmed = arrived;  // until the guest has run here (MarkRunning, Resume)
  }
  return PersistRecord();
}

bool ManagedVm::Unconfirmed() {
  std::lock_guard<std::mutex> l(record_mu_);
  return record_.unconfirmed;
}

void ManagedVm::Confirm() {
  {
    std::lock_guard<std::mutex> l(record_mu_);
    if (!record_.unconfirmed) return;
    record_.unconfirmed = false;
  }
  (void)PersistRecord();
}

void ManagedVm::BeginOutgoing() {
  outgoing_lock_ = std::unique_lock<std::mutex>(offload_mu_);
  if (tracker_) tracker_->Stop();
}

Status ManagedVm::SaveMigrationRecord(const migrate::MigrationRecord* r) {
  return r != nullptr ? migrate::WriteMigrationRecord(dir_, *r) : migrate::RemoveMigrationRecord(dir_);
}

void ManagedVm::SetFenced(const std::string& reason, bool lease) {
  std::lock_guard<std::mutex> l(fence_mu_);
  fence_reason_ = reason;
  fence_lease_ = lease;
  if (!reason.empty()) spdlog::warn("vm {}: fenced: {}", spec_.name, reason);
}

Status ManagedVm::Resume(bool force) {
  std::string reason;
  bool lease;
  {
    std::lock_guard<std::mutex> l(fence_mu_);
    reason = fence_reason_;
    lease = fence_lease_;
  }
  if (!reason.empty()) {
    if (lease && store_) {
      // The swap store's ownership token is the lease: whoever owns the
      // namespace runs the VM. Asked now, not remembered.
      auto mine = store_->OwnedHere();
      if (!mine.ok())
        return Status(Code::kUnavailable, "vm " + spec_.name + " is fenced (" + reason +
                                              ") and the swap store cannot confirm this host still owns it: " +
                                              mine.status().message() + "; not resumed");
      if (!*mine)
        return PermissionDenied("vm " + spec_.name + " is fenced: " + reason +
                                ", and the swap store says another host owns its pages now; resuming it here "
                                "would run two copies (stop it here with `vm stop`)");
      SetFenced("", false);  // the lease never moved: the copy here is the VM
    } else if (!force) {
      return PermissionDenied("vm " + spec_.name + " is fenced: " + reason +
                              "; it may be running at the destination. Check there, then `vm resume --force` "
                              "here only if it is not");
    } else {
      spdlog::warn("vm {}: resumed with --force despite the fence ({})", spec_.name, reason);
      SetFenced("", false);
    }
  }
  Status s = Qmp("cont").status();
  if (s.ok()) Confirm();  // it has run here now
  return s;
}

Status ManagedVm::EndOutgoing(bool migrated, bool keep_store) {
  if (outgoing_lock_.owns_lock()) outgoing_lock_.unlock();
  if (!migrated) {
    if (tracker_ && (state_ == kRunning || state_ == kIncoming)) tracker_->Start();
    return Status::Ok();
  }
  // The VM now runs elsewhere: stop QEMU and free guest RAM here; keep_store
  // leaves the swap-store namespace alone (its new owner uses it).
  keep_store_ = keep_store;
  Status s = Stop();
  state_ = kMigrated;
  return s;
}

void ManagedVm::SetRemotePager(vm::RemotePager* pager) {
  if (faults_) faults_->set_remote_pager(pager);
}

uint64_t ManagedVm::WssBytes(double window_s) const {
  return tracker_ ? tracker_->WssPages(window_s) * uffd::kPageSize : 0;
}

uint64_t ManagedVm::EstimatedWssBytes() const {
  if (!tracker_) return 0;
  int64_t sampled = tracker_->SampledWssPages();
  return sampled >= 0 ? static_cast<uint64_t>(sampled) * kPageSize : WssBytes(host_.wss_windows_s.front());
}

uint64_t ManagedVm::Refaults() const { return faults_ ? faults_->stats().refault.load() : 0; }

double ManagedVm::UptimeS() const {
  return started_ns_ ? static_cast<double>(vm::NowNs() - started_ns_) / 1e9 : 0.0;
}

uint64_t ManagedVm::ResidentBytes() const {
  return memory_ ? memory_->count(vm::PageState::kResident) * kPageSize : 0;
}

json ManagedVm::WorkingSet() const {
  if (!tracker_) return json::object();
  json w = json::object();
  for (double win : host_.wss_windows_s) w[std::to_string(static_cast<int>(win)) + "s"] = WssBytes(win);
  auto t = tracker_->stats();
  int64_t sampled = tracker_->SampledWssPages();
  return {{"windows_bytes", w},
          {"wss_bytes", EstimatedWssBytes()},
          {"sampled_bytes", sampled >= 0 ? json(static_cast<uint64_t>(sampled) * kPageSize) : json(nullptr)},
          {"sample_interval_s", static_cast<double>(tracker_->sampler_interval_ms()) / 1000.0},
          {"tracker",
           {{"ticks", t.ticks},
            {"period_ms", t.period_ms},
            {"slices", t.slices},
            {"last_scan_ms", t.last_scan_ms},
            {"last_drop_ms", t.last_drop_ms},
            {"last_tick_ms", t.last_tick_ms},
            {"minor_faults", t.minor_faults},
            {"fault_cost_us", t.fault_cost_us},
            {"est_cpu_pct", t.est_cpu_pct},
            {"errors", t.errors}}}};
}

void ManagedVm::SetMigrationStatus(json status) {
  std::lock_guard<std::mutex> l(migration_mu_);
  migration_status_ = std::move(status);
}

Result<offload::EvictReport> ManagedVm::Offload(uint64_t target_bytes) {
  if (!evictor_) return Unsupported("no swap store: start agiled with --memd HOST:PORT to offload");
  if (state_ != kRunning) return Unavailable("vm " + spec_.name + " is " + state());
  {
    // Pages still at a migration source: a restart re-adopts the VM from
    // the set recorded at switchover, which an offload (a zero page punched
    // to a hole) would make wrong. The pages arrive first.
    std::lock_guard<std::mutex> l(record_mu_);
    if (record_.incoming)
      return Unavailable("vm " + spec_.name + " is still receiving pages from its migration source");
  }
  std::unique_lock<std::mutex> l(offload_mu_, std::try_to_lock);
  if (!l.owns_lock()) return Unavailable("an offload of vm " + spec_.name + " is already running");
  if (!store_->claimed()) AGILE_RETURN_IF_ERROR(store_->Claim());
  // The token must be in the state record before the first page it guards
  // leaves the RAM file, or a restart could not read those pages back: an
  // offload after a failed write writes it first, or offloads nothing.
  bool token_recorded;
  {
    std::lock_guard<std::mutex> rl(record_mu_);
    token_recorded = record_.store_owned;
  }
  {
    std::lock_guard<std::mutex> el(record_error_mu_);
    token_recorded = token_recorded && record_error_.empty();
  }
  if (!token_recorded)
    AGILE_RETURN_IF_ERROR(PersistRecord().Annotate("nothing offloaded: the swap-store token is not in the state record"));
  uint64_t target_pages = target_bytes / uffd::kPageSize;
  spdlog::info("vm {}: offloading to {} resident ({} policy)", spec_.name, FormatSize(target_bytes), policy_->name());
  auto r = evictor_->EvictTo(target_pages, policy_);
  if (!r.ok()) {
    spdlog::error("vm {}: offload failed: {}", spec_.name, r.status().ToString());
    return r.status();
  }
  std::lock_guard<std::mutex> sl(offload_stats_mu_);
  offload_total_.pages_offloaded += r->pages_offloaded;
  offload_total_.pages_zero += r->pages_zero;
  offload_total_.bytes_sent += r->bytes_sent;
  offload_total_.batches += r->batches;
  offload_total_.seconds += r->seconds;
  spdlog::info("vm {}: offloaded {} pages ({} zero pages only marked) in {:.3f} s, {} resident", spec_.name,
               r->pages_offloaded, r->pages_zero, r->seconds, FormatSize(r->resident_after * uffd::kPageSize));
  return r;
}

Result<std::string> ManagedVm::Console(int lines) const {
  if (lines <= 0 || lines > 10000) return InvalidArgument("lines must be between 1 and 10000");
  std::string out;
  for (const auto& l : TailLines(serial_path_, static_cast<size_t>(lines))) out += l + "\n";
  return out;
}

}  // namespace agile::host
