#include "store/memd_client.h"

#include <poll.h>

#include <algorithm>
#include <cstring>

#include "base/socket.h"

namespace agile::memd {
namespace {

// Requests in flight at once, and bytes gathered into one send().
constexpr size_t kMaxInFlight = 64;
constexpr size_t kSendChunk = 1 << 20;

}  // namespace

MemdClient::MemdClient(UniqueFd fd, std::string host_id, int request_timeout_ms)
    : fd_(std::move(fd)),
      host_id_(std::move(host_id)),
      reader_(fd_.get(), kMagic, kVersion, kMaxPayload),
      request_timeout_ms_(request_timeout_ms) {}

Result<std::unique_ptr<MemdClient>> MemdClient::Connect(const std::string& addr, const std::string& host_id,
                                                        MemdClientOptions opts) {
  AGILE_RETURN_IF_ERROR(ValidateHostId(host_id));
  if (opts.tls && opts.tls->identity() != host_id)
    return InvalidArgument("host id '" + host_id + "' is not the name in our certificate ('" + opts.tls->identity() +
                           "'): agile-memd would refuse it");
  tls::ConnectOptions co;
  co.timeout_ms = opts.connect_timeout_ms;
  co.user_timeout_ms = opts.tcp_user_timeout_ms;
  AGILE_ASSIGN_OR_RETURN(tls::Secured sec, tls::ConnectAddress(addr, opts.tls, co));  // TCP_NODELAY is set there
  // Every blocking recv (a reply) waits at most this long for a byte: the
  // HELLO answer with the connect bound, later calls with the request bound.
  AGILE_RETURN_IF_ERROR(SetIoTimeouts(sec.fd.get(), opts.connect_timeout_ms, opts.connect_timeout_ms));
  std::unique_ptr<MemdClient> c(new MemdClient(std::move(sec.fd), host_id, opts.request_timeout_ms));
  c->reader_.set_busy_poll(opts.busy_poll);
  HelloReply hello;
  Status st = c->Pipeline(
      MsgType::kHello, 1, [&](size_t, uint64_t id, std::vector<uint8_t>* out) { AppendHello(out, id, host_id); },
      [&](size_t, const ResponseView& r) {
        AGILE_ASSIGN_OR_RETURN(hello, DecodeHelloReply(r));
        return Status::Ok();
      });
  if (!st.ok()) return st.Annotate("agile-memd at " + addr);
  c->max_batch_ = std::min(hello.max_batch_pages, kMaxBatchPages);
  AGILE_RETURN_IF_ERROR(SetIoTimeouts(c->fd_.get(), opts.request_timeout_ms, opts.request_timeout_ms));
  return c;
}

Status MemdClient::Broken(const Status& why) {
  broken_ = Unavailable("connection to agile-memd failed: " + why.ToString());
  fd_.Reset();
  return broken_;
}

Status MemdClient::ReadOne(MsgType type, uint64_t id, size_t i, const Handle& handle, Status* refusal) {
  auto frame = reader_.Next();
  if (!frame.ok()) return Broken(frame.status());
  auto r = DecodeResponse(frame->header.type, frame->payload, frame->header.length);
  if (!r.ok()) return Broken(r.status());
  if (r->type == kProtocolErrorType) return Broken(r->status.Annotate("server closed the connection"));
  if (r->type != ResponseType(type) || r->id != id)
    return Broken(Corruption("expected the " + std::string(MsgTypeName(type)) + " response to request " +
                             std::to_string(id) + ", got type " + std::to_string(r->type) + " id " +
                             std::to_string(r->id)));
  if (!r->status.ok()) {
    if (refusal->ok()) *refusal = r->status;
    return Status::Ok();
  }
  if (Status st = handle(i, *r); !st.ok()) return Broken(st);
  return Status::Ok();
}

Status MemdClient::ReadGetReply(uint64_t id, std::span<uint8_t* const> out, std::span<uint8_t> present,
                                const Handle& handle, size_t i, Status* refusal) {
  // An ok GET reply is: id u64 | status u16 = 0 | message str = "" (u32 0) |
  // count u32 | count flags | present pages. Peek at everything before the
  // pages; when it is that well-formed reply, receive the pages into out[]
  // (copying what is already buffered) and set present[] only once the
  // checksum holds. Anything else (an error response, a malformed reply, no
  // page present) takes the ordinary path, whose checks and messages apply
  // unchanged.
  const size_t count = out.size();
  const size_t head_len = 8 + 2 + 4 + 4 + count;
  auto p = reader_.Peek(head_len);
  if (!p.ok()) return Broken(p.status());
  bool fast = p->header.type == ResponseType(MsgType::kGet) && p->len == head_len && p->header.length > head_len;
  size_t n_present = 0;
  if (fast) {
    wire::Decoder d(p->payload, p->len);
    fast = d.U64() == id && d.U16() == 0 && d.U32() == 0 && d.U32() == count;
    const uint8_t* flags = p->payload + (head_len - count);
    for (size_t k = 0; fast && k < count; ++k) {
      fast = flags[k] <= 1;
      n_present += flags[k];
    }
    fast = fast && p->header.length == head_len + n_present * kPageSize;
  }
  if (!fast) return ReadOne(MsgType::kGet, id, i, handle, refusal);
  // The flags are unverified until ReceiveRest: copy them out, use them only
  // to place the pages, and publish them after the checksum holds.
  uint8_t flags[kMaxBatchPages];
  std::memcpy(flags, p->payload + (head_len - count), count);
  iov_.clear();
  for (size_t k = 0; k < count; ++k)
    if (flags[k]) iov_.push_back({out[k], kPageSize});
  if (Status st = reader_.ReceiveRest(*p, iov_); !st.ok()) return Broken(st);
  std::memcpy(present.data(), flags, count);
  return Status::Ok();
}

Status MemdClient::Pipeline(MsgType type, size_t n, const Encode& encode, const Handle& handle,
                            const Receive* receive) {
  if (!broken_.ok()) return broken_;
  const uint64_t first_id = next_id_;
  next_id_ += n;
  Status refusal;
  size_t sent = 0;  // requests encoded into wbuf_ so far
  size_t done = 0;  // responses handled
  size_t woff = 0;  // bytes of wbuf_ already sent
  wbuf_.clear();
  while (done < n) {
    if (woff == wbuf_.size() && sent < n && sent - done < kMaxInFlight) {
      wbuf_.clear();
      woff = 0;
      while (sent < n && sent - done < kMaxInFlight && wbuf_.size() < kSendChunk) {
        encode(sent, first_id + sent, &wbuf_);
        ++sent;
      }
    }
    auto read_one = [&] {
      return receive != nullptr ? (*receive)(done, first_id + done, &refusal)
                                : ReadOne(type, first_id + done, done, handle, &refusal);
    };
    if (woff == wbuf_.size()) {
      // Nothing more may go out until a response comes back: wait for it.
      AGILE_RETURN_IF_ERROR(read_one());
      ++done;
      continue;
    }
    auto w = wire::SendSome(fd_.get(), wbuf_.data() + woff, wbuf_.size() - woff);
    if (!w.ok()) return Broken(w.status());
    woff += *w;
    if (woff < wbuf_.size()) {
      // The socket is full. Wait until it drains or responses arrive; reading
      // them is what lets the server go on reading our requests.
      pollfd p{fd_.get(), POLLIN | POLLOUT, 0};
      int pr = ::poll(&p, 1, request_timeout_ms_ > 0 ? request_timeout_ms_ : -1);
      if (pr < 0 && errno != EINTR) return Broken(ErrnoStatus("poll"));
      if (pr == 0)
        return Broken(Unavailable("agile-memd neither read our requests nor answered for " +
                                  std::to_string(request_timeout_ms_) + " ms"));
      if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
        if (Status st = reader_.ReadAvailable(); !st.ok()) return Broken(st);
      }
    }
    while (done < n && reader_.HasFrame()) {
      AGILE_RETURN_IF_ERROR(read_one());
      ++done;
    }
  }
  return refusal;
}

Result<OwnerToken> MemdClient::Claim(std::string_view vm) {
  OwnerToken token;
  AGILE_RETURN_IF_ERROR(Pipeline(
      MsgType::kClaim, 1, [&](size_t, uint64_t id, std::vector<uint8_t>* out) { AppendClaim(out, id, vm, host_id_); },
      [&](size_t, const ResponseView& r) {
        AGILE_ASSIGN_OR_RETURN(token, DecodeTokenReply(r));
        return Status::Ok();
      }));
  return token;
}

Status MemdClient::Put(std::string_view vm, OwnerToken token, std::span<const PageRef> pages) {
  if (pages.empty()) return Status::Ok();
  return Pipeline(
      MsgType::kPut, Batches(pages.size()),
      [&](size_t i, uint64_t id, std::vector<uint8_t>* out) {
        size_t first = i * max_batch_;
        AppendPut(out, id, vm, token, pages.subspan(first, std::min<size_t>(max_batch_, pages.size() - first)));
      },
      [&](size_t, const ResponseView& r) { return DecodeCountReply(r).status(); });
}

Status MemdClient::Get(std::string_view vm, OwnerToken token, std::span<const uint64_t> indexes,
                       std::span<uint8_t* const> out, std::span<uint8_t> present) {
  if (out.size() != indexes.size() || present.size() != indexes.size())
    return InvalidArgument("Get: indexes, out and present must have the same length");
  if (indexes.empty()) return Status::Ok();
  std::fill(present.begin(), present.end(), 0);
  auto batch_len = [&](size_t i) { return std::min<size_t>(max_batch_, indexes.size() - i * max_batch_); };
  Handle copy_out = [&](size_t i, const ResponseView& r) -> Status {
    AGILE_ASSIGN_OR_RETURN(GetReplyView v, DecodeGetReply(r, static_cast<uint32_t>(batch_len(i))));
    const uint8_t* page = v.pages;
    for (size_t j = 0; j < v.count; ++j) {
      size_t k = i * max_batch_ + j;
      present[k] = v.present[j];
      if (!v.present[j]) continue;
      std::memcpy(out[k], page, kPageSize);
      page += kPageSize;
    }
    return Status::Ok();
  };
  Receive receive = [&](size_t i, uint64_t id, Status* refusal) {
    size_t first = i * max_batch_;
    return ReadGetReply(id, out.subspan(first, batch_len(i)), present.subspan(first, batch_len(i)), copy_out, i,
                        refusal);
  };
  return Pipeline(
      MsgType::kGet, Batches(indexes.size()),
      [&](size_t i, uint64_t id, std::vector<uint8_t>* wire) {
        AppendGet(wire, id, vm, token, indexes.subspan(i * max_batch_, batch_len(i)));
      },
      copy_out, &receive);
}

Result<uint64_t> MemdClient::Delete(std::string_view vm, OwnerToken token, std::span<const uint64_t> indexes) {
  uint64_t total = 0;
  if (indexes.empty()) return total;
  AGILE_RETURN_IF_ERROR(Pipeline(
      MsgType::kDelete, Batches(indexes.size()),
      [&](size_t i, uint64_t id, std::vector<uint8_t>* out) {
        size_t first = i * max_batch_;
        AppendDelete(out, id, vm, token,
                     indexes.subspan(first, std::min<size_t>(max_batch_, indexes.size() - first)));
      },
      [&](size_t, const ResponseView& r) {
        AGILE_ASSIGN_OR_RETURN(uint64_t n, DecodeCountReply(r));
        total += n;
        return Status::Ok();
      }));
  return total;
}

Result<OwnerToken> MemdClient::Transfer(std::string_view vm, OwnerToken token, std::string_view new_host) {
  OwnerToken next;
  AGILE_RETURN_IF_ERROR(Pipeline(
      MsgType::kTransfer, 1,
      [&](size_t, uint64_t id, std::vector<uint8_t>* out) { AppendTransfer(out, id, vm, token, new_host); },
      [&](size_t, const ResponseView& r) {
        AGILE_ASSIGN_OR_RETURN(next, DecodeTokenReply(r));
        return Status::Ok();
      }));
  return next;
}

Result<uint64_t> MemdClient::Release(std::string_view vm, OwnerToken token) {
  uint64_t freed = 0;
  AGILE_RETURN_IF_ERROR(Pipeline(
      MsgType::kRelease, 1, [&](size_t, uint64_t id, std::vector<uint8_t>* out) { AppendRelease(out, id, vm, token); },
      [&](size_t, const ResponseView& r) {
        AGILE_ASSIGN_OR_RETURN(freed, DecodeCountReply(r));
        return Status::Ok();
      }));
  return freed;
}

Result<ReclaimReply> MemdClient::Reclaim(std::string_view vm, OwnerToken token) {
  ReclaimReply rep;
  AGILE_RETURN_IF_ERROR(Pipeline(
      MsgType::kReclaim, 1, [&](size_t, uint64_t id, std::vector<uint8_t>* out) { AppendReclaim(out, id, vm, token); },
      [&](size_t, const ResponseView& r) {
        AGILE_ASSIGN_OR_RETURN(rep, DecodeReclaimReply(r));
        return Status::Ok();
      }));
  return rep;
}

Result<StatReply> MemdClient::Stat() {
  StatReply stat;
  AGILE_RETURN_IF_ERROR(Pipeline(
      MsgType::kStat, 1, [&](size_t, uint64_t id, std::vector<uint8_t>* out) { AppendStat(out, id); },
      [&](size_t, const ResponseView& r) {
        AGILE_ASSIGN_OR_RETURN(stat, DecodeStatReply(r));
        return Status::Ok();
      }));
  return stat;
}

}  // namespace agile::memd
