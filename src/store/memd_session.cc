#include "store/memd_session.h"

#include <spdlog/spdlog.h>

namespace agile::memd {

std::vector<std::pair<std::string, uint64_t>> ServerCounters::Snapshot() const {
  std::vector<std::pair<std::string, uint64_t>> v;
  for (uint16_t t = 1; t < requests.size(); ++t)
    v.emplace_back(std::string("requests.") + MsgTypeName(static_cast<MsgType>(t)), requests[t].load());
  v.emplace_back("errors", errors.load());
  v.emplace_back("errors.permission_denied", permission_denied.load());
  v.emplace_back("errors.store_full", store_full.load());
  v.emplace_back("errors.no_space", no_space.load());
  v.emplace_back("errors.protocol", protocol_errors.load());
  v.emplace_back("pages.put", pages_put.load());
  v.emplace_back("pages.got", pages_got.load());
  v.emplace_back("pages.absent", pages_absent.load());
  v.emplace_back("pages.deleted", pages_deleted.load());
  v.emplace_back("connections.total", connections.load());
  v.emplace_back("connections.open", connections_open.load());
  return v;
}

MemdSession::MemdSession(PageStore* store, ServerCounters* counters, std::string peer, std::string authenticated)
    : store_(store), counters_(counters), peer_(std::move(peer)), authenticated_(std::move(authenticated)) {}

std::string MemdSession::Describe() const { return host_.empty() ? peer_ : host_ + "@" + peer_; }

Status MemdSession::Handle(uint16_t type, const uint8_t* payload, size_t len, ReplyBatch* out) {
  AGILE_ASSIGN_OR_RETURN(Request req, DecodeRequest(type, payload, len));
  counters_->requests[type]++;
  const auto* get = std::get_if<GetRequest>(&req.body);
  if (get != nullptr && !host_.empty()) {
    HandleGet(req.id, *get, out);
  } else {
    Dispatch(static_cast<MsgType>(type), req.id, req.body, out->bytes());
  }
  return Status::Ok();
}

const Status& MemdSession::Failed(MsgType t, const Status& st) {
  counters_->errors++;
  if (st.code() == Code::kPermissionDenied) {
    counters_->permission_denied++;
    spdlog::warn("{}: {} refused: {}", Describe(), MsgTypeName(t), st.message());
  } else if (st.code() == Code::kResourceExhausted || st.code() == Code::kNoSpace) {
    (st.code() == Code::kNoSpace ? counters_->no_space : counters_->store_full)++;
    spdlog::warn("{}: {} refused: {}", Describe(), MsgTypeName(t), st.message());
  } else {
    spdlog::info("{}: {} failed: {}", Describe(), MsgTypeName(t), st.ToString());
  }
  return st;
}

void MemdSession::Dispatch(MsgType type, uint64_t id, const RequestBody& body, std::vector<uint8_t>* out) {
  auto fail = [&](MsgType t, const Status& st) { AppendErrorResponse(out, ResponseType(t), id, Failed(t, st)); };
  if (host_.empty() && type != MsgType::kHello && type != MsgType::kStat)
    return fail(type, PermissionDenied("this connection has not said HELLO with its host id"));

  if (const auto* r = std::get_if<HelloRequest>(&body)) {
    if (Status st = ValidateHostId(r->host_id); !st.ok()) return fail(MsgType::kHello, st);
    if (!authenticated_.empty() && r->host_id != authenticated_)
      return fail(MsgType::kHello, PermissionDenied("HELLO as host '" + r->host_id + "' from a peer whose certificate names '" +
                                                    authenticated_ + "'"));
    if (!host_.empty() && host_ != r->host_id)
      return fail(MsgType::kHello, InvalidArgument("connection already identified as host '" + host_ + "'"));
    host_ = r->host_id;
    spdlog::info("{}: said HELLO", Describe());
    return AppendHelloReply(out, id, HelloReply{"agile-memd", kMaxBatchPages, kMaxPayload});
  }
  if (const auto* r = std::get_if<ClaimRequest>(&body)) {
    if (r->host_id != host_)
      return fail(MsgType::kClaim, PermissionDenied("CLAIM for host '" + r->host_id +
                                                    "' on a connection identified as '" + host_ + "'"));
    auto token = store_->Claim(host_, r->vm);
    if (!token.ok()) return fail(MsgType::kClaim, token.status());
    spdlog::info("{}: claimed vm {}", Describe(), r->vm);
    return AppendTokenReply(out, MsgType::kClaim, id, *token);
  }
  if (const auto* r = std::get_if<PutRequest>(&body)) {
    auto n = store_->Put(host_, r->vm, r->token, r->pages);
    if (!n.ok()) return fail(MsgType::kPut, n.status());
    wrote_ = true;
    counters_->pages_put += *n;
    return AppendCountReply(out, MsgType::kPut, id, *n);
  }
  if (const auto* r = std::get_if<DeleteRequest>(&body)) {
    auto n = store_->Delete(host_, r->vm, r->token, r->indexes);
    if (!n.ok()) return fail(MsgType::kDelete, n.status());
    wrote_ = true;
    counters_->pages_deleted += *n;
    return AppendCountReply(out, MsgType::kDelete, id, *n);
  }
  if (const auto* r = std::get_if<TransferRequest>(&body)) {
    auto token = store_->Transfer(host_, r->vm, r->token, r->new_host);
    if (!token.ok()) return fail(MsgType::kTransfer, token.status());
    spdlog::info("{}: transferred vm {} to host {} (epoch {})", Describe(), r->vm, r->new_host, token->epoch);
    return AppendTokenReply(out, MsgType::kTransfer, id, *token);
  }
  if (const auto* r = std::get_if<ReleaseRequest>(&body)) {
    auto n = store_->Release(host_, r->vm, r->token);
    if (!n.ok()) return fail(MsgType::kRelease, n.status());
    spdlog::info("{}: released vm {} ({} pages freed)", Describe(), r->vm, *n);
    return AppendCountReply(out, MsgType::kRelease, id, *n);
  }
  if (const auto* r = std::get_if<ReclaimRequest>(&body)) {
    auto rep = store_->Reclaim(host_, r->vm, r->token);
    if (!rep.ok()) return fail(MsgType::kReclaim, rep.status());
    if (!rep->lost.empty() || rep->lost_unknown)
      spdlog::warn("{}: reclaimed vm {}: told it of {} lost page(s){}", Describe(), r->vm, rep->lost.size(),
                   rep->lost_unknown ? " and of records naming no page" : "");
    else
      spdlog::info("{}: reclaimed vm {} ({} pages, none lost)", Describe(), r->vm, rep->pages);
    return AppendReclaimReply(out, id, *rep);
  }
  StoreStats s = store_->Stats();
  StatReply reply;
  reply.pages = s.pages;
  reply.bytes = s.pages * kPageSize;
  reply.capacity_bytes = s.capacity_pages * kPageSize;
  reply.persistent = s.persistent;
  // A host sees only its own namespaces (none before HELLO); the totals are
  // the store's.
  for (auto& v : s.vms)
    if (!host_.empty() && v.owner == host_) reply.vms.push_back(std::move(v));
  reply.vm_count = static_cast<uint32_t>(reply.vms.size());
  reply.counters = counters_->Snapshot();
  AppendStatReply(out, id, reply);
}

void MemdSession::HandleGet(uint64_t id, const GetRequest& r, ReplyBatch* out) {
  uint32_t count = static_cast<uint32_t>(r.indexes.size());
  if (copy_gets_) {
    GetReplyWriter w(out->bytes(), id, count);
    auto n = store_->Get(host_, r.vm, r.token, r.indexes, w.present(), w.pages());
    if (!n.ok()) return w.Fail(Failed(MsgType::kGet, n.status()));
    counters_->pages_got += *n;
    counters_->pages_absent += count - *n;
    return w.Finish(*n);
  }
  present_.resize(count);
  auto pages = store_->GetPinned(host_, r.vm, r.token, r.indexes, present_.data());
  if (!pages.ok())
    return AppendErrorResponse(out->bytes(), ResponseType(MsgType::kGet), id, Failed(MsgType::kGet, pages.status()));
  uint32_t n = static_cast<uint32_t>(pages->pages().size());
  counters_->pages_got += n;
  counters_->pages_absent += count - n;
  AppendGetReplyHead(out->bytes(), id, present_, pages->pages());
  out->AddPages(std::move(pages).value());
}

}  // namespace agile::memd
