// libagile-shim.so: LD_PRELOADed into a stock QEMU so that agiled owns the
// guest's memory. It interposes mmap/mmap64; when QEMU maps the guest RAM file
// (AGILE_RAM_PATH) it registers a userfaultfd over that mapping, hands the fd to
// agiled over AGILE_SHIM_SOCK (SCM_RIGHTS), and then serves the few requests
// that must run inside QEMU's address space (dropping page-table entries).
//
// Safety rule: a VM never runs unmanaged. Any failure to register or to reach
// agiled at start terminates QEMU with a message on stderr. Losing agiled
// later (kill -9, a restart, an upgrade) does not: the shim keeps its own copy
// of the uffd open for QEMU's lifetime, so faulting vCPUs simply wait (never
// zero-filled), and it reconnects with backoff and hands the same uffd to the
// next agiled of this state dir, which re-adopts the VM. Only an agiled that
// refuses the VM on reconnection ends QEMU, or the socket's folder staying
// gone (kOrphanDefaultMs: the state dir was deleted, no agiled can return).
#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
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
// Reconnection after agiled went away: first retry soon (a restart takes a
// second or two), then back off to a steady poll that costs nothing.
constexpr int kReconnectFirstMs = 50;
constexpr int kReconnectMaxMs = 1000;
// An agiled comes back to the same state dir; once the folder holding the
// shim socket is gone (the state dir deleted after its agiled was killed)
// none ever will, and QEMU would wait for ever with its faulting vCPUs
// frozen. Gone this long (AGILE_SHIM_ORPHAN_MS overrides it, for tests),
// QEMU is ended. Long enough for an operator's `mv` of a state dir and back.
constexpr int kOrphanDefaultMs = 30000;

int OrphanMs() {
  const char* v = std::getenv("AGILE_SHIM_ORPHAN_MS");
  if (v == nullptr || *v == '\0') return kOrphanDefaultMs;
  long ms = std::strtol(v, nullptr, 10);
  return ms > 0 && ms < (1L << 30) ? static_cast<int>(ms) : kOrphanDefaultMs;
}

bool FolderGone(const std::string& path) {
  std::string dir = path.substr(0, path.find_last_of('/') == std::string::npos ? 0 : path.find_last_of('/'));
  if (dir.empty()) dir = ".";
  struct stat st;
  return ::stat(dir.c_str(), &st) != 0 && errno == ENOENT;
}

struct ShimState {
  std::mutex mu;
  bool adopted = false;
  std::string ram_path;
  std::string sock_path;
  int sock = -1;
  int uffd = -1;  // kept open for QEMU's lifetime (see the safety rule above)
  uint64_t base = 0, length = 0, file_offset = 0;
  uint64_t features = 0, ioctls = 0;
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

// Serves DROP_PTES until the connection to agiled breaks; returns why.
std::string ServeConnection() {
  ShimState& s = State();
  std::vector<uint8_t> payload;
  for (;;) {
    auto h = wire::ReadFrame(s.sock, wire::kShimMagic, wire::kShimVersion, wire::kShimMaxPayload, &payload);
    if (!h.ok()) return h.status().ToString();
    if (h->type != static_cast<uint16_t>(wire::ShimMsg::kDropPtes))
      return "unexpected message type " + std::to_string(h->type) + " from agiled";
    auto req = wire::DecodeShimDropPtes(payload);
    if (!req.ok()) return "bad DROP_PTES from agiled: " + req.status().ToString();
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
    if (!st.ok()) return st.ToString();
  }
}

// One HELLO/HELLO_ACK exchange handing our uffd to agiled. Returns "" when
// agiled took the VM; otherwise why not, and *refused tells a refusal (agiled
// answered no) from not reaching it at all.
std::string TryHandshake(ShimState& s, bool* refused) {
  *refused = false;
  auto conn = UnixConnect(s.sock_path);
  if (!conn.ok()) return "cannot reach agiled at " + s.sock_path + " (" + conn.status().ToString() + ")";
  UniqueFd sock = std::move(conn).value();

  wire::ShimHello hello;
  hello.pid = static_cast<uint32_t>(::getpid());
  hello.base = s.base;
  hello.length = s.length;
  hello.file_offset = s.file_offset;
  hello.features = s.features;
  hello.ioctls = s.ioctls;
  hello.ram_path = s.ram_path;
  auto frame = wire::ShimFrame(wire::ShimMsg::kHello, hello);
  Status st = SendWithFds(sock.get(), frame.data(), frame.size(), {s.uffd});
  if (!st.ok()) return "sending the userfaultfd to agiled failed (" + st.ToString() + ")";

  pollfd p{sock.get(), POLLIN, 0};
  int pr;
  do {
    pr = ::poll(&p, 1, kAckTimeoutMs);
  } while (pr < 0 && errno == EINTR);
  if (pr == 0) return "agiled did not answer within " + std::to_string(kAckTimeoutMs) + " ms";
  std::vector<uint8_t> payload;
  auto h = wire::ReadFrame(sock.get(), wire::kShimMagic, wire::kShimVersion, wire::kShimMaxPayload, &payload);
  if (!h.ok()) return "no answer from agiled (" + h.status().ToString() + ")";
  *refused = true;
  if (h->type != static_cast<uint16_t>(wire::ShimMsg::kHelloAck)) return "unexpected reply type " + std::to_string(h->type);
  auto ack = wire::DecodeShimHelloAck(payload);
  if (!ack.ok()) return "bad HELLO_ACK (" + ack.status().ToString() + ")";
  if (ack->status != 0) return "agiled refused this VM: " + ack->message;
  *refused = false;
  s.sock = sock.Release();
  return "";
}

// The life of the control thread once the VM is adopted: serve agiled; when it
// goes away, keep QEMU running (faults wait on the uffd we hold) and hand the
// uffd over again to whichever agiled listens on the socket next.
void ControlLoop() {
  ShimState& s = State();
  for (;;) {
    std::string why = ServeConnection();
    ::close(s.sock);
    s.sock = -1;
    std::fprintf(stderr, "agile-shim: lost agiled (%s); the VM keeps running, faults wait; reconnecting\n",
                 why.c_str());
    std::fflush(stderr);
    int delay_ms = kReconnectFirstMs;
    uint64_t attempts = 0;
    const int orphan_ms = OrphanMs();
    std::chrono::steady_clock::time_point gone_since{};
    for (;;) {
      ::usleep(static_cast<useconds_t>(delay_ms) * 1000);
      bool refused = false;
      std::string err = TryHandshake(s, &refused);
      ++attempts;
      if (err.empty()) break;
      if (refused) Die("%s", err.c_str());
      if (!FolderGone(s.sock_path)) {
        gone_since = {};
      } else if (gone_since == std::chrono::steady_clock::time_point{}) {
        gone_since = std::chrono::steady_clock::now();
      } else if (std::chrono::steady_clock::now() - gone_since >= std::chrono::milliseconds(orphan_ms)) {
        Die("the folder of %s has been gone for %d ms: no agiled can adopt this VM again", s.sock_path.c_str(),
            orphan_ms);
      }
      delay_ms = std::min(delay_ms * 2, kReconnectMaxMs);
    }
    std::fprintf(stderr, "agile-shim: handed the userfaultfd to agiled again after %llu attempt(s)\n",
                 static_cast<unsigned long long>(attempts));
    std::fflush(stderr);
  }
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
  s.features = reg.features;
  s.ioctls = reg.ioctls;
  bool refused = false;
  err = TryHandshake(s, &refused);
  if (!err.empty()) Die("%s", err.c_str());
  s.adopted = true;
  std::thread(ControlLoop).detach();
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
