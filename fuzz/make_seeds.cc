// Writes the seed corpora under fuzz/corpus/<target>/ from the project's own
// encoders, so every seed is a well-formed message of today's formats.
// Run by hand after a format changes (make fuzz-seeds); the output is
// committed. Regression seeds for bugs the fuzzers found are added by hand
// beside these (named regress-*).
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "wire/frame.h"
#include "wire/journal_format.h"
#include "wire/memd_proto.h"
#include "wire/migrate_proto.h"
#include "wire/shim_proto.h"

using namespace agile;
using Bytes = std::vector<uint8_t>;

namespace {

std::string g_root;

void Write(const std::string& target, const std::string& name, const Bytes& b) {
  std::string dir = g_root + "/" + target;
  ::mkdir(dir.c_str(), 0755);
  std::ofstream(dir + "/seed-" + name, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), b.size());
}
void WriteText(const std::string& target, const std::string& name, const std::string& s) {
  Write(target, name, Bytes(s.begin(), s.end()));
}

// A whole frame -> the fuzz input shape: type (u16) then payload.
Bytes Typed(const Bytes& frame) {
  Bytes out(frame.begin() + 6, frame.begin() + 8);
  out.insert(out.end(), frame.begin() + wire::kFrameHeaderSize, frame.end());
  return out;
}
// Some frames go in whole too, for the header decoder.
void WriteFrame(const std::string& target, const std::string& name, const Bytes& frame) {
  Write(target, name, Typed(frame));
  Write(target, name + "-frame", frame);
}

void MemdSeeds() {
  const std::string t = "memd_proto";
  Bytes page(4096, 0xab);
  memd::OwnerToken tok{3, 0x1234};
  memd::PageRef refs[2] = {{1, page.data()}, {9, page.data()}};
  uint64_t idx[3] = {1, 2, 700};
  auto one = [&](const std::string& n, auto&& fn) {
    Bytes f;
    fn(&f);
    WriteFrame(t, n, f);
  };
  one("hello", [&](Bytes* f) { memd::AppendHello(f, 1, "host-a"); });
  one("claim", [&](Bytes* f) { memd::AppendClaim(f, 2, "vm1", "host-a"); });
  one("put", [&](Bytes* f) { memd::AppendPut(f, 3, "vm1", tok, refs); });
  one("get", [&](Bytes* f) { memd::AppendGet(f, 4, "vm1", tok, idx); });
  one("delete", [&](Bytes* f) { memd::AppendDelete(f, 5, "vm1", tok, idx); });
  one("transfer", [&](Bytes* f) { memd::AppendTransfer(f, 6, "vm1", tok, "host-b"); });
  one("release", [&](Bytes* f) { memd::AppendRelease(f, 7, "vm1", tok); });
  one("stat", [&](Bytes* f) { memd::AppendStat(f, 8); });
  one("reclaim", [&](Bytes* f) { memd::AppendReclaim(f, 9, "vm1", tok); });
  one("r-error", [&](Bytes* f) {
    memd::AppendErrorResponse(f, static_cast<uint16_t>(memd::MsgType::kGet) | memd::kResponseFlag, 4,
                              NotFound("no such vm"));
  });
  one("r-hello", [&](Bytes* f) { memd::AppendHelloReply(f, 1, {"memd-1", 256, 1 << 20}); });
  one("r-token", [&](Bytes* f) { memd::AppendTokenReply(f, memd::MsgType::kClaim, 2, tok); });
  one("r-count", [&](Bytes* f) { memd::AppendCountReply(f, memd::MsgType::kPut, 3, 2); });
  one("r-stat", [&](Bytes* f) {
    memd::StatReply r;
    r.pages = 5;
    r.vm_count = 1;
    r.vms = {{"vm1", "host-a", 3, 5}};
    r.counters = {{"puts", 7}};
    memd::AppendStatReply(f, 8, r);
  });
  one("r-reclaim", [&](Bytes* f) { memd::AppendReclaimReply(f, 9, {5, false, {3, 17}}); });
  one("r-nospace", [&](Bytes* f) {
    memd::AppendErrorResponse(f, static_cast<uint16_t>(memd::MsgType::kPut) | memd::kResponseFlag, 3,
                              NoSpace("disk full"));
  });
  one("r-get", [&](Bytes* f) {
    memd::GetReplyWriter w(f, 4, 2);
    w.present()[0] = 1;
    w.present()[1] = 0;
    std::copy(page.begin(), page.end(), w.pages());
    w.Finish(1);
  });
}

void MigrateSeeds() {
  const std::string t = "migrate_proto";
  auto one = [&](const std::string& n, auto&& fn) {
    Bytes f;
    fn(&f);
    WriteFrame(t, n, f);
  };
  Bytes page(wire::kMigPageSize, 0x5a);
  one("hello", [&](Bytes* f) {
    wire::MigHello h;
    h.page_count = 32768;
    h.spec_json = R"({"name":"vm1","memory_bytes":134217728,"vcpus":1,"workload":"memverify",)"
                  R"("workload_args":{"size_mib":"64"},"qemu_args":[],"stock":false})";
    h.src_host = "host-a";
    h.store_addr = "127.0.0.1:7000";
    h.store_vm_id = "vm1";
    wire::AppendHello(f, h);
  });
  one("hello-copy-storage", [&](Bytes* f) {
    wire::MigHello h;
    h.page_count = 262144;
    h.spec_json = R"({"name":"d1","memory_bytes":1073741824,"workload":"memverify","boot":"disk",)"
                  R"("disks":[{"path":"/srv/d1.qcow2","format":"qcow2","cache":"none","bus":"virtio-blk"}]})";
    h.src_host = "host-a";
    h.copy_disk_bytes = {2147483648ull};
    wire::AppendHello(f, h);
  });
  one("hello-ack", [&](Bytes* f) { wire::AppendHelloAck(f, {0, "ok", 4444, "host-b", 0}); });
  one("hello-ack-nbd", [&](Bytes* f) { wire::AppendHelloAck(f, {0, "ok", 4444, "host-b", 10809}); });
  one("pages", [&](Bytes* f) {
    wire::MigPage p[2] = {{1, page.data()}, {2, page.data()}};
    wire::AppendPages(f, 1, p, 2);
  });
  one("round", [&](Bytes* f) { wire::AppendRound(f, 2, 100); });
  one("locations", [&](Bytes* f) {
    std::vector<wire::MigRun> runs = {{0, 10, wire::PageWhere::kZero}, {10, 5, wire::PageWhere::kInStore},
                                      {15, 1, wire::PageWhere::kAtSource}};
    wire::AppendLocations(f, runs, 0, runs.size());
  });
  one("switchover", [&](Bytes* f) { wire::AppendSwitchover(f, {true, 3, 99, true}); });
  one("switchover-ack", [&](Bytes* f) { wire::AppendSwitchoverAck(f, {wire::SwitchoverResult::kRunning, "running"}); });
  one("switchover-ack-not-resumed", [&](Bytes* f) {
    wire::AppendSwitchoverAck(f, {wire::SwitchoverResult::kNotResumed, "the VM never ran here", true, 3, 0xFEED, 0xBEEF});
  });
  one("page-request", [&](Bytes* f) {
    uint64_t idx[3] = {5, 6, 7};
    wire::AppendPageRequest(f, idx, 3);
  });
  one("done", [&](Bytes* f) { wire::AppendEmpty(f, wire::MigMsg::kDone); });
  one("abort", [&](Bytes* f) { wire::AppendAbort(f, "cancelled"); });
}

void ShimSeeds() {
  const std::string t = "shim_proto";
  auto one = [&](const std::string& n, wire::ShimMsg type, const Bytes& payload) {
    Bytes b = {static_cast<uint8_t>(type), 0};
    b.insert(b.end(), payload.begin(), payload.end());
    Write(t, n, b);
  };
  wire::ShimHello h{1234, 0x7f0000000000, 128 << 20, 0, 0x3, 0x1c, "/dev/shm/agile/vm1/ram"};
  one("hello", wire::ShimMsg::kHello, wire::Encode(h));
  one("hello-ack", wire::ShimMsg::kHelloAck, wire::Encode(wire::ShimHelloAck{0, "adopted"}));
  one("drop-ptes", wire::ShimMsg::kDropPtes, wire::Encode(wire::ShimDropPtes{1, 4096, 1 << 20}));
  one("drop-ptes-done", wire::ShimMsg::kDropPtesDone, wire::Encode(wire::ShimDropPtesDone{1, 0, 5000}));
  Write(t, "hello-frame", wire::ShimFrame(wire::ShimMsg::kHello, h));
}

void JournalSeeds() {
  const std::string t = "journal_replay";
  Bytes j = {0};  // shape byte 0: raw journal bytes
  memd::AppendJournalHeader(&j, "vm1");
  memd::AppendJournalRecord(&j, memd::JournalOwner{"host-a", {1, 42}});
  memd::AppendJournalRecord(&j, memd::JournalSet{5, 0, 0xdeadbeef});
  memd::AppendJournalRecord(&j, memd::JournalSet{6, 1, 0xfeed});
  memd::AppendJournalRecord(&j, memd::JournalDel{5});
  Write(t, "owner-set-del", j);
  Bytes torn = j;
  torn.resize(torn.size() - 3);
  Write(t, "torn-tail", torn);
  Bytes damaged = j;  // a byte of the first SET record's slot: skipped, page 5 lost
  memd::AppendJournalRecord(&damaged, memd::JournalLost{9});
  damaged[damaged.size() - 17 - 29 - 45 - 45 + 8 + 12] ^= 0x10;
  Write(t, "damaged-set-lost", damaged);
  // Shape byte 1: the harness adds lengths and checksums. Record bodies are
  // what AppendJournalRecord writes after its 8-byte head.
  auto body = [](const memd::JournalRecord& r) {
    Bytes b;
    memd::AppendJournalRecord(&b, r);
    return Bytes(b.begin() + memd::kJournalRecordHead, b.end());
  };
  Bytes s = {1, 3, 'v', 'm', '1'};
  for (const auto& r : {memd::JournalRecord{memd::JournalOwner{"host-a", {1, 42}}},
                        memd::JournalRecord{memd::JournalSet{5, 0, 7}}, memd::JournalRecord{memd::JournalDel{5}}}) {
    Bytes b = body(r);
    s.push_back(static_cast<uint8_t>(b.size()));
    s.insert(s.end(), b.begin(), b.end());
  }
  Write(t, "structured", s);
}

void TextSeeds() {
  WriteText("control_request", "start",
            R"({"op":"vm.start","args":{"name":"vm1","memory_bytes":536870912,"vcpus":2,"workload":"memtouch",)"
            R"("workload_args":{"size_mib":"256","hot_mib":"64"},"qemu_args":["-cpu","max"],"stock":false}})");
  WriteText("control_request", "stat", R"({"op":"vm.stat","args":{"name":"vm1"}})");
  WriteText("control_request", "migrate",
            R"({"op":"vm.migrate","args":{"name":"vm1","to":"10.0.0.2:7777","mode":"agile","max_rounds":5}})");
  WriteText("control_request", "list", R"({"op":"vm.list"})");
  WriteText("qmp_reply", "greeting",
            R"({"QMP": {"version": {"qemu": {"micro": 2, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}})");
  WriteText("qmp_reply", "return", R"({"return": {"status": "running", "singlestep": false, "running": true}, "id": 3})");
  WriteText("qmp_reply", "error", R"({"id": 4, "error": {"class": "GenericError", "desc": "No migration"}})");
  WriteText("qmp_reply", "event",
            R"({"timestamp": {"seconds": 1, "microseconds": 2}, "event": "MIGRATION", "data": {"status": "active"}})");
  WriteText("console_status", "memverify",
            "\x01SeaBIOS\nLinux version 6.1\nmemverify: ok pages=16384 gen=3 errors=0\n"
            "BAD page=12 want=1 got=2\nmemverify: FAIL pages=16384 gen=4 errors=1\n");
  WriteText("console_status", "memtouch", std::string("\x00", 1) + "memtouch: ops/s=51234 hot_mib=64 phase=1 write_pct=30\n");
  WriteText("console_status", "redis",
            "\x01partial line\r\nredis: ok keys=1000 used_memory=1048576 clients=2 cmds=5000 ops_per_sec=400\r\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s fuzz/corpus\n", argv[0]);
    return 2;
  }
  g_root = argv[1];
  ::mkdir(g_root.c_str(), 0755);
  MemdSeeds();
  MigrateSeeds();
  ShimSeeds();
  JournalSeeds();
  TextSeeds();
  return 0;
}
