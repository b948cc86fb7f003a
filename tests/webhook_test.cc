// The event webhook end to end (issue 11): the real server (LinesignServer, in process) with a SoftHSM2 CA, SQLite
// and gRPC, certificates issued over mTLS, and a receiver (cpp-httplib) on loopback that fails every third request
// and stalls once past the timeout. Every event of the log reaches it at least once and in log order, across a
// server restart in the middle, each request signed with the configured secret.
#include <httplib.h>
#include <sys/stat.h>

#include <atomic>
#include <fstream>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "linesign/v1/ca.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "server/lifecycle/webhook.h"
#include "server/server.h"
#include "server/store/sqlite/sqlite_store.h"
#include "tests/testing/certs.h"
#include "tests/testing/test_ca.h"

namespace linesign {
namespace {

// kPatience bounds every wait for deliveries; the bound is for a loaded machine, not a timing assertion.
constexpr absl::Duration kPatience = absl::Seconds(45);

struct Received {
  int64_t cursor = 0;
  std::string type;
  std::string serial_hex;
  std::string body;
  std::string signature;
  int answered = 0;
};

class WebhookE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto ca = testing::TestCa::Create("ec-p256");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = new testing::TestCa(*std::move(ca));
  }
  static void TearDownTestSuite() {
    delete ca_;
    ca_ = nullptr;
  }

  void SetUp() override {
    dir_ = testing::TempDir("webhook-e2e");
    server_.Post("/events", [this](const httplib::Request& req, httplib::Response& res) {
      // Recorded on arrival, in the order the server sent; the stalled request (answered -1: the server gave up
      // on it) counts as no acknowledgement.
      Received r;
      r.body = req.body;
      r.signature = req.get_header_value("X-Linesign-Signature");
      auto j = nlohmann::json::parse(req.body, nullptr, false);
      if (!j.is_discarded()) {
        r.cursor = j.value("cursor", int64_t{0});
        r.type = j.value("type", "");
        r.serial_hex = j.value("serial_hex", "");
      }
      int n;
      {
        std::lock_guard<std::mutex> lock(mu_);
        n = count_++;
        r.answered = always_ok_ ? 200 : n == 3 ? -1 : n % 3 == 2 ? 500 : 200;
        received_.push_back(r);
      }
      if (always_ok_) return;  // 200
      if (n == 3) std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // past the 300 ms timeout
      res.status = n % 3 == 2 ? 500 : 200;
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    secret_file_ = dir_ + "/webhook.secret";
    std::ofstream(secret_file_) << "e2e-secret\n";
    chmod(secret_file_.c_str(), 0600);
  }
  void TearDown() override {
    other_.reset();
    linesign_.reset();
    server_.stop();
    thread_.join();
  }

  // StartServer starts a server (into linesign_, or `into` for a second one) on the test's database.
  void StartServer(std::unique_ptr<LinesignServer>* into = nullptr) {
    v1::ServerConfig c = ca_->Config(dir_ + "/linesign.db");
    c.mutable_events()->set_poll_interval_ms(20);
    auto* w = c.mutable_events()->mutable_webhook();
    w->set_url(absl::StrCat("http://127.0.0.1:", port_, "/events"));
    w->set_timeout_ms(300);
    w->set_max_backoff_ms(200);
    w->set_secret_file(secret_file_);
    auto s = LinesignServer::Start(c);
    ASSERT_TRUE(s.ok()) << s.status();
    (into != nullptr ? *into : linesign_) = *std::move(s);
  }

  std::string Sign(const std::string& cn, LinesignServer* via = nullptr) {
    auto stub = v1::CertificateAuthority::NewStub(
        ca_->Channel((via != nullptr ? via : linesign_.get())->address(), "station-1"));
    v1::SignCsrRequest req;
    req.set_csr_der(testing::Csr("ec-p256", "/CN=" + cn, {"DNS:" + cn + ".example"}));
    req.set_profile("server");
    req.set_request_id("req-" + cn);
    v1::SignCsrResponse resp;
    grpc::ClientContext ctx;
    grpc::Status st = stub->SignCsr(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.serial_hex();
  }

  std::vector<Received> received() {
    std::lock_guard<std::mutex> lock(mu_);
    return received_;
  }

  // WaitForAck waits until the receiver answered 2xx to the event with `cursor`.
  bool WaitForAck(int64_t cursor) {
    absl::Time deadline = absl::Now() + kPatience;
    while (absl::Now() < deadline) {
      for (const auto& r : received()) {
        if (r.cursor == cursor && r.answered / 100 == 2) return true;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    return false;
  }

  std::vector<store::Event> Log() {
    auto store = store::SqliteStore::Open(dir_ + "/linesign.db");
    EXPECT_TRUE(store.ok()) << store.status();
    if (!store.ok()) return {};
    auto events = (*store)->ReadAfter(0, 1000);
    EXPECT_TRUE(events.ok()) << events.status();
    return events.ok() ? *events : std::vector<store::Event>{};
  }

  static testing::TestCa* ca_;
  std::string dir_;
  std::string secret_file_;
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  int count_ = 0;                   // guarded by mu_
  std::vector<Received> received_;  // guarded by mu_
  std::unique_ptr<LinesignServer> linesign_;
  std::unique_ptr<LinesignServer> other_;
  std::atomic<bool> always_ok_{false};  // the receiver acknowledges every request
};

testing::TestCa* WebhookE2eTest::ca_ = nullptr;

TEST_F(WebhookE2eTest, EveryEventArrivesInOrderAcrossARestartWhileTheReceiverFails) {
  StartServer();
  ASSERT_NE(linesign_, nullptr);
  std::vector<std::string> serials;
  for (int i = 0; i < 4; ++i) serials.push_back(Sign(absl::StrCat("HOOK", i)));
  std::vector<store::Event> log = Log();
  ASSERT_EQ(log.size(), 4u);
  ASSERT_TRUE(WaitForAck(log[1].id));
  linesign_.reset();  // a restart in the middle of the log
  StartServer();
  ASSERT_NE(linesign_, nullptr);
  for (int i = 4; i < 7; ++i) serials.push_back(Sign(absl::StrCat("HOOK", i)));
  log = Log();
  ASSERT_EQ(log.size(), 7u);
  ASSERT_TRUE(WaitForAck(log.back().id));

  std::vector<Received> got = received();
  // Order: cursors never go back (a retry repeats the event in hand; a restart at most the one in flight).
  for (size_t i = 1; i < got.size(); ++i) EXPECT_LE(got[i - 1].cursor, got[i].cursor) << "request " << i;
  // First deliveries are exactly the log, in order, each the event the store holds.
  std::vector<int64_t> firsts;
  for (const auto& r : got) {
    if (firsts.empty() || firsts.back() != r.cursor) firsts.push_back(r.cursor);
  }
  std::vector<int64_t> ids;
  for (const auto& e : log) ids.push_back(e.id);
  EXPECT_EQ(firsts, ids);
  for (const auto& r : got) {
    EXPECT_EQ(r.signature, lifecycle::WebhookSender::Signature("e2e-secret", r.body));
    EXPECT_EQ(r.type, "ISSUED");
  }
  for (size_t i = 0; i < log.size(); ++i) {
    bool acked = false;
    for (const auto& r : got) acked |= r.cursor == log[i].id && r.answered == 200 && r.serial_hex == serials[i];
    EXPECT_TRUE(acked) << "event " << log[i].id << " (" << serials[i] << ") never acknowledged";
  }
  // The receiver failed (every third request, one stall) and the server retried.
  EXPECT_GT(got.size(), log.size());
}

// Two servers on one database file: both follow the log, one holds the delivery lease, so with a receiver that
// acknowledges everything each event arrives exactly once, in log order, whichever server issued it.
TEST_F(WebhookE2eTest, TwoServersOnOneDatabaseDeliverEachEventOnce) {
  always_ok_ = true;
  StartServer();
  StartServer(&other_);
  ASSERT_NE(linesign_, nullptr);
  ASSERT_NE(other_, nullptr);
  for (int i = 0; i < 6; ++i) Sign(absl::StrCat("TWIN", i), i % 2 == 0 ? linesign_.get() : other_.get());
  std::vector<store::Event> log = Log();
  ASSERT_EQ(log.size(), 6u);
  ASSERT_TRUE(WaitForAck(log.back().id));
  std::vector<int64_t> got;
  for (const auto& r : received()) got.push_back(r.cursor);
  std::vector<int64_t> ids;
  for (const auto& e : log) ids.push_back(e.id);
  EXPECT_EQ(got, ids);
}

}  // namespace
}  // namespace linesign
