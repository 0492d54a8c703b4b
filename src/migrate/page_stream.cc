#include "migrate/page_stream.h"

#include <algorithm>
#include <string>


#include "wire/migrate_proto.h"

namespace agile::migrate {

PageStream::PageStream(vm::GuestMemory* mem, offload::SwapStore* store, Channel* ch) : mem_(mem), ch_(ch) {
  if (store != nullptr) store_reader_ = std::make_unique<StoreReader>(store);
}

Status PageStream::Send(std::vector<uint64_t> idx, uint32_t round, uint64_t* sent, bool zero_pages_too) {
  std::sort(idx.begin(), idx.end());
  std::vector<uint8_t> buf(wire::kMigMaxPagesPerFrame * wire::kMigPageSize);
  std::vector<wire::MigPage> batch;
  std::vector<uint8_t> frame;
  auto flush = [&]() -> Status {
    if (batch.empty()) return Status::Ok();
    frame.clear();
    wire::AppendPages(&frame, round, batch.data(), batch.size());
    *sent += batch.size();
    pages_.fetch_add(batch.size());
    batch.clear();
    return ch_->Send(frame);
  };
  for (uint64_t n : idx) {
    uint8_t* slot = buf.data() + batch.size() * wire::kMigPageSize;
    AGILE_ASSIGN_OR_RETURN(vm::PageState st, mem_->ReadPage(n, slot, store_reader_.get()));
    if (st == vm::PageState::kZero && !zero_pages_too) continue;  // nothing stored anywhere: the destination maps zeros
    if (st == vm::PageState::kZero) std::fill_n(slot, wire::kMigPageSize, uint8_t{0});  // a hole here reads as zeros
    if (st == vm::PageState::kRemote) return Internal("page " + std::to_string(n) + " is not here to send");
    batch.push_back({n, slot});
    if (batch.size() == wire::kMigMaxPagesPerFrame) AGILE_RETURN_IF_ERROR(flush());
  }
  return flush();
}

Status PageStream::EndRound(uint32_t round, uint64_t pages) {
  std::vector<uint8_t> f;
  wire::AppendRound(&f, round, pages);
  return ch_->Send(f);
}

}  // namespace agile::migrate
