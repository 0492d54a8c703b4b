#include "migrate/postcopy_server.h"

namespace agile::migrate {
namespace {
constexpr size_t kPushChunkPages = 256;  // pages read and sent between progress reports
}  // namespace

PostcopyServer::PostcopyServer(vm::GuestMemory* mem, PageStream* stream, uint32_t prepage)
    : mem_(mem), stream_(stream), prepage_(prepage), sent_(new std::atomic<uint8_t>[mem->pages()]()) {}

Status PostcopyServer::Serve(const std::vector<uint64_t>& req, uint32_t round, bool after_switchover) {
  std::lock_guard<std::mutex> serve(serve_mu_);
  std::vector<uint64_t> pages;
  for (uint64_t idx : req) {
    for (uint64_t n = idx; n < idx + 1 + prepage_ && n < mem_->pages(); ++n) {
      if (sent_[n].exchange(1)) continue;
      if (n == idx) demand_.fetch_add(1);
      pages.push_back(n);
    }
  }
  uint64_t sent = 0;
  Status s = stream_->Send(pages, round, &sent, rescoped_.load());
  if (after_switchover) postcopied_.fetch_add(sent);
  return s;
}

Status PostcopyServer::ScopeToTail(const std::vector<uint8_t>& tail_bm,
                                   const std::function<Status()>& send_locations) {
  std::lock_guard<std::mutex> serve(serve_mu_);
  for (uint64_t i = 0; i < mem_->pages(); ++i) sent_[i].store(tail_bm[i] ? 0 : 1);
  return send_locations();
}

void PostcopyServer::Rescope(const std::vector<uint8_t>& missing) {
  std::lock_guard<std::mutex> serve(serve_mu_);
  for (uint64_t i = 0; i < mem_->pages(); ++i) sent_[i].store(missing[i] ? 0 : 1);
  rescoped_.store(true);
}

Status PostcopyServer::Push(const std::vector<uint8_t>* tail_bm, uint32_t round,
                            const std::function<void()>& progress) {
  std::vector<uint64_t> chunk;
  const bool zero_too = rescoped_.load();  // (Rescope never runs beside Push)
  for (uint64_t i = 0; i < mem_->pages(); ++i) {
    if (tail_bm && !(*tail_bm)[i]) continue;
    if ((!zero_too && mem_->state(i) == vm::PageState::kZero) || sent_[i].exchange(1)) continue;
    chunk.push_back(i);
    if (chunk.size() == kPushChunkPages) {
      uint64_t sent = 0;
      AGILE_RETURN_IF_ERROR(stream_->Send(chunk, round, &sent, zero_too));
      postcopied_.fetch_add(sent);
      chunk.clear();
      if (progress) progress();
    }
  }
  uint64_t sent = 0;
  AGILE_RETURN_IF_ERROR(stream_->Send(chunk, round, &sent, zero_too));
  postcopied_.fetch_add(sent);
  return Status::Ok();
}

}  // namespace agile::migrate
