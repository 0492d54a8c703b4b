// libagile-shim.so: LD_PRELOADed into a stock QEMU so that agiled owns the
// guest's memory. It interposes mmap/mmap64; when QEMU maps the guest RAM file
// (AGILE_RAM_PATH) it registers a userfaultfd over that mapping, hands the fd to
// agiled over AGILE_SHIM_SOCK (SCM_RIGHTS), and then serves the few requests
// that must run inside QEMU's address space (dropping page-table entries).
//
// Safety rule: a VM never runs unmanaged. Any failure to register or to reach
// agiled, or losing agiled later, terminates QEMU with a message on stderr.
// The shim keeps its own copy of the uffd open for QEMU's lifetime, so a
// crashed agiled leaves faulting vCPUs waiting, never silently zero-filled.
#include <poll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>

#include "base/io.h"
#include "base/socket.h"
#include "uffd/register.h"
#include "wire/frame.h"
#include "wire/frame_stream.h"
#include "wire/shim_proto.h"

namespace {

using namespace agile;

constexpr int kAckTimeoutMs = 30000;

struct ShimState {
  std::mutex mu;
  bool adopted = false;
  std::string ram_path;
  std::string sock_path;
  int sock = -1;
  int uffd = -1;  // kept open for QEMU's lifetime (see the safety rule above)
  uint64_t base = 0, length = 0, file_offset = 0;
};

ShimState& State() {
  static ShimState* s = new ShimState();  // never destroyed: QEMU threads may use it at exit
  return *s;
}

[[noreturn]] void Die(const char* fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "agile-shim: %s; stopping QEMU so the VM never runs unmanaged\n", msg);
  std::fflush(stderr);
  ::_exit(78);
}

void* RawMmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  // The raw syscall, not dlsym(RTLD_NEXT): dlsym can itself allocate and map.
  long r = ::syscall(SYS_mmap, addr, len, prot, flags, fd, off);
  return reinterpret_cast<void*>(r);
}

std::string FdPath(int fd) {
  char link[64], target[4096];
  std::snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  ssize_t n = ::readlink(link, target, sizeof(target) - 1);
  if (n <= 0) return {};
  target[n] = '\0';
  return target;
}

void ServeControl() {
  ShimState& s = State();
  std::vector<uint8_t> payload;
  for (;;) {
    auto h = wire::ReadFrame(s.sock, wire::kShimMagic, wire::kShimVersion, wire::kShimMaxPayload, &payload);
    if (!h.ok()) Die("lost connection to agiled (%s)", h.status().ToString().c_str());
    if (h->type != static_cast<uint16_t>(wire::ShimMsg::kDropPtes))
      Die("unexpected message type %u from agiled", h->type);
    auto req = wire::DecodeShimDropPtes(payload);
    if (!req.ok()) Die("bad DROP_PTES from agiled: %s", req.status().ToString().c_str());
    wire::ShimDropPtesDone done;
    done.seq = req->seq;
    auto t0 = std::chrono::steady_clock::now();
    if (req->offset < s.file_offset || req->length > s.length ||
        req->offset - s.file_offset > s.length - req->length) {
      done.err = EINVAL;
    } else {
      // MADV_DONTNEED on a shared file mapping drops the PTEs only; the data
      // stays in the RAM file, and the next access raises a MINOR fault.
      void* addr = reinterpret_cast<void*>(s.base + (req->offset - s.file_offset));
      if (::madvise(addr, req->length, MADV_DONTNEED) != 0) done.err = static_cast<uint32_t>(errno);
    }
    done.elapsed_ns = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
    auto frame = wire::ShimFrame(wire::ShimMsg::kDropPtesDone, done);
    Status st = WriteFull(s.sock, frame.data(), frame.size());
    if (!st.ok()) Die("lost connection to agiled (%s)", st.ToString().c_str());
  }
}

void Handshake(ShimState& s, const uffd::Registration& reg) {
  auto conn = UnixConnect(s.sock_path);
  if (!conn.ok()) Die("cannot reach agiled at %s (%s)", s.sock_path.c_str(), conn.status().ToString().c_str());
  s.sock = conn->Release();

  wire::ShimHello hello;
  hello.pid = static_cast<uint32_t>(::getpid());
  hello.base = s.base;
  hello.length = s.length;
  hello.file_offset = s.file_offset;
  hello.features = reg.features;
  hello.ioctls = reg.ioctls;
  hello.ram_path = s.ram_path;
  auto frame = wire::ShimFrame(wire::ShimMsg::kHello, hello);
  Status st = SendWithFds(s.sock, frame.data(), frame.size(), {reg.fd});
  if (!st.ok()) Die("sending the userfaultfd to agiled failed (%s)", st.ToString().c_str());

  pollfd p{s.sock, POLLIN, 0};
  int pr;
  do {
    pr = ::poll(&p, 1, kAckTimeoutMs);
  } while (pr < 0 && errno == EINTR);
  if (pr == 0) Die("agiled did not answer within %d ms", kAckTimeoutMs);
  std::vector<uint8_t> payload;
  auto h = wire::ReadFrame(s.sock, wire::kShimMagic, wire::kShimVersion, wire::kShimMaxPayload, &payload);
  if (!h.ok()) Die("no answer from agiled (%s)", h.status().ToString().c_str());
  if (h->type != static_cast<uint16_t>(wire::ShimMsg::kHelloAck)) Die("unexpected reply type %u", h->type);
  auto ack = wire::DecodeShimHelloAck(payload);
  if (!ack.ok()) Die("bad HELLO_ACK (%s)", ack.status().ToString().c_str());
  if (ack->status != 0) Die("agiled refused this VM: %s", ack->message.c_str());
}

void MaybeAdopt(void* p, size_t len, int fd, off_t off) {
  ShimState& s = State();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.adopted || s.ram_path.empty()) return;
  if (FdPath(fd) != s.ram_path) return;

  s.base = reinterpret_cast<uint64_t>(p);
  s.length = len;
  s.file_offset = static_cast<uint64_t>(off);
  uffd::Registration reg;
  std::string err;
  if (!uffd::CreateAndRegister(p, len, &reg, &err)) Die("%s", err.c_str());
  s.uffd = reg.fd;
  Handshake(s, reg);
  s.adopted = true;
  std::thread(ServeControl).detach();
}

__attribute__((constructor)) void ShimInit() {
  ShimState& s = State();
  const char* ram = std::getenv("AGILE_RAM_PATH");
  const char* sock = std::getenv("AGILE_SHIM_SOCK");
  if (ram == nullptr || *ram == '\0' || sock == nullptr || *sock == '\0')
    Die("loaded without AGILE_RAM_PATH and AGILE_SHIM_SOCK (start VMs through agiled)");
  s.ram_path = ram;
  s.sock_path = sock;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) void* mmap(void* addr, size_t len, int prot, int flags, int fd,
                                                  off_t off) {
  void* p = RawMmap(addr, len, prot, flags, fd, off);
  if (p != MAP_FAILED && fd >= 0 && (flags & MAP_SHARED)) MaybeAdopt(p, len, fd, off);
  return p;
}

__attribute__((visibility("default"))) void* mmap64(void* addr, size_t len, int prot, int flags, int fd,
                                                    off_t off) {
  return mmap(addr, len, prot, flags, fd, off);
}

}  // extern "C"
