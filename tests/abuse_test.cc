// Abuse of the real server by one station: a stream that sends and never reads, requests whose ids are a
// megabyte long, more streams or calls than the limits allow. Memory is measured as the server process's
// resident set (VmRSS in /proc/<pid>/status) while the abuse goes on. Deadlines only stop waiting; nothing
// asserts how fast anything is.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <atomic>
#include <fstream>
#include <functional>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "linesign/v1/admin.grpc.pb.h"
#include "linesign/v1/ca.grpc.pb.h"
#include "server/config/config.h"
#include "tests/testing/certs.h"
#include "tests/testing/server_process.h"
#include "tests/testing/streams.h"
#include "tests/testing/test_ca.h"

namespace linesign {
namespace {

using ::testing::HasSubstr;
using testing::ServerProcess;
using testing::TestCa;

// kRssBound is how much the server's resident set may grow over its baseline while one stream is abused. The
// stream may hold 128 items and 2 MiB; the rest is gRPC's buffers (its flow-control windows, a 1 MiB message
// being received) and the allocator's slack.
constexpr int64_t kRssBound = 64 << 20;

// VmRss returns the resident set of process `pid` in bytes (-1 when unknown).
int64_t VmRss(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;  // "VmRSS:   12345 kB"
  }
  return -1;
}

class AbuseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The server's allocator (jemalloc) keeps freed pages resident for 10 s to reuse them, so at a megabyte a
    // request its RSS would count what was freed in the last seconds (about 250 MiB at loopback speed, bounded
    // by rate x decay time) rather than what the server holds. Returning them at once makes RSS measure the
    // latter. The child server inherits this; the test binary itself does not use jemalloc.
    setenv("MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0", 1);
    auto ca = TestCa::Create("ec-p256");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::make_unique<TestCa>(*ca);
    db_ = ca_->dir + "/linesign.db";
    config_ = ca_->Config(db_);
  }
  void StartServer() {
    std::string path = testing::WriteConfig(ca_->dir, config::ToYaml(config_));
    auto server = ServerProcess::Start({"--config", path});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }
  void TearDown() override {
    if (server_ != nullptr) {
      auto r = server_->Stop(SIGTERM);
      EXPECT_EQ(r.exit_code, 0) << r.output;
    }
  }
  // Baseline signs one certificate (so that sessions, the store and gRPC are warmed up) and returns the RSS.
  int64_t Baseline() {
    auto stub = v1::CertificateAuthority::NewStub(ca_->Channel(server_->address()));
    v1::SignCsrRequest req;
    req.set_csr_der(testing::Csr("ec-p256", "/CN=WARMUP"));
    req.set_request_id("warm-up");
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::SignCsrResponse resp;
    grpc::Status st = stub->SignCsr(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return VmRss(server_->pid());
  }
  v1::GetStatsResponse Stats() {
    auto admin = v1::Administration::NewStub(ca_->Channel(server_->address(), "admin"));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::GetStatsResponse resp;
    grpc::Status st = admin->GetStats(&ctx, v1::GetStatsRequest(), &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp;
  }
  uint64_t Answered(const std::string& key) {
    auto stats = Stats();
    auto it = stats.answers().find(key);
    return it == stats.answers().end() ? 0 : it->second;
  }

  // StreamRequestsRead returns how many requests the server has read on streams: each is answered (counted) once
  // it is read, whether refused at once or signed.
  uint64_t StreamRequestsRead(v1::Administration::Stub* admin) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::GetStatsResponse resp;
    if (!admin->GetStats(&ctx, v1::GetStatsRequest(), &resp).ok()) return 0;
    uint64_t n = 0;
    for (const auto& [key, count] : resp.answers()) {
      if (key.rfind("SignCsrStream ", 0) == 0) n += count;
    }
    return n;
  }

  // Abuse is what a non-reading stream did to the server.
  struct Abuse {
    uint64_t read = 0;       // requests the server read before the station started reading
    bool stalled = false;    // the server stopped reading before it had read them all
    int64_t most_rss = 0;    // the server's largest resident set meanwhile
    bool cancelled = false;  // the resident set passed baseline + kRssBound and the stream was cancelled
    std::map<std::string, int> answers_by_id;  // after the station started reading
    std::vector<v1::SignCsrStreamResponse> answers;
    grpc::Status status;
  };
  // SendWithoutReading writes `count` requests (`request(i)` is the i-th) on one stream, on a connection of its
  // own, without reading, and watches the server's RSS and how many requests it has read, until it has read
  // them all or has read none for 2 s (it stopped reading) — or its RSS passed `baseline` + kRssBound, when the
  // stream is cancelled so as not to exhaust the machine. Then the station reads every answer, and finishes.
  // (The station's own writes are no measure: gRPC buffers them in the station and in the server's transport, up
  // to the HTTP/2 flow-control window, without the server reading them.)
  Abuse SendWithoutReading(int count, const std::function<const v1::SignCsrRequest&(int)>& request,
                           int64_t baseline) {
    Abuse out;
    auto admin = v1::Administration::NewStub(ca_->Channel(server_->address(), "admin"));
    const uint64_t read_before = StreamRequestsRead(admin.get());
    auto stub = v1::CertificateAuthority::NewStub(ca_->Channel(server_->address()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
    auto stream = stub->SignCsrStream(&ctx);
    std::thread writer([&] {
      for (int i = 0; i < count; ++i) {
        if (!stream->Write(request(i))) break;
      }
      stream->WritesDone();
    });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    auto last_progress = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() < deadline) {
      out.most_rss = std::max(out.most_rss, VmRss(server_->pid()));
      if (out.most_rss - baseline > kRssBound) {
        out.cancelled = true;
        ctx.TryCancel();
        break;
      }
      uint64_t now = StreamRequestsRead(admin.get()) - read_before;
      if (now >= static_cast<uint64_t>(count)) {
        out.read = now;
        break;
      }
      if (now != out.read) {
        out.read = now;
        last_progress = std::chrono::steady_clock::now();
      } else if (std::chrono::steady_clock::now() - last_progress > std::chrono::seconds(2)) {
        out.stalled = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    out.most_rss = std::max(out.most_rss, VmRss(server_->pid()));
    v1::SignCsrStreamResponse resp;
    while (stream->Read(&resp)) {
      ++out.answers_by_id[resp.request_id()];
      out.answers.push_back(resp);
    }
    writer.join();
    out.status = stream->Finish();
    return out;
  }

  std::unique_ptr<TestCa> ca_;
  std::string db_;
  v1::ServerConfig config_;
  std::unique_ptr<ServerProcess> server_;
};

// A station sends 5,000 valid CSRs on a stream and reads nothing. The server holds at most its window (128 items,
// 2 MiB) for the stream, so it stops reading: the station's writes stop, and the server's memory stays within
// the bound. Once the station reads, the rest goes through and every request gets exactly one certificate.
// Before the window counted unwritten answers, every request was read, signed and its answer queued.
TEST_F(AbuseTest, NonReadingStreamOfValidCsrsStopsBeingReadAndHoldsBoundedMemory) {
  StartServer();
  constexpr int kRequests = 5000;
  std::vector<v1::SignCsrRequest> requests(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    requests[i].set_csr_der(testing::Csr("ec-p256", absl::StrCat("/CN=ABUSE", i)));
    requests[i].set_request_id(absl::StrCat("abuse-", i));
  }
  const int64_t baseline = Baseline();
  ASSERT_GT(baseline, 0);
  Abuse a = SendWithoutReading(kRequests, [&](int i) -> const v1::SignCsrRequest& { return requests[i]; }, baseline);

  EXPECT_TRUE(a.stalled) << "the server read " << a.read << " of " << kRequests
                         << " requests from a station that reads nothing";
  EXPECT_LT(a.read, static_cast<uint64_t>(kRequests));
  EXPECT_FALSE(a.cancelled);
  EXPECT_LE(a.most_rss - baseline, kRssBound) << "baseline " << baseline << ", most " << a.most_rss;
  EXPECT_TRUE(a.status.ok()) << a.status.error_message();
  ASSERT_EQ(a.answers.size(), static_cast<size_t>(kRequests));
  for (int i = 0; i < kRequests; ++i) {
    const std::string id = absl::StrCat("abuse-", i);
    EXPECT_EQ(a.answers_by_id[id], 1) << id;
  }
  for (const auto& answer : a.answers) {
    ASSERT_TRUE(answer.has_certificate()) << answer.request_id() << ": " << answer.error().message();
  }
  EXPECT_EQ(std::stoll(testing::SqliteScalar(db_, "SELECT COUNT(*) FROM certificates")), kRequests + 1);
}

// A station sends 1,500 requests whose request ids are a megabyte each (each refused: the id is over 128 bytes)
// and reads nothing. A refusal never echoes the id (its request_id is empty) and its message is short, and the
// stream's window counts refusals too, so the server's memory stays within the bound; once the station reads,
// every request has exactly one refusal. Before, each refusal echoed the megabyte and they queued without limit.
TEST_F(AbuseTest, NonReadingStreamOfMegabyteRequestIdsHoldsBoundedMemoryAndEchoesNoId) {
  StartServer();
  constexpr int kRequests = 1500;
  v1::SignCsrRequest huge;
  huge.set_csr_der(testing::Csr("ec-p256", "/CN=HUGE"));
  huge.set_request_id(std::string(1000000, 'x'));
  const int64_t baseline = Baseline();
  ASSERT_GT(baseline, 0);
  Abuse a = SendWithoutReading(kRequests, [&](int) -> const v1::SignCsrRequest& { return huge; }, baseline);

  EXPECT_FALSE(a.cancelled) << "the server's RSS grew past baseline + 64 MiB";
  EXPECT_LE(a.most_rss - baseline, kRssBound) << "baseline " << baseline << ", most " << a.most_rss;
  EXPECT_TRUE(a.status.ok()) << a.status.error_message();
  EXPECT_EQ(a.answers.size(), static_cast<size_t>(kRequests));
  for (const auto& answer : a.answers) {
    EXPECT_LE(answer.request_id().size(), 128u);
    EXPECT_EQ(answer.request_id(), "");
    ASSERT_TRUE(answer.has_error());
    EXPECT_EQ(answer.error().code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
    EXPECT_EQ(answer.error().message(), "request_id of 1000000 bytes exceeds 128");
  }
  EXPECT_EQ(Answered("SignCsrStream INVALID_ARGUMENT"), static_cast<uint64_t>(kRequests));
  EXPECT_EQ(std::stoll(testing::SqliteScalar(db_, "SELECT COUNT(*) FROM certificates")), 1);
}

// limits.max_streams bounds the streams of all stations together: with 2, two stations' streams are served and a
// third station's is refused with RESOURCE_EXHAUSTED naming the limit; closing one makes room.
TEST_F(AbuseTest, StreamsOverallAreBoundedWithAMessageNamingTheLimit) {
  config_.mutable_limits()->set_max_streams(2);
  StartServer();
  auto first = v1::CertificateAuthority::NewStub(ca_->Channel(server_->address(), "station-1"));
  auto second = v1::CertificateAuthority::NewStub(ca_->Channel(server_->address(), "line1-st1"));
  auto third = v1::CertificateAuthority::NewStub(ca_->Channel(server_->address(), "line1-st2"));
  grpc::ClientContext c1, c2, c3;
  for (grpc::ClientContext* c : {&c1, &c2, &c3}) {  // so that a stream wrongly admitted cannot hang the test
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  }
  v1::SignCsrStreamResponse a1, a2, a3;
  auto s1 = testing::OpenStreamWithOneRequest(&c1, first.get(), "all-1", &a1);
  auto s2 = testing::OpenStreamWithOneRequest(&c2, second.get(), "all-2", &a2);
  ASSERT_TRUE(a1.has_certificate()) << a1.error().message();
  ASSERT_TRUE(a2.has_certificate()) << a2.error().message();
  auto s3 = testing::OpenStreamWithOneRequest(&c3, third.get(), "all-3", &a3);
  EXPECT_FALSE(a3.has_certificate());
  grpc::Status st = s3->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_THAT(st.error_message(), HasSubstr("the server already has 2 SignCsrStream streams open "
                                            "(limits.max_streams 2)"));
  EXPECT_EQ(Answered("SignCsrStream RESOURCE_EXHAUSTED"), 1u);

  s1->WritesDone();
  EXPECT_TRUE(s1->Finish().ok());
  EXPECT_TRUE(testing::StreamAdmittedAgain(third.get(), "all-4-"));
  s2->WritesDone();
  EXPECT_TRUE(s2->Finish().ok());
}

// limits.max_concurrent_streams_per_connection is HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS: with 1, a call on a
// connection that already carries an open stream waits in the client and never reaches the server (here until
// its deadline); once the stream ends, the same connection's next call is served.
TEST_F(AbuseTest, CallsPerConnectionAreBoundedByHttp2) {
  config_.mutable_limits()->set_max_concurrent_streams_per_connection(1);
  StartServer();
  auto stub = v1::CertificateAuthority::NewStub(ca_->Channel(server_->address()));
  grpc::ClientContext sctx;
  sctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto stream = stub->SignCsrStream(&sctx);
  v1::SignCsrRequest req;
  req.set_csr_der(testing::Csr("ec-p256", "/CN=CONN1"));
  req.set_request_id("conn-1");
  v1::SignCsrStreamResponse answer;
  ASSERT_TRUE(stream->Write(req));
  ASSERT_TRUE(stream->Read(&answer));
  ASSERT_TRUE(answer.has_certificate()) << answer.error().message();

  auto sign = [&](const std::string& id, int seconds) {
    v1::SignCsrRequest r;
    r.set_csr_der(testing::Csr("ec-p256", "/CN=" + id));
    r.set_request_id(id);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
    v1::SignCsrResponse resp;
    return stub->SignCsr(&ctx, r, &resp);
  };
  grpc::Status waited = sign("conn-2", 2);
  EXPECT_EQ(waited.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << waited.error_message();
  auto stats = Stats();
  for (const auto& [key, n] : stats.answers()) EXPECT_THAT(key, ::testing::Not(HasSubstr("SignCsr "))) << n;

  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  grpc::Status served = sign("conn-3", 60);
  EXPECT_TRUE(served.ok()) << served.error_message();
}

}  // namespace
}  // namespace linesign
