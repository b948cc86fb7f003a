// WebhookSender against a real SQLite store and a real HTTP receiver (cpp-httplib) on loopback: every event is
// delivered at least once and in log order while the receiver fails intermittently and stalls past the timeout;
// a new sender (a restarted server) continues from the stored cursor; a second sender on the same database waits
// for the lease; the signature verifies.
#include "server/lifecycle/webhook.h"

#include <httplib.h>
#include <sys/stat.h>

#include <fstream>
#include <mutex>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/store/sqlite/sqlite_store.h"
#include "tests/testing/test_ca.h"

namespace linesign::lifecycle {
namespace {

using ::testing::HasSubstr;

// kPatience bounds every wait for deliveries; the bound is for a loaded machine, not a timing assertion.
constexpr absl::Duration kPatience = absl::Seconds(45);

// Receiver is the webhook's far end: it records each request and answers as `answer` says for the n-th one
// (0-based): a status, or -1 to stall past the sender's timeout before answering 200.
class Receiver {
 public:
  struct Request {
    int64_t cursor = 0;
    std::string body;
    std::string signature;
    int answered = 0;
  };
  explicit Receiver(std::function<int(int n)> answer) : answer_(std::move(answer)) {
    server_.Post("/hook", [this](const httplib::Request& req, httplib::Response& res) {
      // Recorded on arrival, so the list is in the order the sender sent; a stalled request (answered -1: the
      // sender gave up on it) counts as no acknowledgement.
      Request r;
      r.body = req.body;
      r.signature = req.get_header_value("X-Linesign-Signature");
      auto j = nlohmann::json::parse(req.body, nullptr, false);
      if (!j.is_discarded()) r.cursor = j.value("cursor", int64_t{0});
      int status;
      {
        std::lock_guard<std::mutex> lock(mu_);
        status = answer_(count_++);
        r.answered = status;
        requests_.push_back(r);
      }
      if (status < 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // past the sender's 300 ms timeout
        status = 200;
      }
      res.status = status;
      res.set_content("ok", "text/plain");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~Receiver() {
    server_.stop();
    thread_.join();
  }
  std::string url() const { return absl::StrCat("http://127.0.0.1:", port_, "/hook"); }
  std::vector<Request> requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  // WaitForAck waits until a request for `cursor` was answered 2xx.
  bool WaitForAck(int64_t cursor) {
    absl::Time deadline = absl::Now() + kPatience;
    while (absl::Now() < deadline) {
      for (const auto& r : requests()) {
        if (r.cursor == cursor && r.answered / 100 == 2) return true;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    return false;
  }

 private:
  std::function<int(int)> answer_;
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  int count_ = 0;                  // guarded by mu_
  std::vector<Request> requests_;  // guarded by mu_
};

class WebhookTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir("webhook");
    auto s = store::SqliteStore::Open(dir_ + "/linesign.db");
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
  }

  // Append records `n` events (standalone RENEWAL_DUE events, each about its own serial) and returns their ids.
  std::vector<int64_t> Append(int n) {
    store::Batch batch;
    for (int i = 0; i < n; ++i) {
      store::Event e;
      e.type = store::kEventRenewalDue;
      e.serial_hex = absl::StrCat("0A", next_serial_++);
      e.station = "station-1";
      e.profile = "server";
      e.time = absl::FromUnixSeconds(1760000000 + i);
      e.data = R"({"renews":"01"})";
      batch.events.push_back(e);
    }
    auto out = store_->RecordBatch(batch);
    EXPECT_TRUE(out.ok()) << out.status();
    auto events = store_->ReadAfter(last_, 1000);
    EXPECT_TRUE(events.ok()) << events.status();
    std::vector<int64_t> ids;
    for (const auto& e : *events) ids.push_back(e.id);
    if (!ids.empty()) last_ = ids.back();
    return ids;
  }

  std::unique_ptr<WebhookSender> Sender(const std::string& url, const std::string& owner,
                                        const std::string& secret_file = "") {
    auto s = WebhookSender::Create(store_.get(), store_.get(),
                                   {.url = url, .timeout = absl::Milliseconds(300),
                                    .max_backoff = absl::Milliseconds(200), .secret_file = secret_file,
                                    .owner = owner, .interval = absl::Milliseconds(10)});
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *std::move(s) : nullptr;
  }

  // Drive runs `sender` as the task runner would (its first round only returns) until `done` or patience ends.
  static void Drive(WebhookSender* sender, const std::function<bool()>& done) {
    absl::Time deadline = absl::Now() + kPatience;
    while (!done() && absl::Now() < deadline) {
      sender->RunOnce(absl::Now()).IgnoreError();
      absl::SleepFor(absl::Milliseconds(5));
    }
  }

  std::string dir_;
  std::unique_ptr<store::SqliteStore> store_;
  int next_serial_ = 10;
  int64_t last_ = 0;
};

// The order a receiver must see: cursors never go back (a retry repeats the event in hand; nothing earlier is
// sent again) and every id is acknowledged.
void ExpectInOrderAndComplete(const std::vector<Receiver::Request>& got, const std::vector<int64_t>& ids) {
  for (size_t i = 1; i < got.size(); ++i) {
    EXPECT_LE(got[i - 1].cursor, got[i].cursor) << "request " << i << " went back in the log";
  }
  for (int64_t id : ids) {
    bool acked = false;
    for (const auto& r : got) acked |= r.cursor == id && r.answered / 100 == 2;
    EXPECT_TRUE(acked) << "event " << id << " never acknowledged";
  }
}

TEST_F(WebhookTest, EveryEventArrivesInOrderWhileTheReceiverFailsAndAfterARestart) {
  // Every third request 500, one 404 (retried all the same), one stalls past the timeout.
  Receiver receiver([](int n) {
    if (n == 4) return -1;
    if (n == 7) return 404;
    return n % 3 == 2 ? 500 : 200;
  });
  std::vector<int64_t> ids = Append(8);
  ASSERT_EQ(ids.size(), 8u);
  {
    auto first = Sender(receiver.url(), "server-a");
    ASSERT_NE(first, nullptr);
    Drive(first.get(), [&] { return first->cursor() >= ids[4]; });
    EXPECT_GE(first->failed(), 3);
    first->OnStop();  // a server stopping in the middle of the log
  }
  // The restart: a new sender (new process) on the same database, with more events recorded meanwhile.
  std::vector<int64_t> more = Append(6);
  ids.insert(ids.end(), more.begin(), more.end());
  auto second = Sender(receiver.url(), "server-b");
  ASSERT_NE(second, nullptr);
  Drive(second.get(), [&] { return second->cursor() >= ids.back(); });
  ASSERT_TRUE(receiver.WaitForAck(ids.back()));
  std::vector<Receiver::Request> got = receiver.requests();
  ExpectInOrderAndComplete(got, ids);
  // The first delivery of each event comes in log order, and nothing but the event in hand is repeated.
  std::vector<int64_t> firsts;
  for (const auto& r : got) {
    if (firsts.empty() || firsts.back() != r.cursor) firsts.push_back(r.cursor);
  }
  EXPECT_EQ(firsts, ids);
  // The stalled request and the 404 were retried.
  EXPECT_EQ(got[4].cursor, got[5].cursor);
  EXPECT_EQ(got[7].answered, 404);
  EXPECT_EQ(got[7].cursor, got[8].cursor);
  // The body carries the event.
  auto j = nlohmann::json::parse(got.back().body);
  EXPECT_EQ(j["cursor"], ids.back());
  EXPECT_EQ(j["type"], "RENEWAL_DUE");
  EXPECT_EQ(j["station"], "station-1");
  EXPECT_EQ(j["profile"], "server");
  EXPECT_EQ(j["data"]["renews"], "01");
  EXPECT_THAT(j["time"].get<std::string>(), HasSubstr("T"));
}

TEST_F(WebhookTest, OnlyTheLeaseHolderDelivers) {
  Receiver receiver([](int) { return 200; });
  std::vector<int64_t> ids = Append(5);
  auto a = Sender(receiver.url(), "server-a");
  auto b = Sender(receiver.url(), "server-b");
  a->RunOnce(absl::Now()).IgnoreError();  // the runner's first rounds do nothing
  b->RunOnce(absl::Now()).IgnoreError();
  ASSERT_TRUE(a->RunOnce(absl::Now()).ok());  // takes the lease, delivers
  ASSERT_TRUE(b->RunOnce(absl::Now()).ok());  // finds it held: nothing sent
  EXPECT_EQ(a->delivered(), 5);
  EXPECT_EQ(b->delivered(), 0);
  a->OnStop();
  std::vector<int64_t> more = Append(2);
  Drive(b.get(), [&] { return b->cursor() >= more.back(); });
  EXPECT_EQ(b->delivered(), 2);
  ids.insert(ids.end(), more.begin(), more.end());
  std::vector<Receiver::Request> got = receiver.requests();
  ASSERT_EQ(got.size(), ids.size());  // no failures, so no duplicates at all
  ExpectInOrderAndComplete(got, ids);
  // The store refuses an advance by a process that does not hold the lease.
  absl::Status st = store_->AdvanceCursor(WebhookSender::kCursorName, "server-a", ids.back() + 1, absl::Now(),
                                          absl::Seconds(10));
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("'server-b' holds it"));
}

TEST_F(WebhookTest, TheSignatureVerifies) {
  const std::string secret_file = dir_ + "/webhook.secret";
  {
    std::ofstream(secret_file) << "s3cret-value\n";
  }
  chmod(secret_file.c_str(), 0600);
  Receiver receiver([](int) { return 200; });
  std::vector<int64_t> ids = Append(2);
  auto s = Sender(receiver.url(), "server-a", secret_file);
  ASSERT_NE(s, nullptr);
  Drive(s.get(), [&] { return s->cursor() >= ids.back(); });
  std::vector<Receiver::Request> got = receiver.requests();
  ASSERT_EQ(got.size(), 2u);
  for (const auto& r : got) {
    EXPECT_EQ(r.signature, WebhookSender::Signature("s3cret-value", r.body));
    EXPECT_THAT(r.signature, ::testing::StartsWith("sha256="));
  }
  // RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?").
  EXPECT_EQ(WebhookSender::Signature("Jefe", "what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(WebhookBackoffTest, DoublesUpToTheCapWithFullJitter) {
  const absl::Duration max = absl::Seconds(1);
  EXPECT_EQ(WebhookSender::Backoff(1, max, 0.5), absl::Milliseconds(50));
  EXPECT_EQ(WebhookSender::Backoff(2, max, 0.5), absl::Milliseconds(100));
  EXPECT_EQ(WebhookSender::Backoff(4, max, 0.5), absl::Milliseconds(400));
  EXPECT_EQ(WebhookSender::Backoff(5, max, 0.5), absl::Milliseconds(500));    // capped at 1 s
  EXPECT_EQ(WebhookSender::Backoff(1000, max, 0.5), absl::Milliseconds(500));  // no overflow
  EXPECT_EQ(WebhookSender::Backoff(3, max, 0.0), absl::ZeroDuration());
}

TEST(WebhookCreateTest, RefusesBadOptionsByName) {
  auto bad = [](WebhookSender::Options o) { return WebhookSender::Create(nullptr, nullptr, std::move(o)).status(); };
  EXPECT_THAT(bad({.url = "ftp://x/", .owner = "o"}).message(), HasSubstr("events.webhook.url"));
  EXPECT_THAT(bad({.url = "http://x/", .secret_file = "/nonexistent/secret", .owner = "o"}).message(),
              HasSubstr("events.webhook.secret_file"));
}

TEST(WebhookUrlTest, ParsesAndRefuses) {
  auto u = ParseWebhookUrl("https://hooks.example:8443/in?x=1");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->origin(), "https://hooks.example:8443");
  EXPECT_EQ(u->path, "/in?x=1");
  EXPECT_EQ(ParseWebhookUrl("http://h")->path, "/");
  EXPECT_EQ(ParseWebhookUrl("http://h")->port, 80);
  EXPECT_EQ(ParseWebhookUrl("http://[::1]:81/a")->host, "[::1]");
  for (const char* bad : {"ftp://h/", "http:///x", "http://h:0/", "http://h:99999/", "http://u:p@h/", "http://h/#f",
                          "h/x", "http://h:/"}) {
    EXPECT_FALSE(ParseWebhookUrl(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace linesign::lifecycle
