// The agiled <-> agile-memd protocol: limits, message types and the explicit
// encoding of every request and response. docs/memd-protocol.md has the byte
// diagrams; this header and that document change together.
//
// Every message is one frame of wire/frame.h (magic kMagic, version
// kVersion). A request payload starts with a u64 request id; the response to
// it has type (request type | kResponseFlag) and starts with the same id, a
// u16 status code and a status message, followed by a body only when the
// status is ok. Structural errors (anything a decoder here rejects) are fatal
// to the connection; semantic errors (bad token, store full) are responses.
//
// Pure functions, no I/O, no shared state: thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "base/page.h"
#include "base/status.h"
#include "wire/codec.h"
#include "wire/frame.h"

namespace agile::memd {

constexpr uint32_t kMagic = 0x444d4741;  // the bytes "AGMD" on the wire
// 2: XXH3 frame checksum (was XXH32). 3: 128-bit token secrets; a host's
// identity is its TLS certificate's name when the server requires TLS.
// 4: RECLAIM (an owner re-attaches after a restart and learns lost pages),
// status no-space (the data directory's disk is full).
constexpr uint16_t kVersion = 4;
using agile::kPageSize;  // base/page.h; memd::kPageSize for callers outside agile::memd
constexpr uint32_t kMaxBatchPages = 256;     // pages or indexes per PUT/GET/DELETE
constexpr size_t kMaxIdLen = 128;            // vm ids and host ids
constexpr size_t kMaxMessageLen = 1024;      // status messages
constexpr uint32_t kMaxStatVms = 2048;       // VMs listed in one STAT reply
constexpr uint32_t kMaxStatCounters = 256;
// The largest frame either side sends is a full PUT request or GET reply
// (~1.03 MiB); the rest is headroom for ids and messages.
constexpr uint32_t kMaxPayload = (1u << 20) + (64u << 10);

enum class MsgType : uint16_t {
  kHello = 1,
  kClaim = 2,
  kPut = 3,
  kGet = 4,
  kDelete = 5,
  kTransfer = 6,
  kRelease = 7,
  kStat = 8,
  kReclaim = 9,
};
constexpr uint16_t kResponseFlag = 0x8000;
// The server's last frame before it closes a connection that sent a malformed
// frame. Same layout as an error response, request id 0.
constexpr uint16_t kProtocolErrorType = 0xffff;

constexpr uint16_t ResponseType(MsgType t) { return static_cast<uint16_t>(t) | kResponseFlag; }
const char* MsgTypeName(MsgType t);
bool IsRequestType(uint16_t type);

// Proof of ownership of one VM namespace. The epoch grows by one at every
// TRANSFER; the secret is 128 random bits (two words, low first). All must
// match; the server compares with SameToken, in constant time.
struct OwnerToken {
  uint64_t epoch = 0;
  uint64_t secret = 0;     // low 64 bits of the secret
  uint64_t secret_hi = 0;  // high 64 bits
  bool operator==(const OwnerToken&) const = default;  // tests and logs; ownership checks use SameToken
};
// Whether a and b are the same token, in time independent of where they differ.
bool SameToken(const OwnerToken& a, const OwnerToken& b);

// One page to store: its guest page index and kPageSize bytes (not owned).
struct PageRef {
  uint64_t index = 0;
  const uint8_t* data = nullptr;
};

// vm ids name files in --data-dir: 1..128 of [A-Za-z0-9._-], not starting
// with '.'. Host ids: 1..128 printable ASCII characters, no spaces.
Status ValidateVmId(std::string_view vm);
Status ValidateHostId(std::string_view host);

// ---- Requests --------------------------------------------------------------

struct HelloRequest {
  std::string host_id;
};
struct ClaimRequest {
  std::string vm;
  std::string host_id;
};
struct PutRequest {
  std::string vm;
  OwnerToken token;
  std::vector<PageRef> pages;  // data points into the decoded payload
};
struct GetRequest {
  std::string vm;
  OwnerToken token;
  std::vector<uint64_t> indexes;
};
struct DeleteRequest {
  std::string vm;
  OwnerToken token;
  std::vector<uint64_t> indexes;
};
struct TransferRequest {
  std::string vm;
  OwnerToken token;
  std::string new_host;
};
struct ReleaseRequest {
  std::string vm;
  OwnerToken token;
};
struct StatRequest {};
struct ReclaimRequest {
  std::string vm;
  OwnerToken token;
};

using RequestBody = std::variant<HelloRequest, ClaimRequest, PutRequest, GetRequest, DeleteRequest,
                                 TransferRequest, ReleaseRequest, StatRequest, ReclaimRequest>;
struct Request {
  uint64_t id = 0;
  RequestBody body;
};

// Each appends one whole request frame to *out.
void AppendHello(std::vector<uint8_t>* out, uint64_t id, std::string_view host_id);
void AppendClaim(std::vector<uint8_t>* out, uint64_t id, std::string_view vm, std::string_view host_id);
void AppendPut(std::vector<uint8_t>* out, uint64_t id, std::string_view vm, OwnerToken token,
               std::span<const PageRef> pages);
void AppendGet(std::vector<uint8_t>* out, uint64_t id, std::string_view vm, OwnerToken token,
               std::span<const uint64_t> indexes);
void AppendDelete(std::vector<uint8_t>* out, uint64_t id, std::string_view vm, OwnerToken token,
                  std::span<const uint64_t> indexes);
void AppendTransfer(std::vector<uint8_t>* out, uint64_t id, std::string_view vm, OwnerToken token,
                    std::string_view new_host);
void AppendRelease(std::vector<uint8_t>* out, uint64_t id, std::string_view vm, OwnerToken token);
void AppendStat(std::vector<uint8_t>* out, uint64_t id);
void AppendReclaim(std::vector<uint8_t>* out, uint64_t id, std::string_view vm, OwnerToken token);

// Decodes a verified frame's payload. kCorruption for an unknown type, a
// truncated or oversize field, a page count over kMaxBatchPages or not
// matching the payload, and trailing bytes. PutRequest pages point into payload.
Result<Request> DecodeRequest(uint16_t type, const uint8_t* payload, size_t len);

// ---- Responses -------------------------------------------------------------

struct HelloReply {
  std::string server_id;
  uint32_t max_batch_pages = 0;
  uint32_t max_payload = 0;
};
struct VmStat {
  std::string vm;
  std::string owner;
  uint64_t epoch = 0;
  uint64_t pages = 0;
};
struct StatReply {
  uint64_t pages = 0;
  uint64_t bytes = 0;
  uint64_t capacity_bytes = 0;
  uint8_t persistent = 0;
  uint32_t vm_count = 0;        // all namespaces; vms lists at most kMaxStatVms
  std::vector<VmStat> vms;
  std::vector<std::pair<std::string, uint64_t>> counters;  // name -> value
};

// RECLAIM's answer: the pages of the namespace that the store lost (a
// journal record it could not read back) and has not been given again since.
// lost_unknown: the store lost records it could not even attribute to a page
// (a damaged journal beyond repair): treat every page it holds as suspect.
struct ReclaimReply {
  uint64_t pages = 0;  // pages the namespace holds
  bool lost_unknown = false;
  std::vector<uint64_t> lost;  // ascending; at most kMaxReclaimLost
};
constexpr uint32_t kMaxReclaimLost = 100000;

// wire::FrameBuilder for this protocol's magic and version.
class FrameBuilder : public wire::FrameBuilder {
 public:
  FrameBuilder(std::vector<uint8_t>* out, uint16_t type) : wire::FrameBuilder(out, kMagic, kVersion, type) {}
};

// Server side. An error response carries no body; a message longer than
// kMaxMessageLen is cut.
void AppendErrorResponse(std::vector<uint8_t>* out, uint16_t type, uint64_t id, const Status& st);
void AppendHelloReply(std::vector<uint8_t>* out, uint64_t id, const HelloReply& r);
// CLAIM and TRANSFER answer with a token.
void AppendTokenReply(std::vector<uint8_t>* out, MsgType t, uint64_t id, OwnerToken token);
// PUT (pages stored), DELETE (pages deleted), RELEASE (pages freed).
void AppendCountReply(std::vector<uint8_t>* out, MsgType t, uint64_t id, uint64_t count);
void AppendStatReply(std::vector<uint8_t>* out, uint64_t id, const StatReply& r);
void AppendReclaimReply(std::vector<uint8_t>* out, uint64_t id, const ReclaimReply& r);

// Builds a GET reply in place so pages are copied once, from the store into
// the frame: reserve room for every page, let the store fill the presence
// flags and the present pages packed in request order, then Finish().
class GetReplyWriter {
 public:
  GetReplyWriter(std::vector<uint8_t>* out, uint64_t id, uint32_t count);
  uint8_t* present() { return out_->data() + flags_off_; }  // count bytes, 1 = present
  uint8_t* pages() { return out_->data() + flags_off_ + count_; }
  void Finish(uint32_t n_present);
  // Replaces the half-built reply by an error response.
  void Fail(const Status& st);

 private:
  std::vector<uint8_t>* out_;
  FrameBuilder fb_;
  size_t flags_off_;
  uint64_t id_;
  uint32_t count_;
};

// A GET reply whose pages are sent from where they lie (the store's slots):
// appends the frame header, the response head and the presence flags to
// *out, with the length and checksum of the whole frame, pages included.
// The caller sends pages[0..n) right behind these bytes, unchanged.
// Same bytes on the wire as GetReplyWriter.
void AppendGetReplyHead(std::vector<uint8_t>* out, uint64_t id, std::span<const uint8_t> present,
                        std::span<const uint8_t* const> pages);

// Client side: the common head of a response. status is the server's answer
// for the request; body/body_len are set only when it is ok.
struct ResponseView {
  uint16_t type = 0;
  uint64_t id = 0;
  Status status;
  const uint8_t* body = nullptr;
  size_t body_len = 0;
};
Result<ResponseView> DecodeResponse(uint16_t type, const uint8_t* payload, size_t len);

struct GetReplyView {
  uint32_t count = 0;
  const uint8_t* present = nullptr;  // count flags
  const uint8_t* pages = nullptr;    // present pages, packed in request order
};
Result<HelloReply> DecodeHelloReply(const ResponseView& r);
Result<OwnerToken> DecodeTokenReply(const ResponseView& r);
Result<uint64_t> DecodeCountReply(const ResponseView& r);
Result<StatReply> DecodeStatReply(const ResponseView& r);
Result<ReclaimReply> DecodeReclaimReply(const ResponseView& r);
Result<GetReplyView> DecodeGetReply(const ResponseView& r, uint32_t expected_count);

// Wire status codes are their own table, so reordering Code cannot change
// the protocol. Unknown wire codes decode as kInternal.
uint16_t StatusToWire(Code c);
Code StatusFromWire(uint16_t w);


}  // namespace agile::memd
