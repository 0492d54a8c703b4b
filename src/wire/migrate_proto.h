// The protocol between two agileds migrating a VM, over one TCP connection to
// the destination's --listen port (agiled tells it from its JSON control API
// by the first byte: '{' is JSON, this protocol starts with its magic).
// Frames as in wire/frame.h with magic "AGMG", version kMigVersion (6).
// Integers little-endian. docs/migration.md tells the protocol's story.
//
//  source                                   destination
//    HELLO {mode, pages, spec, store, disk sizes?}
//                                     ──▶  launches QEMU -incoming, takes its uffd; with disk
//                                            sizes (--copy-storage): local empty copies of the
//                                            disks, exported over NBD by the incoming QEMU
//                                     ◀──  HELLO_ACK {status, qemu_port, nbd_port}
//    (--copy-storage: the source's QEMU mirrors each disk to nbd_port, blockdev-mirror,
//     until ready; it keeps mirroring guest writes until the VM is paused, then the
//     mirror completes - block-job-cancel of a ready job - before device state moves)
//    PAGES {round, n, (idx, 4 KiB)*} ──▶   pwrite into the RAM file (no ack: pipelined)
//    ROUND {round, pages}             ──▶   (progress only; in qemu-* modes, whose pages go over
//                                              QEMU's own stream, every 5 s as a keepalive)
//    ... source pauses the VM, sends the last dirty pages ...
//    LOCATIONS {(first, count, where)*} ─▶  every page: zero | sent | in store | at source
//    (QEMU moves device state itself, x-ignore-shared, to qemu_port)
//    SWITCHOVER {store token?}        ──▶   adopt token, check every page placed, QMP cont
//                                     ◀──  SWITCHOVER_ACK {status, message, store token?}
//                                              status 0: running here. 1: failed, and the VM
//                                              may have run here (the source stays fenced).
//                                              2: not resumed, the VM never ran here (its QEMU
//                                              died or refused `cont` before it was sent or
//                                              executed); the token, if SWITCHOVER carried one,
//                                              is the namespace handed back to the source
//                                              (TRANSFER to the source host), which may resume
//  post-copy, and agile's post-copy tail (LOCATIONS said "at source"), after switchover:
//                                     ◀──  PAGE_REQUEST {n, idx*}   (faults, prepaging)
//    PAGES {...}                      ──▶   pwrite into the RAM file, kick the fault server
//                                              (the waiting vCPU's fault is retried and maps it)
//    DONE {}                          ──▶   every page is across
//                                     ◀──  DONE_ACK {}
//  either side, any time before switchover:  ABORT {reason}  (then close)
//
//  post-copy recovery: the link broke after switchover while pages were still at the
//  source; both sides kept their state. The source dials again (a new connection, TLS
//  and --allow as the first one) and sends, as its first frame:
//    RESUME {vm, src_host, migration id}──▶ the paused migration of that VM, same id and
//                                              source host? it takes this connection over
//                                     ◀──  RESUME_ACK {status, message, pages_remote}
//                                     ◀──  LOCATIONS {(first, count, at source)*} ... until
//                                              their counts add up to pages_remote: every page
//                                              still missing here (requested or not)
//    (the source marks exactly those unsent, then PAGES, PAGE_REQUEST, DONE as before)
//
// Payloads:
//   HELLO:          | mode u8 | page_count u64 | spec u32+json | src_host u32+str |
//                   | store_addr u32+str | store_vm_id u32+str |
//                   | n u32 | n × disk_bytes u64 |   (n <= 8; 0: shared storage)
//                   | migration_id 16 bytes |   (random, names this migration for RESUME)
//   HELLO_ACK:      | status u32 | message u32+str | qemu_port u16 | dst_host u32+str |
//                   | nbd_port u16 |                (0 without --copy-storage)
//   PAGES:          | round u32 | n u32 | n × ( index u64 | data 4096 ) |   (n <= 64)
//   ROUND:          | round u32 | pages u64 |
//   LOCATIONS:      | n u32 | n × ( first u64 | count u64 | where u8 ) |
//   SWITCHOVER:     | has_token u8 | epoch u64 | secret u64 | secret_hi u64 | resume u8 |
//                   (the store token, a 128-bit secret; resume=0: the VM was paused)
//   SWITCHOVER_ACK: | status u32 | message u32+str | has_token u8 | epoch u64 | secret u64 |
//                   | secret_hi u64 |   (has_token=1 only with status 2)
//   PAGE_REQUEST:   | n u32 | n × index u64 |
//   DONE, DONE_ACK: (empty)
//   ABORT:          | reason u32+str |
//   RESUME:         | vm u32+str | src_host u32+str | migration_id 16 bytes |
//   RESUME_ACK:     | status u32 | message u32+str | pages_remote u64 |
//                   (status 0: resumed, 1: refused, 2: completed here already,
//                   3: never ran here, its copy dropped before SWITCHOVER; an
//                   addition within version 6: an older source takes it for 1)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/page.h"
#include "base/status.h"

namespace agile::wire {

constexpr uint32_t kMigMagic = 0x474D4741;  // "AGMG"
// 2: XXH3 frame checksum (was XXH32). 3: 128-bit store token. 4: --copy-storage
// (HELLO's disk sizes, HELLO_ACK's nbd_port). 5: post-copy recovery (HELLO's
// migration id, RESUME, RESUME_ACK). 6: SWITCHOVER_ACK status 2 (not resumed,
// the VM never ran at the destination) and the store token handed back in it.
constexpr uint16_t kMigVersion = 6;
constexpr uint32_t kMigMaxCopyDisks = 8;
constexpr uint32_t kMigMaxPagesPerFrame = 64;
constexpr uint32_t kMigMaxPayload = 1 << 20;
constexpr size_t kMigPageSize = kPageSize;  // base/page.h

enum class MigMsg : uint16_t {
  kHello = 1,
  kHelloAck = 2,
  kPages = 3,
  kRound = 4,
  kLocations = 5,
  kSwitchover = 6,
  kSwitchoverAck = 7,
  kPageRequest = 8,
  kDone = 9,
  kDoneAck = 10,
  kAbort = 11,
  kResume = 12,
  kResumeAck = 13,
};
const char* MigMsgName(uint16_t type);

// kQemu*: QEMU moves all of RAM itself (stock VMs, the baselines):
// qemu-precopy and qemu-postcopy with stock capabilities; qemu-precopy-tuned
// with what an operator turns on when pre-copy does not converge
// (auto-converge, multifd); qemu-hybrid is post-copy after the first pre-copy
// pass (libvirt's --postcopy-after-precopy).
enum class MigMode : uint8_t {
  kAgile = 1,
  kPrecopy = 2,
  kPostcopy = 3,
  kQemuPrecopy = 4,
  kQemuPostcopy = 5,
  kQemuPrecopyTuned = 6,
  kQemuHybrid = 7,
};
const char* MigModeName(MigMode m);
// The modes in which QEMU moves guest RAM (stock VMs).
bool IsQemuMode(MigMode m);
Result<MigMode> ParseMigMode(const std::string& s);

// Where a page is at switchover (LOCATIONS).
enum class PageWhere : uint8_t { kZero = 0, kSent = 1, kInStore = 2, kAtSource = 3 };

struct MigHello {
  MigMode mode = MigMode::kAgile;
  uint64_t page_count = 0;
  std::string spec_json, src_host, store_addr, store_vm_id;
  // --copy-storage: the virtual size of each of the spec's disks, which the
  // destination creates empty and the source mirrors into. Empty: the
  // destination opens the spec's own paths (shared storage).
  std::vector<uint64_t> copy_disk_bytes;
  // Random, chosen by the source: a RESUME must name it to take the
  // migration over after a lost link (post-copy recovery).
  uint64_t migration_id_lo = 0, migration_id_hi = 0;
};
struct MigHelloAck {
  uint32_t status = 0;
  std::string message;
  uint16_t qemu_port = 0;
  std::string dst_host;  // the destination agiled's id: new owner of swap-store pages
  uint16_t nbd_port = 0;  // --copy-storage: the incoming QEMU's NBD server (exports "disk0", ...)
};
struct MigPage {
  uint64_t index;
  const uint8_t* data;  // kMigPageSize bytes, not owned
};
struct MigRun {
  uint64_t first = 0, count = 0;
  PageWhere where = PageWhere::kZero;
};
struct MigSwitchover {
  bool has_token = false;
  uint64_t epoch = 0, secret = 0, secret_hi = 0;
  bool resume = true;  // false: the VM was paused at the source and stays paused
};
// The first frame of a connection that takes over a paused post-copy.
struct MigResume {
  std::string vm, src_host;
  uint64_t migration_id_lo = 0, migration_id_hi = 0;
};
struct MigResumeAck {
  // 0: resumed; LOCATIONS frames with pages_remote pages follow. 1: refused
  // (message says why). 2: that migration completed here (its DONE_ACK was
  // lost with the link): nothing is missing. 3: the destination dropped its
  // copy before SWITCHOVER was taken: the VM never ran there, and the source,
  // which sent SWITCHOVER but heard nothing back, may take it back.
  uint32_t status = 0;
  std::string message;
  uint64_t pages_remote = 0;
};
// SWITCHOVER_ACK's status: what the destination knows of the VM.
enum class SwitchoverResult : uint32_t {
  kRunning = 0,      // resumed here (or left paused, as it was at the source)
  kFailed = 1,       // not running here, but it may have run: the source stays fenced
  kNotResumed = 2,   // it never ran here: the source may take it back (lease permitting)
};
struct MigSwitchoverAck {
  SwitchoverResult status = SwitchoverResult::kRunning;
  std::string message;
  // kNotResumed in agile mode: the swap-store namespace, transferred back to
  // the source host; the source adopts this token before it resumes the VM.
  bool has_token = false;
  uint64_t epoch = 0, secret = 0, secret_hi = 0;
};

// Encoders append a whole frame (header + payload) to *out.
void AppendHello(std::vector<uint8_t>* out, const MigHello& m);
void AppendHelloAck(std::vector<uint8_t>* out, const MigHelloAck& m);
void AppendPages(std::vector<uint8_t>* out, uint32_t round, const MigPage* pages, size_t n);
void AppendRound(std::vector<uint8_t>* out, uint32_t round, uint64_t pages);
void AppendLocations(std::vector<uint8_t>* out, const std::vector<MigRun>& runs, size_t first, size_t n);
void AppendSwitchover(std::vector<uint8_t>* out, const MigSwitchover& m);
void AppendSwitchoverAck(std::vector<uint8_t>* out, const MigSwitchoverAck& m);
void AppendPageRequest(std::vector<uint8_t>* out, const uint64_t* idx, size_t n);
void AppendEmpty(std::vector<uint8_t>* out, MigMsg type);
void AppendAbort(std::vector<uint8_t>* out, const std::string& reason);
void AppendResume(std::vector<uint8_t>* out, const MigResume& m);
void AppendResumeAck(std::vector<uint8_t>* out, const MigResumeAck& m);

// Decoders take a checksummed payload; they reject short, trailing and
// out-of-limit content.
Result<MigHello> DecodeHello(const std::vector<uint8_t>& p);
Result<MigHelloAck> DecodeHelloAck(const std::vector<uint8_t>& p);
// PAGES: pointers into p stay valid while p lives.
Status DecodePages(const std::vector<uint8_t>& p, uint32_t* round, std::vector<MigPage>* pages);
Status DecodeRound(const std::vector<uint8_t>& p, uint32_t* round, uint64_t* pages);
Status DecodeLocations(const std::vector<uint8_t>& p, std::vector<MigRun>* runs);
Result<MigSwitchover> DecodeSwitchover(const std::vector<uint8_t>& p);
Result<MigSwitchoverAck> DecodeSwitchoverAck(const std::vector<uint8_t>& p);
Status DecodePageRequest(const std::vector<uint8_t>& p, std::vector<uint64_t>* idx);
Result<std::string> DecodeAbort(const std::vector<uint8_t>& p);
Result<MigResume> DecodeResume(const std::vector<uint8_t>& p);
Result<MigResumeAck> DecodeResumeAck(const std::vector<uint8_t>& p);

}  // namespace agile::wire
