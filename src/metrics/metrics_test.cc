#include "metrics/metrics.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "base/io.h"
#include "base/socket.h"

namespace agile::metrics {
namespace {

TEST(MetricsTest, TextFormatHasHelpTypeEscapedLabelsAndCumulativeBuckets) {
  Scrape s;
  s.Gauge("agile_vm_pages", "Guest pages by state", {{"vm", "a\"b\\c\nd"}, {"state", "resident"}}, 42);
  s.Gauge("agile_vm_pages", "ignored: the first help stays", {{"vm", "x"}, {"state", "zero"}}, 1);
  s.Counter("agile_faults_total", "Faults", {}, 7);
  s.Histogram("agile_lat_seconds", "Latency", {{"kind", "refault"}}, {0.001, 0.01}, {2, 3, 1}, 0.5);
  std::string t = Serialize(s.Take());
  EXPECT_NE(t.find("# HELP agile_vm_pages Guest pages by state\n# TYPE agile_vm_pages gauge\n"), std::string::npos) << t;
  EXPECT_EQ(t.find("ignored"), std::string::npos);
  EXPECT_NE(t.find(R"(agile_vm_pages{state="resident",vm="a\"b\\c\nd"} 42)"), std::string::npos) << t;
  EXPECT_NE(t.find("# TYPE agile_faults_total counter\nagile_faults_total 7"), std::string::npos) << t;
  EXPECT_NE(t.find("# TYPE agile_lat_seconds histogram\n"), std::string::npos) << t;
  EXPECT_NE(t.find(R"(agile_lat_seconds_bucket{kind="refault",le="0.001"} 2)"), std::string::npos) << t;
  EXPECT_NE(t.find(R"(agile_lat_seconds_bucket{kind="refault",le="0.01"} 5)"), std::string::npos) << t;
  EXPECT_NE(t.find(R"(agile_lat_seconds_bucket{kind="refault",le="+Inf"} 6)"), std::string::npos) << t;
  EXPECT_NE(t.find(R"(agile_lat_seconds_sum{kind="refault"} 0.5)"), std::string::npos) << t;
  EXPECT_NE(t.find(R"(agile_lat_seconds_count{kind="refault"} 6)"), std::string::npos) << t;
}

TEST(MetricsTest, EndpointServesWhatTheCallbackCollectsAtEachScrape) {
  int scrapes = 0;
  auto e = Endpoint::Start("127.0.0.1:0", [&](Scrape* s) { s->Counter("agile_scrapes_total", "Scrapes", {}, ++scrapes); });
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  ASSERT_GT((*e)->port(), 0);
  for (int want = 1; want <= 2; ++want) {
    auto fd = TcpConnect({"127.0.0.1", (*e)->port()}, 5000);
    ASSERT_TRUE(fd.ok()) << fd.status().ToString();
    std::string req = "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n";
    ASSERT_TRUE(WriteFull(fd->get(), req.data(), req.size()).ok());
    std::string resp;
    char buf[4096];
    for (ssize_t n; (n = ::read(fd->get(), buf, sizeof(buf))) > 0;) resp.append(buf, n);
    EXPECT_NE(resp.find("200 OK"), std::string::npos) << resp;
    EXPECT_NE(resp.find("Content-Type: text/plain"), std::string::npos) << resp;  // the text format
    EXPECT_NE(resp.find("agile_scrapes_total " + std::to_string(want)), std::string::npos) << resp;
  }
}

TEST(MetricsTest, BadOrTakenAddressIsAnError) {
  EXPECT_FALSE(Endpoint::Start("nonsense", [](Scrape*) {}).ok());
  auto a = Endpoint::Start("127.0.0.1:0", [](Scrape*) {});
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE(Endpoint::Start("127.0.0.1:" + std::to_string((*a)->port()), [](Scrape*) {}).ok());
}

}  // namespace
}  // namespace agile::metrics
