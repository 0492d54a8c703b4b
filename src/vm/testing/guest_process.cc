#include "vm/testing/guest_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>

#include "base/io.h"
#include "base/socket.h"

namespace agile::vm::testing {

Result<std::unique_ptr<GuestProcess>> GuestProcess::Start(const std::string& shim_path,
                                                          const std::string& guest_path, uint64_t pages,
                                                          PageSource* source, uint32_t prefetch_pages,
                                                          PageState initial, int busy_poll_us) {
  std::unique_ptr<GuestProcess> g(new GuestProcess());
  char tmpl[] = "/dev/shm/agile-test-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return ErrnoStatus("mkdtemp");
  g->dir_ = tmpl;
  g->ram_path_ = g->dir_ + "/ram";
  g->ram_fd_.Reset(::open(g->ram_path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!g->ram_fd_) return ErrnoStatus("create " + g->ram_path_);
  if (::ftruncate(g->ram_fd_.get(), static_cast<off_t>(pages * 4096)) != 0) return ErrnoStatus("ftruncate");
  std::string sock = g->dir_ + "/shim.sock";
  g->sock_ = sock;
  g->pages_ = pages;
  AGILE_ASSIGN_OR_RETURN(UniqueFd listen, UnixListen(sock));

  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) return ErrnoStatus("pipe");
  UniqueFd in_r(in[0]), out_w(out[1]);
  g->to_child_.Reset(in[1]);
  g->from_child_.Reset(out[0]);
  SpawnOptions opts;
  opts.argv = {guest_path, g->ram_path_, std::to_string(pages)};
  opts.env = {"LD_PRELOAD=" + shim_path, "AGILE_RAM_PATH=" + g->ram_path_, "AGILE_SHIM_SOCK=" + sock};
  opts.stdin_fd = in_r.get();
  opts.stdout_fd = out_w.get();
  opts.stderr_fd = 2;
  opts.new_session = false;
  AGILE_ASSIGN_OR_RETURN(g->proc_, Spawn(opts));

  UniqueFd uffd_fd;
  AGILE_ASSIGN_OR_RETURN(ShimLink link,
                         ShimLink::Accept(listen.get(), g->ram_path_, pages * 4096, 10000, g->proc_.pidfd(), &uffd_fd));
  UniqueFd own_fd(::open(g->ram_path_.c_str(), O_RDWR | O_CLOEXEC));
  if (!own_fd) return ErrnoStatus("open " + g->ram_path_);
  g->memory_ = std::make_shared<GuestMemory>(std::move(own_fd), uffd::Uffd(std::move(uffd_fd)), std::move(link), initial);
  g->faults_ = std::make_unique<FaultServer>(g->memory_.get(), source, prefetch_pages);
  if (busy_poll_us >= 0) g->faults_->set_busy_poll(std::chrono::microseconds(busy_poll_us));
  AGILE_RETURN_IF_ERROR(g->faults_->Start());
  AGILE_ASSIGN_OR_RETURN(std::string ready, g->Command(""));
  if (ready != "ready") return Internal("shm_guest said '" + ready + "'");
  return g;
}

GuestProcess::~GuestProcess() {
  if (proc_.running()) {
    (void)proc_.Signal(SIGKILL);
    proc_.Wait(5000);
  }
  if (faults_) faults_->Stop();
  if (!dir_.empty()) std::filesystem::remove_all(dir_);
}

Status GuestProcess::Send(const std::string& cmd) {
  std::string line = cmd + "\n";
  return WriteFull(to_child_.get(), line.data(), line.size());
}

bool GuestProcess::AnswerWithin(int timeout_ms) {
  if (rbuf_.find('\n') != std::string::npos) return true;
  pollfd p{from_child_.get(), POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) > 0;
}

void GuestProcess::DropAgiled() {
  if (faults_) faults_->Stop();
  faults_.reset();
  memory_.reset();  // closes the shim connection and our copy of the uffd
}

Status GuestProcess::Readopt(PageSource* source, const std::string& map_path, int timeout_ms) {
  AGILE_ASSIGN_OR_RETURN(UniqueFd listen, UnixListen(sock_));
  UniqueFd uffd_fd;
  AGILE_ASSIGN_OR_RETURN(ShimLink link,
                         ShimLink::Accept(listen.get(), ram_path_, pages_ * 4096, timeout_ms, proc_.pidfd(), &uffd_fd));
  UniqueFd own_fd(::open(ram_path_.c_str(), O_RDWR | O_CLOEXEC));
  if (!own_fd) return ErrnoStatus("open " + ram_path_);
  memory_ = std::make_shared<GuestMemory>(std::move(own_fd), uffd::Uffd(std::move(uffd_fd)), std::move(link),
                                          PageState::kZero);
  if (!map_path.empty()) {
    AGILE_ASSIGN_OR_RETURN(LocationMap map, LocationMap::Open(map_path, pages_));
    memory_->AttachLocationMap(std::move(map));
  }
  AGILE_RETURN_IF_ERROR(memory_->Recover());
  faults_ = std::make_unique<FaultServer>(memory_.get(), source, 4);
  AGILE_RETURN_IF_ERROR(faults_->Start());
  return memory_->WakeAll();
}

Result<std::string> GuestProcess::Command(const std::string& cmd) {
  if (!cmd.empty()) {
    std::string line = cmd + "\n";
    AGILE_RETURN_IF_ERROR(WriteFull(to_child_.get(), line.data(), line.size()));
  }
  for (;;) {
    auto nl = rbuf_.find('\n');
    if (nl != std::string::npos) {
      std::string l = rbuf_.substr(0, nl);
      rbuf_.erase(0, nl + 1);
      return l;
    }
    char buf[256];
    ssize_t r = ::read(from_child_.get(), buf, sizeof(buf));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return Unavailable("shm_guest closed its output (" + proc_.ExitDescription() + ")");
    rbuf_.append(buf, static_cast<size_t>(r));
  }
}

}  // namespace agile::vm::testing
