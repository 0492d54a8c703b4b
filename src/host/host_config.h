// Where one agiled keeps its things and which binaries it runs. Several
// agileds coexist on one machine by using different ids and state dirs.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/timeouts.h"
#include "tls/tls.h"

namespace agile::host {

struct HostConfig {
  std::string id;          // unique per agiled on this machine
  std::string state_dir;   // sockets, logs, per-VM folders
  std::string shm_root;    // /dev/shm/agile/<id>: guest RAM files
  std::string qemu_binary = "/usr/bin/qemu-system-x86_64";
  std::string shim_path;   // libagile-shim.so
  std::string kernel;      // guest kernel
  std::string initrd;      // guest initramfs
  bool qemu_sandbox = true;        // QEMU's -sandbox (seccomp); docs/security.md
  std::string qemu_run_as;         // QEMU's -runas USER; empty = stays root
  int handoff_timeout_ms = 30000;  // QEMU start until the shim hands over the uffd
  std::string memd_addr;   // swap store: --store in its canonical form (offload::ParseStoreUrl); empty = offload disabled
  uint32_t prefetch_pages = 4;  // refault window: the faulting page and the next N-1
  double tracking_cpu_pct = 2.0;        // working-set tracking budget per VM, % of one core
  std::vector<double> wss_windows_s = {10, 60};  // windows reported by `wss`; the first is wss_bytes
  // --tls-dir: mutual TLS on every TCP link (control, migration, memd); id
  // is then the certificate's name. Null: plain TCP (loopback or --insecure).
  std::shared_ptr<const tls::Credentials> tls;
  std::vector<std::string> allow;  // --allow: peer names let in over TCP (empty: any the CA signed)
  bool insecure = false;           // --insecure: plain TCP off loopback
  Timeouts timeouts;               // every network wait's bound (docs/timeouts.md)
};

}  // namespace agile::host
