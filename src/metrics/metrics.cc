#include "metrics/metrics.h"

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/text_serializer.h>

#include <cmath>
#include <exception>

#include "base/socket.h"

namespace agile::metrics {

prometheus::ClientMetric& Scrape::Add(const std::string& name, const std::string& help, prometheus::MetricType type,
                                      const Labels& labels) {
  auto it = index_.find(name);
  if (it == index_.end()) {
    it = index_.emplace(name, families_.size()).first;
    families_.push_back({name, help, type, {}});
  }
  prometheus::ClientMetric& m = families_[it->second].metric.emplace_back();
  for (const auto& [k, v] : labels) m.label.push_back({k, v});
  return m;
}

void Scrape::Gauge(const std::string& name, const std::string& help, const Labels& labels, double value) {
  Add(name, help, prometheus::MetricType::Gauge, labels).gauge.value = value;
}

void Scrape::Counter(const std::string& name, const std::string& help, const Labels& labels, double value) {
  Add(name, help, prometheus::MetricType::Counter, labels).counter.value = value;
}

void Scrape::Histogram(const std::string& name, const std::string& help, const Labels& labels,
                       const std::vector<double>& bounds, const std::vector<uint64_t>& counts, double sum) {
  auto& h = Add(name, help, prometheus::MetricType::Histogram, labels).histogram;
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds.size(); ++i) {
    cumulative += i < counts.size() ? counts[i] : 0;
    h.bucket.push_back({cumulative, bounds[i]});
  }
  if (counts.size() > bounds.size()) cumulative += counts[bounds.size()];
  h.bucket.push_back({cumulative, std::numeric_limits<double>::infinity()});
  h.sample_count = cumulative;
  h.sample_sum = sum;
}

std::vector<prometheus::MetricFamily> Scrape::Take() {
  index_.clear();
  return std::move(families_);
}

std::string Serialize(const std::vector<prometheus::MetricFamily>& families) {
  return prometheus::TextSerializer().Serialize(families);
}

class Endpoint::Collector : public prometheus::Collectable {
 public:
  explicit Collector(std::function<void(Scrape*)> fn) : fn_(std::move(fn)) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    Scrape s;
    fn_(&s);
    return s.Take();
  }

 private:
  std::function<void(Scrape*)> fn_;
};

Result<std::unique_ptr<Endpoint>> Endpoint::Start(const std::string& host_port, std::function<void(Scrape*)> collect) {
  AGILE_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(host_port));
  std::unique_ptr<Endpoint> e(new Endpoint());
  e->collector_ = std::make_shared<Collector>(std::move(collect));
  try {
    // civetweb's listening_ports syntax: HOST:PORT (IPv4).
    e->exposer_ = std::make_unique<prometheus::Exposer>(hp.host + ":" + std::to_string(hp.port), 2);
  } catch (const std::exception& ex) {
    return Unavailable("metrics endpoint " + host_port + ": " + ex.what());
  }
  e->exposer_->RegisterCollectable(e->collector_, "/metrics");
  auto ports = e->exposer_->GetListeningPorts();
  e->port_ = ports.empty() ? hp.port : static_cast<uint16_t>(ports.front());
  return e;
}

Endpoint::~Endpoint() {
  exposer_.reset();  // stops the HTTP threads before the collector goes
}

}  // namespace agile::metrics
