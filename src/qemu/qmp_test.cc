#include "qemu/qmp.h"

#include <gtest/gtest.h>

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "base/io.h"
#include "base/json_depth.h"
#include "base/socket.h"

namespace agile::qemu {
namespace {

using nlohmann::json;

TEST(QmpMessage, Classifies) {
  auto g = ParseQmpMessage(R"({"QMP": {"version": {}, "capabilities": []}})");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->kind, QmpMessage::Kind::kGreeting);
  auto r = ParseQmpMessage(R"({"return": {"status": "running"}, "id": 7})");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->kind, QmpMessage::Kind::kReturn);
  EXPECT_EQ(r->id, 7u);
  EXPECT_EQ(r->body["status"], "running");
  auto e = ParseQmpMessage(R"({"error": {"class": "GenericError", "desc": "no"}})");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->kind, QmpMessage::Kind::kError);
  EXPECT_FALSE(e->id.has_value());
  auto ev = ParseQmpMessage(R"({"event": "STOP", "timestamp": {}})");
  ASSERT_TRUE(ev.ok());
  EXPECT_EQ(ev->kind, QmpMessage::Kind::kEvent);
}

TEST(QmpMessage, RejectsJunkDeepAndForeign) {
  EXPECT_FALSE(ParseQmpMessage("not json").ok());
  EXPECT_FALSE(ParseQmpMessage("[1,2]").ok());
  EXPECT_FALSE(ParseQmpMessage(R"({"something": 1})").ok());
  std::string deep = R"({"return": )" + std::string(100000, '[') + std::string(100000, ']') + "}";
  EXPECT_FALSE(ParseQmpMessage(deep).ok());
}

// A fake QEMU on a unix socket: greets, then answers each command with a
// stale reply, an event and the real reply.
// A fake QEMU's side of the handshake on `fd`: the greeting, then the
// answer to qmp_capabilities. Returns the reader for what comes next.
void GreetAndTakeCapabilities(int fd, LineReader* r) {
  auto send = [&](const std::string& s) { ASSERT_TRUE(WriteFull(fd, s.data(), s.size()).ok()); };
  send(R"({"QMP": {"version": {}, "capabilities": []}})" "\n");
  auto caps = r->Next();
  ASSERT_TRUE(caps.ok());
  send(json{{"return", json::object()}, {"id", json::parse(*caps)["id"]}}.dump() + "\n");
}

// QEMU closing its monitor while a command waits (as `quit` does) is a
// closed connection, said as such at once: not "no answer within N ms"
// (the error once given 23 ms after a `quit`).
TEST(QmpClient, AMonitorClosedUnderACommandIsNotReportedAsATimeout) {
  std::string path = "/tmp/qmp_test_close." + std::to_string(::getpid());
  ::unlink(path.c_str());
  auto l = UnixListen(path);
  ASSERT_TRUE(l.ok());
  std::thread qemu([&] {
    auto c = Accept(l->get());
    ASSERT_TRUE(c.ok());
    LineReader r(c->get());
    GreetAndTakeCapabilities(c->get(), &r);
    // QEMU goes away with the command unread: the client's read then fails
    // with ECONNRESET, not EOF.
    pollfd p{c->get(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 5000), 1);
  });
  auto q = QmpClient::Connect(path, 2000);
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  auto start = std::chrono::steady_clock::now();
  auto r = q->Execute("quit", nullptr, 10000);
  auto took = std::chrono::steady_clock::now() - start;
  qemu.join();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message().find("no answer within"), std::string::npos) << r.status().ToString();
  EXPECT_FALSE(QmpTimedOut(r.status())) << "a QEMU gone taken for one still to answer";
  EXPECT_NE(r.status().message().find("QMP quit: "), std::string::npos) << r.status().ToString();
  EXPECT_LT(took, std::chrono::milliseconds(5000));
  ::unlink(path.c_str());
}

TEST(QmpClient, MatchesRepliesByIdSkippingEventsAndStaleReplies) {
  std::string path = "/tmp/qmp_test." + std::to_string(::getpid());
  ::unlink(path.c_str());
  auto l = UnixListen(path);
  ASSERT_TRUE(l.ok());
  std::thread qemu([&] {
    auto c = Accept(l->get());
    ASSERT_TRUE(c.ok());
    auto send = [&](const std::string& s) { ASSERT_TRUE(WriteFull(c->get(), s.data(), s.size()).ok()); };
    send(R"({"QMP": {"version": {}, "capabilities": []}})" "\n");
    LineReader r(c->get());
    for (;;) {
      auto line = r.Next();
      if (!line.ok()) return;
      json req = json::parse(*line);
      uint64_t id = req["id"];
      send(json{{"return", "stale"}, {"id", id + 1000}}.dump() + "\n");
      send(R"({"event": "RESUME", "timestamp": {}})" "\n");
      if (req["execute"] == "bad") send(json{{"error", {{"desc", "nope"}}}, {"id", id}}.dump() + "\n");
      else send(json{{"return", {{"cmd", req["execute"]}}}, {"id", id}}.dump() + "\n");
    }
  });
  {  // the client's socket closes at the end of the block; the fake sees EOF
    auto q = QmpClient::Connect(path, 2000);
    EXPECT_TRUE(q.ok()) << q.status().ToString();
    if (q.ok()) {
      auto r = q->Execute("query-status");
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      if (r.ok()) {
        EXPECT_EQ((*r)["cmd"], "query-status");
      }
      auto bad = q->Execute("bad");
      EXPECT_FALSE(bad.ok());
      EXPECT_NE(bad.status().message().find("nope"), std::string::npos);
      EXPECT_EQ(q->TakeEvents().size(), 3u);  // one per command, qmp_capabilities included
    }
  }
  qemu.join();
  ::unlink(path.c_str());
}

TEST(QmpClient, CommandIsBoundedEvenWhileEventsKeepComing) {
  // A QEMU that greets, takes the command, then only chatters (or is
  // silent): the command fails within its timeout, not at the next event.
  std::string path = "/tmp/qmp_test_timeout." + std::to_string(::getpid());
  ::unlink(path.c_str());
  auto l = UnixListen(path);
  ASSERT_TRUE(l.ok());
  std::atomic<bool> done{false};
  std::thread qemu([&] {
    auto c = Accept(l->get());
    ASSERT_TRUE(c.ok());
    LineReader r(c->get());
    GreetAndTakeCapabilities(c->get(), &r);
    auto send = [&](const std::string& s) { return WriteFull(c->get(), s.data(), s.size()).ok(); };
    while (!done && send(R"({"event": "STOP", "timestamp": {}})" "\n"))
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  });
  {
    auto q = QmpClient::Connect(path, 2000);
    ASSERT_TRUE(q.ok()) << q.status().ToString();
    auto start = std::chrono::steady_clock::now();
    auto r = q->Execute("query-status", nullptr, 400);
    auto took = std::chrono::steady_clock::now() - start;
    EXPECT_EQ(r.status().code(), Code::kUnavailable) << r.status().ToString();
    EXPECT_NE(r.status().message().find("no answer within 400 ms"), std::string::npos) << r.status().ToString();
    EXPECT_TRUE(QmpTimedOut(r.status())) << r.status().ToString();
    EXPECT_GE(took, std::chrono::milliseconds(380));
    EXPECT_LT(took, std::chrono::milliseconds(1500));
    done = true;
  }
  qemu.join();
  ::unlink(path.c_str());
}

// Whether QEMU refused a command (it answered with an error: the command did
// not take effect) or its fate is unknown (QEMU died after reading it): a
// destination hands a VM back to its source only in the first case.
TEST(QmpClient, TellsARefusalFromACommandWhoseFateIsUnknown) {
  signal(SIGPIPE, SIG_IGN);  // as agiled: a write to the dead QEMU is an error value
  std::string path = "/tmp/qmp_test_refused." + std::to_string(::getpid());
  ::unlink(path.c_str());
  auto l = UnixListen(path);
  ASSERT_TRUE(l.ok());
  std::thread qemu([&] {
    auto c = Accept(l->get());
    ASSERT_TRUE(c.ok());
    auto send = [&](const std::string& s) { ASSERT_TRUE(WriteFull(c->get(), s.data(), s.size()).ok()); };
    send(R"({"QMP": {"version": {}, "capabilities": []}})" "\n");
    LineReader r(c->get());
    for (;;) {
      auto line = r.Next();
      if (!line.ok()) return;
      json req = json::parse(*line);
      // "cont" is refused; "quit-mid-command" takes the command and dies unanswered.
      if (req["execute"] == "quit-mid-command") return;
      if (req["execute"] == "cont")
        send(json{{"error", {{"class", "GenericError"}, {"desc", "Resetting the Virtual Machine is required"}}},
                  {"id", req["id"]}}.dump() + "\n");
      else send(json{{"return", json::object()}, {"id", req["id"]}}.dump() + "\n");
    }
  });
  {
    auto q = QmpClient::Connect(path, 2000);
    ASSERT_TRUE(q.ok()) << q.status().ToString();
    auto refused = q->Execute("cont");
    ASSERT_FALSE(refused.ok());
    EXPECT_TRUE(QmpRefused(refused.status())) << refused.status().ToString();
    EXPECT_NE(refused.status().message().find("Resetting"), std::string::npos) << refused.status().ToString();
    auto unknown = q->Execute("quit-mid-command", nullptr, 2000);
    ASSERT_FALSE(unknown.ok());
    EXPECT_FALSE(QmpRefused(unknown.status())) << unknown.status().ToString();
    auto after = q->Execute("cont", nullptr, 500);  // the socket is gone: not sent, or no answer
    ASSERT_FALSE(after.ok());
    EXPECT_FALSE(QmpRefused(after.status())) << after.status().ToString();
  }
  qemu.join();
  ::unlink(path.c_str());
}

}  // namespace
}  // namespace agile::qemu
