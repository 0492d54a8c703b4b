// Prometheus metrics for agiled and agile-memd (--metrics-listen HOST:PORT).
// prometheus-cpp (Debian's prometheus-cpp-dev) serves GET /metrics in the text
// exposition format 0.0.4. Values are not registered up front: at each scrape
// a callback reads the counters the code keeps anyway (fault stats, migration
// jobs, the store's) into a Scrape, so no hot path pays for metrics and no
// value is kept twice. Names follow Prometheus' conventions: agile_ prefix,
// base units in the name (_bytes, _seconds, _ratio), _total for counters.
// Thread-safety: the collect callback runs on the endpoint's HTTP threads, one
// scrape at a time per endpoint; it must do its own locking.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <prometheus/metric_family.h>

#include "base/status.h"

namespace prometheus {
class Exposer;
}

namespace agile::metrics {

using Labels = std::map<std::string, std::string>;

// The families of one scrape. Adding a sample to a name seen before appends
// to that family (its help and type come from the first).
class Scrape {
 public:
  void Gauge(const std::string& name, const std::string& help, const Labels& labels, double value);
  void Counter(const std::string& name, const std::string& help, const Labels& labels, double value);
  // bounds: bucket upper bounds, ascending, without +Inf; counts: samples per
  // bucket (not cumulative), bounds.size() + 1 of them, the last above every bound.
  void Histogram(const std::string& name, const std::string& help, const Labels& labels,
                 const std::vector<double>& bounds, const std::vector<uint64_t>& counts, double sum);
  std::vector<prometheus::MetricFamily> Take();

 private:
  prometheus::ClientMetric& Add(const std::string& name, const std::string& help, prometheus::MetricType type,
                                const Labels& labels);
  std::vector<prometheus::MetricFamily> families_;
  std::map<std::string, size_t> index_;
};

// The text exposition format of `families` (what the endpoint serves).
std::string Serialize(const std::vector<prometheus::MetricFamily>& families);

class Endpoint {
 public:
  // Serves http://HOST:PORT/metrics (port 0 picks a free port) until destroyed.
  static Result<std::unique_ptr<Endpoint>> Start(const std::string& host_port, std::function<void(Scrape*)> collect);
  ~Endpoint();
  uint16_t port() const { return port_; }

 private:
  class Collector;
  Endpoint() = default;
  std::shared_ptr<Collector> collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  uint16_t port_ = 0;
};

}  // namespace agile::metrics
