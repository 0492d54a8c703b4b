#include "vm/shim_link.h"

#include <poll.h>
#include <sys/socket.h>

#include <fstream>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "base/io.h"
#include "base/socket.h"
#include "uffd/compat.h"
#include "uffd/register.h"
#include "wire/frame.h"
#include "wire/frame_stream.h"

namespace agile::vm {
namespace {

Status SendAck(int conn, uint32_t status, const std::string& msg) {
  wire::ShimHelloAck ack{status, msg};
  auto frame = wire::ShimFrame(wire::ShimMsg::kHelloAck, ack);
  return WriteFull(conn, frame.data(), frame.size());
}

Status Refuse(int conn, const std::string& why) {
  (void)SendAck(conn, 1, why);
  return InvalidArgument("refused VM process: " + why);
}

// The pid a pidfd refers to (its fdinfo's "Pid:" line); -1 if unknown.
pid_t PidOfPidfd(int pidfd) {
  if (pidfd < 0) return -1;
  std::ifstream f("/proc/self/fdinfo/" + std::to_string(pidfd));
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("Pid:", 0) == 0) return static_cast<pid_t>(std::stol(line.substr(4)));
  return -1;
}

}  // namespace

Result<ShimLink> ShimLink::Accept(int listen_fd, const std::string& ram_path, uint64_t expected_length,
                                  int timeout_ms, int pidfd, UniqueFd* uffd) {
  pollfd p[2] = {{listen_fd, POLLIN, 0}, {pidfd, POLLIN, 0}};
  // Only the process we launched (or adopt) may hand over this VM's memory:
  // a shim of an orphaned QEMU (its agiled and state dir gone) reconnects to
  // the same socket path and would otherwise be taken for a new VM of the same
  // name. The kernel's SO_PEERCRED says who connected; a stranger is refused
  // (its shim then ends that QEMU) and we keep waiting for ours.
  const pid_t expected_pid = PidOfPidfd(pidfd);
  int waited = 0;
  UniqueFd conn;
  while (!conn) {
    int pr = ::poll(p, pidfd >= 0 ? 2 : 1, 100);
    if (pr < 0 && errno != EINTR) return ErrnoStatus("poll shim socket");
    if (pr > 0 && pidfd >= 0 && (p[1].revents & POLLIN))
      return Unavailable("VM process exited before its shim connected");
    if (pr > 0 && (p[0].revents & POLLIN)) {
      AGILE_ASSIGN_OR_RETURN(UniqueFd c, agile::Accept(listen_fd));
      ucred cred{};
      socklen_t len = sizeof(cred);
      if (expected_pid > 0 && (::getsockopt(c.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
                               cred.pid != expected_pid)) {
        Status why = Refuse(c.get(), "process " + std::to_string(cred.pid) + " is not the VM process (pid " +
                                         std::to_string(expected_pid) + ") this memory belongs to");
        spdlog::warn("shim socket {}: {}", ram_path, why.ToString());
        continue;
      }
      conn = std::move(c);
      break;
    }
    waited += 100;
    if (waited >= timeout_ms)
      return Unavailable("the VM process did not hand over its memory within " + std::to_string(timeout_ms) +
                         " ms (is libagile-shim.so preloaded and the RAM file mapped?)");
  }

  uint8_t hb[wire::kFrameHeaderSize];
  std::vector<UniqueFd> fds;
  AGILE_RETURN_IF_ERROR(RecvWithFds(conn.get(), hb, sizeof(hb), &fds));
  AGILE_ASSIGN_OR_RETURN(auto h, wire::DecodeFrameHeader(hb, wire::kShimMagic, wire::kShimVersion,
                                                         wire::kShimMaxPayload));
  std::vector<uint8_t> payload(h.length);
  if (h.length > 0) AGILE_RETURN_IF_ERROR(RecvWithFds(conn.get(), payload.data(), h.length, &fds));
  AGILE_RETURN_IF_ERROR(wire::VerifyFrame(hb, h, payload.data()));
  if (h.type != static_cast<uint16_t>(wire::ShimMsg::kHello))
    return Refuse(conn.get(), "expected HELLO, got message type " + std::to_string(h.type));
  AGILE_ASSIGN_OR_RETURN(wire::ShimHello hello, wire::DecodeShimHello(payload));
  if (fds.size() != 1) return Refuse(conn.get(), "HELLO must carry exactly one fd, got " + std::to_string(fds.size()));
  if (hello.ram_path != ram_path) return Refuse(conn.get(), "RAM path " + hello.ram_path + " is not " + ram_path);
  if (hello.file_offset != 0 || hello.length != expected_length)
    return Refuse(conn.get(), "mapping covers " + std::to_string(hello.length) + " bytes at offset " +
                                  std::to_string(hello.file_offset) + ", expected " +
                                  std::to_string(expected_length) + " at 0");
  if ((hello.features & uffd::kRequiredFeatures) != uffd::kRequiredFeatures)
    return Refuse(conn.get(), "userfaultfd lacks " + uffd::FeatureNames(uffd::kRequiredFeatures & ~hello.features));
  AGILE_RETURN_IF_ERROR(SendAck(conn.get(), 0, "ok"));

  *uffd = std::move(fds[0]);
  GuestMapping map{hello.base, hello.length, hello.file_offset, hello.pid, hello.features};
  return ShimLink(std::move(conn), map);
}

Status ShimLink::DropPtes(uint64_t offset, uint64_t len, uint64_t* elapsed_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  wire::ShimDropPtes req{++seq_, offset, len};
  auto frame = wire::ShimFrame(wire::ShimMsg::kDropPtes, req);
  AGILE_RETURN_IF_ERROR(WriteFull(conn_.get(), frame.data(), frame.size()).Annotate("shim link"));
  std::vector<uint8_t> payload;
  AGILE_ASSIGN_OR_RETURN(auto h, wire::ReadFrame(conn_.get(), wire::kShimMagic, wire::kShimVersion,
                                                 wire::kShimMaxPayload, &payload));
  if (h.type != static_cast<uint16_t>(wire::ShimMsg::kDropPtesDone))
    return Corruption("shim answered DROP_PTES with message type " + std::to_string(h.type));
  AGILE_ASSIGN_OR_RETURN(auto done, wire::DecodeShimDropPtesDone(payload));
  if (done.seq != req.seq) return Corruption("shim answered request " + std::to_string(done.seq) + ", not " + std::to_string(req.seq));
  if (done.err != 0) return ErrnoStatus("madvise(MADV_DONTNEED) in the VM process", static_cast<int>(done.err));
  if (elapsed_ns) *elapsed_ns = done.elapsed_ns;
  return Status::Ok();
}

}  // namespace agile::vm
