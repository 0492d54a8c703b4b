#include "track/wss_sampler.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "base/page.h"

namespace agile::track {

WssSampler::WssSampler(vm::GuestMemory* memory, SamplerOptions opts)
    : mem_(memory),
      opts_(opts),
      pages_(memory->pages()),
      state_(new std::atomic<uint8_t>[memory->pages()]()),
      rng_(opts.seed) {}

WssSampler::~WssSampler() { Stop(); }

Status WssSampler::Step() {
  std::lock_guard<std::mutex> l(step_mu_);
  if (!sample_.empty()) {
    // Pages that left RAM during the interval (offloaded) say nothing about
    // resident memory: they leave the sample.
    uint64_t counted = 0, touched = 0;
    for (uint64_t idx : sample_) {
      bool was_touched = state_[idx].exchange(kNone, std::memory_order_relaxed) == kTouched;
      if (mem_->state(idx) != vm::PageState::kResident) continue;
      ++counted;
      touched += was_touched;
    }
    if (counted > 0) {
      // Pooled with the previous interval: twice the sample for the cost of
      // one more interval of lag after a phase change.
      double fraction = static_cast<double>(touched + prev_touched_) / static_cast<double>(counted + prev_counted_);
      prev_counted_ = counted;
      prev_touched_ = touched;
      estimate_.store(static_cast<int64_t>(fraction * static_cast<double>(mem_->count(vm::PageState::kResident))),
                      std::memory_order_relaxed);
      intervals_.fetch_add(1, std::memory_order_relaxed);
    }
    sample_.clear();
  }
  if (mem_->count(vm::PageState::kResident) == 0) return Status::Ok();
  // A fresh sample of resident pages, uniformly at random. Marked before the
  // drop so that no fault after the drop goes unseen.
  std::uniform_int_distribution<uint64_t> pick(0, pages_ - 1);
  for (uint64_t tries = 0; sample_.size() < opts_.sample_pages && tries < 20ull * opts_.sample_pages; ++tries) {
    uint64_t idx = pick(rng_);
    if (mem_->state(idx) != vm::PageState::kResident || state_[idx].load(std::memory_order_relaxed) != kNone) continue;
    state_[idx].store(kSampled, std::memory_order_relaxed);
    sample_.push_back(idx);
  }
  std::sort(sample_.begin(), sample_.end());
  Status s = ForEachRun(sample_, [&](uint64_t first, uint64_t count) { return mem_->DropPtes(first, count); });
  if (!s.ok()) {
    // No fault will tell about this sample: forget it, and say why.
    for (uint64_t idx : sample_) state_[idx].store(kNone, std::memory_order_relaxed);
    sample_.clear();
    return s.Annotate("drop PTEs of the working-set sample");
  }
  return Status::Ok();
}

void WssSampler::Start() {
  std::lock_guard<std::mutex> l(run_mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { Run(); });
}

void WssSampler::Stop() {
  {
    std::lock_guard<std::mutex> l(run_mu_);
    stop_ = true;
  }
  run_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  // A sample left half-measured is dropped: the next Start() begins afresh.
  std::lock_guard<std::mutex> l(step_mu_);
  for (uint64_t idx : sample_) state_[idx].store(kNone, std::memory_order_relaxed);
  sample_.clear();
  prev_counted_ = prev_touched_ = 0;
}

void WssSampler::Run() {
  std::unique_lock<std::mutex> l(run_mu_);
  while (!stop_) {
    l.unlock();
    Status s = Step();
    l.lock();
    if (!s.ok()) {
      if (s.code() == Code::kUnavailable) return;  // the VM is gone
      spdlog::warn("working-set sampler: {}", s.ToString());
    }
    run_cv_.wait_for(l, std::chrono::milliseconds(opts_.interval_ms), [this] { return stop_; });
  }
}

}  // namespace agile::track
