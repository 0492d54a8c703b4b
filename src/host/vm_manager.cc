#include "host/vm_manager.h"

#include <spdlog/spdlog.h>

#include <csignal>
#include <filesystem>
#include <thread>

#include "base/process.h"
#include "offload/store_url.h"

namespace agile::host {

Result<std::shared_ptr<ManagedVm>> VmManager::Start(const qemu::VmSpec& spec) { return Launch(spec, false, ""); }

Result<std::shared_ptr<migrate::MigratingVm>> VmManager::StartIncoming(const qemu::VmSpec& spec,
                                                                       const std::string& store_vm_id) {
  AGILE_ASSIGN_OR_RETURN(std::shared_ptr<ManagedVm> vm, Launch(spec, true, store_vm_id));
  return std::shared_ptr<migrate::MigratingVm>(std::move(vm));
}

Result<std::string> VmManager::CreateDiskCopy(const std::string& name, size_t index, const std::string& format,
                                              uint64_t bytes) {
  namespace fs = std::filesystem;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (vms_.count(name) || starting_.count(name))
      return AlreadyExists("a VM named '" + name + "' already exists on this host");
  }
  if (format != "qcow2" && format != "raw") return InvalidArgument("disk format '" + format + "'");
  std::string dir = host_.state_dir + "/disks/" + name;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Internal("create " + dir + ": " + ec.message());
  std::string path = dir + "/disk" + std::to_string(index) + "." + format;
  // qemu-img beside the QEMU we run (Debian: both in /usr/bin).
  std::string qemu_img = (fs::path(host_.qemu_binary).parent_path() / "qemu-img").string();
  if (!fs::exists(qemu_img)) qemu_img = "/usr/bin/qemu-img";
  SpawnOptions o;
  o.argv = {qemu_img, "create", "-q", "-f", format, path, std::to_string(bytes)};
  AGILE_ASSIGN_OR_RETURN(Process p, Spawn(o));
  if (!p.Wait(60000)) {
    (void)p.Signal(SIGKILL);
    p.Wait(5000);
    return Unavailable("qemu-img create " + path + " did not finish");
  }
  if (p.raw_status() != 0) return Internal("qemu-img create " + path + " " + p.ExitDescription());
  spdlog::info("vm {}: created {} ({} bytes) for its disk {}", name, path, bytes, index);
  return path;
}

void VmManager::RemoveDiskCopies(const std::string& name) {
  std::error_code ec;
  std::filesystem::remove_all(host_.state_dir + "/disks/" + name, ec);
  if (ec) spdlog::warn("vm {}: removing its disk copies: {}", name, ec.message());
}

Result<memd::OwnerToken> VmManager::HandBackNamespace(const std::string& store_vm_id, const memd::OwnerToken& token,
                                                      const std::string& host) {
  if (host_.memd_addr.empty()) return Unsupported("this agiled has no --memd");
  AGILE_ASSIGN_OR_RETURN(auto store, offload::MakeSwapStore(host_.memd_addr, host_.id, store_vm_id, host_.tls));
  store->SetTimeouts({host_.timeouts.memd_connect_ms, host_.timeouts.memd_request_ms});
  store->Adopt(token);
  auto back = store->Transfer(host);
  if (!back.ok()) return back.status().Annotate("handing swap-store namespace " + store_vm_id + " back to " + host);
  spdlog::info("swap-store namespace {} handed back to {} (epoch {}): its VM never ran here", store_vm_id, host,
               back->epoch);
  return back;
}

void VmManager::Forget(const std::string& name) {
  std::lock_guard<std::mutex> l(mu_);
  vms_.erase(name);
}

Result<std::shared_ptr<ManagedVm>> VmManager::Launch(const qemu::VmSpec& spec, bool incoming,
                                                     const std::string& store_vm_id) {
  AGILE_RETURN_IF_ERROR(spec.Validate());
  {
    std::lock_guard<std::mutex> l(mu_);
    if (vms_.count(spec.name) || starting_.count(spec.name))
      return AlreadyExists("a VM named '" + spec.name + "' already exists on this host");
    starting_.insert(spec.name);
  }
  auto vm = ManagedVm::Launch(spec, host_, incoming, store_vm_id);
  std::lock_guard<std::mutex> l(mu_);
  starting_.erase(spec.name);
  if (!vm.ok()) {
    spdlog::error("vm {}: start failed: {}", spec.name, vm.status().ToString());
    return vm.status();
  }
  std::shared_ptr<ManagedVm> shared(std::move(vm).value());
  vms_[spec.name] = shared;
  return shared;
}

Result<std::shared_ptr<ManagedVm>> VmManager::Get(const std::string& name) {
  PruneEndedLibvirtVms();
  std::lock_guard<std::mutex> l(mu_);
  auto it = vms_.find(name);
  if (it == vms_.end()) return NotFound("no VM named '" + name + "' on this host");
  return it->second;
}

std::vector<std::shared_ptr<ManagedVm>> VmManager::List() {
  PruneEndedLibvirtVms();
  std::lock_guard<std::mutex> l(mu_);
  std::vector<std::shared_ptr<ManagedVm>> out;
  for (auto& [n, vm] : vms_) out.push_back(vm);
  return out;
}

Status VmManager::Stop(const std::string& name) {
  AGILE_ASSIGN_OR_RETURN(auto vm, Get(name));
  AGILE_RETURN_IF_ERROR(vm->Stop());
  std::lock_guard<std::mutex> l(mu_);
  vms_.erase(name);
  return Status::Ok();
}

size_t VmManager::AdoptAll() {
  std::error_code ec;
  std::vector<std::thread> workers;
  std::mutex found_mu;
  std::vector<std::unique_ptr<ManagedVm>> found;
  for (auto& e : std::filesystem::directory_iterator(host_.state_dir + "/vms", ec)) {
    if (!e.is_directory()) continue;
    std::string name = e.path().filename().string();
    auto rec = ReadVmRecord(e.path().string());
    if (!rec.ok() && rec.status().code() == Code::kNotFound) continue;  // a stopped VM's logs
    if (!rec.ok()) {
      found.push_back(ManagedVm::Lost(name, host_, "its state record is unreadable: " + rec.status().ToString()));
      continue;
    }
    // In parallel: each waits up to a second or so for its shim to reconnect.
    workers.emplace_back([&, r = std::move(rec).value()] {
      auto vm = ManagedVm::Adopt(r, host_);
      std::lock_guard<std::mutex> l(found_mu);
      found.push_back(std::move(vm));
    });
  }
  for (auto& w : workers) w.join();
  size_t running = 0;
  std::lock_guard<std::mutex> l(mu_);
  for (auto& vm : found) {
    if (vm->state() != "lost") ++running;
    std::string name = vm->spec().name;  // before the move below (the right side is evaluated first)
    vms_[name] = std::shared_ptr<ManagedVm>(std::move(vm));
  }
  return running;
}

void VmManager::StopAll() {
  WaitForAttaches();
  for (auto& vm : List()) (void)Stop(vm->spec().name);
}

VmManager::~VmManager() { WaitForAttaches(); }

void VmManager::WaitForAttaches() {
  std::unique_lock<std::mutex> l(mu_);
  attach_done_.wait(l, [this] { return attaching_ == 0; });
}

Result<ManagedVm::AttachPaths> VmManager::Attach(const qemu::VmSpec& spec, const ManagedVm::AttachInfo& info) {
  AGILE_RETURN_IF_ERROR(spec.Validate());
  PruneEndedLibvirtVms();  // `virsh start` right after a destroy reuses the name
  {
    std::lock_guard<std::mutex> l(mu_);
    if (vms_.count(spec.name) || starting_.count(spec.name))
      return AlreadyExists("a VM named '" + spec.name + "' already exists on this host");
    starting_.insert(spec.name);
  }
  auto prepared = ManagedVm::PrepareAttach(spec, host_, info);
  if (!prepared.ok()) {
    std::lock_guard<std::mutex> l(mu_);
    starting_.erase(spec.name);
    spdlog::error("vm {}: libvirt's start refused: {}", spec.name, prepared.status().ToString());
    return prepared.status();
  }
  std::shared_ptr<ManagedVm> vm(std::move(prepared).value());
  ManagedVm::AttachPaths paths = vm->attach_paths();
  {
    std::lock_guard<std::mutex> l(mu_);
    ++attaching_;
  }
  // The wrapper execs QEMU only after our answer, so the handover is waited
  // for here, not in the request.
  std::thread([this, vm]() mutable {
    Status st = vm->FinishAttach();
    const std::string name = vm->spec().name;
    if (!st.ok()) {
      spdlog::error("vm {}: libvirt's QEMU was not taken over: {}", name, st.ToString());
      vm.reset();  // stops and cleans up, outside mu_
    }
    std::lock_guard<std::mutex> l(mu_);
    starting_.erase(name);
    if (vm) vms_[name] = std::move(vm);
    --attaching_;
    attach_done_.notify_all();  // under mu_: a waiting destructor cannot run before we are done with *this
  }).detach();
  return paths;
}

void VmManager::PruneEndedLibvirtVms() {
  std::vector<std::shared_ptr<ManagedVm>> ended;  // destroyed outside mu_
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto it = vms_.begin(); it != vms_.end();) {
      if (it->second->spec().libvirt && it->second->state() == "exited") {
        ended.push_back(std::move(it->second));
        it = vms_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& vm : ended) (void)vm->Stop();
}

}  // namespace agile::host
