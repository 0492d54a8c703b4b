#include "migrate/page_requester.h"

#include <algorithm>

#include "wire/migrate_proto.h"

namespace agile::migrate {
namespace {
constexpr size_t kMaxPerFrame = 4096;  // wire: PAGE_REQUEST's limit
}  // namespace

PageRequester::PageRequester(Channel* ch, uint64_t pages)
    : pages_(pages), asked_(new std::atomic<uint8_t>[pages]()), ch_(ch) {
  thread_ = std::thread([this] { Run(); });
}

PageRequester::~PageRequester() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void PageRequester::Request(uint64_t idx) {
  if (idx >= pages_ || asked_[idx].exchange(1)) return;
  {
    std::lock_guard<std::mutex> l(mu_);
    queue_.push_back(idx);
  }
  cv_.notify_all();
}

void PageRequester::Detach() {
  std::unique_lock<std::mutex> l(mu_);
  ch_ = nullptr;
  cv_.wait(l, [&] { return !sending_; });
}

void PageRequester::Attach(Channel* ch) {
  {
    std::lock_guard<std::mutex> l(mu_);
    queue_.clear();
    for (uint64_t i = 0; i < pages_; ++i) asked_[i].store(0);
    ch_ = ch;
  }
  cv_.notify_all();
}

void PageRequester::Run() {
  std::unique_lock<std::mutex> l(mu_);
  std::vector<uint64_t> batch;
  std::vector<uint8_t> frame;
  for (;;) {
    cv_.wait(l, [&] { return stop_ || (ch_ != nullptr && !queue_.empty()); });
    if (stop_) return;
    const size_t n = std::min(queue_.size(), kMaxPerFrame);
    batch.assign(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
    queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
    Channel* ch = ch_;
    sending_ = true;
    l.unlock();
    frame.clear();
    wire::AppendPageRequest(&frame, batch.data(), batch.size());
    // A broken connection surfaces in the receive loop, which detaches us;
    // the pages stay "asked" until Attach, so nothing loops on a dead link.
    if (ch->Send(frame).ok()) sent_.fetch_add(batch.size());
    l.lock();
    sending_ = false;
    cv_.notify_all();
  }
}

}  // namespace agile::migrate
