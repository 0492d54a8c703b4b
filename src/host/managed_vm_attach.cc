// VMs that libvirt starts (docs/libvirt.md): libvirt runs the agile-qemu
// wrapper as its emulator; the wrapper asks agiled (vm.attach) before it execs
// the real QEMU, and agiled takes the VM over the way it takes over a QEMU it
// spawned itself. Only who starts the process differs: here it is libvirt's
// child, watched through a pidfd, and libvirt decides when it ends.
#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <filesystem>

#include "base/socket.h"
#include "host/managed_vm.h"

namespace agile::host {
namespace fs = std::filesystem;

Result<std::unique_ptr<ManagedVm>> ManagedVm::PrepareAttach(const qemu::VmSpec& spec, const HostConfig& host,
                                                            const AttachInfo& info) {
  AGILE_RETURN_IF_ERROR(spec.Validate());
  if (!spec.libvirt) return InvalidArgument("vm.attach is for VMs libvirt starts");
  std::unique_ptr<ManagedVm> vm(new ManagedVm(spec, host));
  Status st = vm->PrepareAttachFiles(info);
  if (!st.ok()) {
    vm->Cleanup();
    return st;
  }
  return vm;
}

Status ManagedVm::PrepareAttachFiles(const AttachInfo& info) {
  if (!fs::exists(host_.shim_path)) return NotFound("missing " + host_.shim_path + " (run `make` to build the shim)");
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return Internal("create " + dir_ + ": " + ec.message());
  fs::create_directories(ram_dir_, ec);
  if (ec) return Internal("create " + ram_dir_ + ": " + ec.message());
  for (const auto& f : {serial_path_, qemu_log_path_, qmp_path_}) fs::remove(f, ec);
  // As for a VM agiled starts: created empty and sized, so every first touch
  // reaches the fault server. QEMU maps this file instead of the one libvirt
  // named (the wrapper rewrites the backend's mem-path).
  ram_fd_.Reset(::open(ram_path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!ram_fd_) return ErrnoStatus("create RAM file " + ram_path_ + " (is another VM of that name running?)");
  if (::ftruncate(ram_fd_.get(), static_cast<off_t>(spec_.memory_bytes)) != 0) return ErrnoStatus("size RAM file");
  AGILE_ASSIGN_OR_RETURN(attach_listen_, UnixListen(dir_ + "/shim.sock", 1));
  // `vm console` and `vm stat` read STATE_DIR/vms/NAME/serial.log, and a
  // failed start quotes qemu.log: here those are libvirt's files.
  if (!info.serial_log.empty()) fs::create_symlink(info.serial_log, serial_path_, ec);
  if (!info.qemu_log.empty()) fs::create_symlink(info.qemu_log, qemu_log_path_, ec);
  // Last: from here on a failure would signal the wrapper's process.
  AGILE_ASSIGN_OR_RETURN(qemu_, Process::Adopt(info.pid));
  started_ns_ = vm::NowNs();
  {
    std::lock_guard<std::mutex> l(record_mu_);
    record_.spec = spec_;
    record_.pid = qemu_.pid();
    auto ticks = ProcessStartTicks(qemu_.pid());  // exec keeps the start time: it is QEMU's
    record_.pid_start_ticks = ticks.ok() ? *ticks : 0;
    record_.incoming = false;
  }
  (void)PersistRecord();  // logged and shown degraded by PersistRecord
  spdlog::info("vm {}: libvirt is starting it (pid {}, {} MiB, {} vCPUs); waiting for its QEMU", spec_.name,
               info.pid, spec_.memory_bytes >> 20, spec_.vcpus);
  return Status::Ok();
}

ManagedVm::AttachPaths ManagedVm::attach_paths() const {
  return {ram_path_, dir_ + "/shim.sock", qmp_path_, host_.shim_path};
}

Status ManagedVm::FinishAttach() {
  Status st = TakeOverMemory(attach_listen_.get(), false, "");
  attach_listen_.Reset();
  if (!st.ok()) return st;  // TakeOverMemory killed QEMU
  auto qmp = qemu::QmpClient::Connect(qmp_path_, 15000);
  if (!qmp.ok()) {
    (void)qemu_.Signal(SIGKILL);
    qemu_.Wait(5000);
    return qmp.status().Annotate("vm " + spec_.name + " (libvirt)").Annotate(QemuLogTail());
  }
  qmp_ = std::make_unique<qemu::QmpClient>(std::move(qmp).value());
  monitor_wake_.Reset(::eventfd(0, EFD_CLOEXEC));
  BecomeRunning();
  (void)Qmp("query-status");  // libvirt starts QEMU with -S and resumes it over its own monitor
  monitor_ = std::thread([this] { Monitor(); });
  return Status::Ok();
}

void ManagedVm::RefreshPausedFromQemu() {
  std::unique_lock<std::mutex> l(qmp_mu_, std::try_to_lock);
  if (!l.owns_lock() || !qmp_) return;
  auto r = qmp_->Execute("query-status", nullptr, 1000);
  if (r.ok()) guest_paused_ = !r->value("running", true);
}

}  // namespace agile::host
