// Which resident pages to offload first. The working-set tracker provides the
// real policy (TrackerPolicy: coldest by access age); LastFaultPolicy is the
// honest fallback where tracking cannot run: least-recently *faulted* first. A resident page
// stops faulting once mapped, so this order is really "longest since it was
// last brought in" - cold-first for data touched once (boot, fill), blind to
// pages that stay hot without faulting.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "track/access_tracker.h"
#include "vm/fault_server.h"
#include "vm/guest_memory.h"

namespace agile::offload {

class VictimPolicy {
 public:
  virtual ~VictimPolicy() = default;
  virtual const char* name() const = 0;
  // Up to n resident page indexes, coldest first.
  virtual std::vector<uint64_t> Coldest(size_t n) = 0;
};

class LastFaultPolicy : public VictimPolicy, public vm::AccessObserver {
 public:
  explicit LastFaultPolicy(const vm::GuestMemory* memory);
  const char* name() const override { return "least-recent-fault"; }
  std::vector<uint64_t> Coldest(size_t n) override;
  void OnAccess(uint64_t idx) override;  // fault thread

 private:
  const vm::GuestMemory* mem_;
  std::unique_ptr<std::atomic<uint32_t>[]> stamp_;  // fault sequence number, 0 = never
  std::atomic<uint32_t> seq_{0};
};

// Coldest-first by access age from the working-set tracker (reads and writes).
// The tracker only names pages it knows to be idle, coldest first; when an
// offload asks for more than that (a young VM, or a target below the working
// set), the rest comes from `fallback` in its order. Even a page idle for
// only part of a coverage cycle is named before the fallback's: the fallback
// knows nothing about use since the last fault (and a minimum idle age of a
// few cycles would exclude every page once a TCG guest stretches the cycle
// to minutes, as the lab showed).
class TrackerPolicy : public VictimPolicy {
 public:
  TrackerPolicy(const track::AccessTracker* tracker, VictimPolicy* fallback) : tracker_(tracker), fallback_(fallback) {}
  const char* name() const override { return "coldest-by-access-age"; }
  std::vector<uint64_t> Coldest(size_t n) override;

 private:
  const track::AccessTracker* tracker_;
  VictimPolicy* fallback_;
};

// Passes every observed access to two observers (tracker and fallback policy).
class FanOutObserver : public vm::AccessObserver {
 public:
  FanOutObserver(vm::AccessObserver* a, vm::AccessObserver* b) : a_(a), b_(b) {}
  void OnAccess(uint64_t idx) override {
    a_->OnAccess(idx);
    b_->OnAccess(idx);
  }

 private:
  vm::AccessObserver* a_;
  vm::AccessObserver* b_;
};

}  // namespace agile::offload
