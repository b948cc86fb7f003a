// Line-rate behaviour of the real server: many streams and unary callers at once, idempotency across a restart,
// backpressure (unary refused, streams slowed), a store that fails mid-run, and a drain on SIGTERM under load.
// No timings are asserted: only that every answer is right, complete and durable. Where a test needs the server
// to be busy at a given moment, it holds the database's write lock from a connection of its own (as another
// process would): the store then waits (its busy timeout is 5 s), so work stays in flight for as long as the test
// needs, deterministically, and is released well before that timeout.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sqlite3.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/openssl_util.h"
#include "gmock/gmock.h"
#include "grpcpp/health_check_service_interface.h"
#include "gtest/gtest.h"
#include "linesign/v1/admin.grpc.pb.h"
#include "linesign/v1/ca.grpc.pb.h"
#include "server/config/config.h"
#include "tests/testing/certs.h"
#include "tests/testing/db_write_lock.h"
#include "tests/testing/server_process.h"
#include "tests/testing/streams.h"
#include "tests/testing/test_ca.h"

namespace linesign {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::ServerProcess;
using testing::TestCa;

// SpkiOfCsr returns the SubjectPublicKeyInfo DER of a DER CSR.
std::string SpkiOfCsr(const std::string& der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  OsslPtr<X509_REQ> req(d2i_X509_REQ(nullptr, &p, static_cast<long>(der.size())));
  return req == nullptr ? "" : PublicKeyDer(X509_REQ_get0_pubkey(req.get()));
}

std::string SpkiOfCertificate(const std::string& der) {
  auto cert = testing::ParseDer(der);
  return cert == nullptr ? "" : PublicKeyDer(X509_get0_pubkey(cert.get()));
}

// WaitFor polls `done` every 20 ms for up to `limit`; returns its last value.
template <typename F>
bool WaitFor(F done, absl::Duration limit = absl::Seconds(4)) {
  absl::Time deadline = absl::Now() + limit;
  while (!done()) {
    if (absl::Now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

class LineRateTest : public ::testing::Test {
 protected:
  void SetUp() override {
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
    stub_ = v1::CertificateAuthority::NewStub(ca_->Channel(server_->address()));
  }
  void TearDown() override {
    if (server_ != nullptr) {
      auto r = server_->Stop(SIGTERM);
      EXPECT_EQ(r.exit_code, 0) << r.output;
    }
  }

  grpc::Status Sign(const std::string& csr, const std::string& id, v1::SignCsrResponse* resp,
                    v1::CertificateAuthority::Stub* stub = nullptr) {
    v1::SignCsrRequest req;
    req.set_csr_der(csr);
    req.set_request_id(id);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    return (stub != nullptr ? stub : stub_.get())->SignCsr(&ctx, req, resp);
  }
  // Stats asks the server's GetStats as the administrator.
  v1::GetStatsResponse Stats() {
    if (admin_ == nullptr) admin_ = v1::Administration::NewStub(ca_->Channel(server_->address(), "admin"));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::GetStatsResponse resp;
    grpc::Status st = admin_->GetStats(&ctx, v1::GetStatsRequest(), &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp;
  }
  int64_t Rows() { return std::stoll(testing::SqliteScalar(db_, "SELECT COUNT(*) FROM certificates")); }
  bool Recorded(const std::string& serial_hex, const std::string& der) {
    return testing::SqliteScalar(db_, absl::StrCat("SELECT hex(der) FROM certificates WHERE serial='", serial_hex,
                                                   "'")) == Hex(der);
  }

  // StreamResult is what one stream got back.
  struct StreamResult {
    std::map<std::string, v1::SignCsrStreamResponse> answers;  // by request id
    int duplicates = 0;
    grpc::Status status;
  };
  // RunStream sends `csrs` on one stream (a channel of its own) with ids `ids` (prefix-i when empty), then reads
  // until the server finishes.
  StreamResult RunStream(const std::vector<std::string>& csrs, const std::string& prefix,
                         const std::vector<std::string>& ids = {}) {
    StreamResult out;
    auto stub = v1::CertificateAuthority::NewStub(ca_->Channel(server_->address()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    auto stream = stub->SignCsrStream(&ctx);
    std::thread writer([&] {
      for (size_t i = 0; i < csrs.size(); ++i) {
        v1::SignCsrRequest req;
        req.set_csr_der(csrs[i]);
        req.set_request_id(ids.empty() ? absl::StrCat(prefix, "-", i) : ids[i]);
        if (!stream->Write(req)) break;
      }
      stream->WritesDone();
    });
    v1::SignCsrStreamResponse resp;
    while (stream->Read(&resp)) {
      if (!out.answers.emplace(resp.request_id(), resp).second) ++out.duplicates;
    }
    writer.join();
    out.status = stream->Finish();
    return out;
  }

  std::unique_ptr<TestCa> ca_;
  std::string db_;
  v1::ServerConfig config_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::CertificateAuthority::Stub> stub_;
  std::unique_ptr<v1::Administration::Stub> admin_;
};

TEST_F(LineRateTest, ManyStreamsAndUnaryCallersEachGetTheirOwnDurableCertificate) {
  StartServer();
  constexpr int kStreams = 4, kPerStream = 300, kUnaryThreads = 8, kPerThread = 50;
  std::vector<std::vector<std::string>> stream_csrs(kStreams);
  for (int s = 0; s < kStreams; ++s) {
    for (int i = 0; i < kPerStream; ++i) stream_csrs[s].push_back(testing::Csr("ec-p256", absl::StrCat("/CN=S", s, "-", i)));
  }
  std::vector<StreamResult> streams(kStreams);
  struct Unary {
    std::string id, csr;
    grpc::Status status;
    v1::SignCsrResponse answer;
  };
  std::vector<std::vector<Unary>> unary(kUnaryThreads, std::vector<Unary>(kPerThread));
  for (int t = 0; t < kUnaryThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) {
      unary[t][i].id = absl::StrCat("unary", t, "-", i);
      unary[t][i].csr = testing::Csr("ec-p256", absl::StrCat("/CN=U", t, "-", i));
    }
  }
  std::vector<std::thread> threads;
  for (int s = 0; s < kStreams; ++s) {
    threads.emplace_back([&, s] { streams[s] = RunStream(stream_csrs[s], absl::StrCat("stream", s)); });
  }
  for (int t = 0; t < kUnaryThreads; ++t) {
    threads.emplace_back([&, t] {
      for (Unary& u : unary[t]) u.status = Sign(u.csr, u.id, &u.answer);
    });
  }
  for (auto& t : threads) t.join();

  // What the store holds, read once: serial -> DER (hex) and serial -> "station request_id".
  const auto der_by_serial = testing::SqliteMap(db_, "SELECT serial, hex(der) FROM certificates");
  const auto request_by_serial =
      testing::SqliteMap(db_, "SELECT serial, station || ' ' || request_id FROM certificates");
  std::set<std::string> serials;
  auto check = [&](const std::string& csr, const v1::SignCsrResponse& r, const std::string& id) {
    EXPECT_EQ(r.request_id(), id);
    EXPECT_FALSE(r.replayed()) << id;
    EXPECT_EQ(SpkiOfCertificate(r.certificate_der()), SpkiOfCsr(csr)) << id;
    EXPECT_TRUE(serials.insert(r.serial_hex()).second) << "serial repeated: " << r.serial_hex();
    auto der = der_by_serial.find(r.serial_hex());
    ASSERT_NE(der, der_by_serial.end()) << id << ": serial " << r.serial_hex() << " is not in the store";
    EXPECT_EQ(der->second, Hex(r.certificate_der())) << id;
    EXPECT_EQ(request_by_serial.at(r.serial_hex()), "station-1 " + id);
    auto cert = testing::ParseDer(r.certificate_der());
    ASSERT_NE(cert, nullptr) << id;
    EXPECT_EQ(testing::VerifyChain(cert.get(), ca_->root_pem, ca_->chain_pem), "") << id;
  };
  for (int s = 0; s < kStreams; ++s) {
    EXPECT_TRUE(streams[s].status.ok()) << streams[s].status.error_message();
    EXPECT_EQ(streams[s].duplicates, 0);
    EXPECT_EQ(streams[s].answers.size(), static_cast<size_t>(kPerStream));  // no answer to an unknown id either
    for (int i = 0; i < kPerStream; ++i) {
      std::string id = absl::StrCat("stream", s, "-", i);
      auto a = streams[s].answers.find(id);
      if (a == streams[s].answers.end()) {
        ADD_FAILURE() << id << ": no answer";
        continue;
      }
      ASSERT_TRUE(a->second.has_certificate()) << id << ": " << a->second.error().message();
      check(stream_csrs[s][i], a->second.certificate(), id);
    }
  }
  for (const auto& thread : unary) {
    for (const Unary& u : thread) {
      ASSERT_TRUE(u.status.ok()) << u.id << ": " << u.status.error_message();
      check(u.csr, u.answer, u.id);
    }
  }
  EXPECT_EQ(serials.size(), static_cast<size_t>(kStreams * kPerStream + kUnaryThreads * kPerThread));
  EXPECT_EQ(der_by_serial.size(), serials.size());
  EXPECT_EQ(Rows(), static_cast<int64_t>(serials.size()));
}

// Certificates issued over both RPCs before a restart are replayed after it, byte for byte, over the other RPC:
// idempotency lives in the database, not in the process.
TEST_F(LineRateTest, RetryAfterRestartReturnsTheSameCertificate) {
  StartServer();
  constexpr int kEach = 10;
  std::vector<std::string> unary_csrs, stream_csrs, unary_ids, stream_ids;
  std::vector<v1::SignCsrResponse> unary_first(kEach);
  for (int i = 0; i < kEach; ++i) {
    unary_csrs.push_back(testing::Csr("ec-p256", absl::StrCat("/CN=RESTARTU", i)));
    unary_ids.push_back(absl::StrCat("restart-u", i));
    stream_csrs.push_back(testing::Csr("ec-p256", absl::StrCat("/CN=RESTARTS", i)));
    stream_ids.push_back(absl::StrCat("restart-s", i));
    grpc::Status st = Sign(unary_csrs[i], unary_ids[i], &unary_first[i]);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  StreamResult stream_first = RunStream(stream_csrs, "", stream_ids);
  ASSERT_TRUE(stream_first.status.ok()) << stream_first.status.error_message();
  ASSERT_EQ(stream_first.answers.size(), static_cast<size_t>(kEach));
  for (const auto& [id, a] : stream_first.answers) ASSERT_TRUE(a.has_certificate()) << id;
  ASSERT_EQ(Rows(), 2 * kEach);

  auto stopped = server_->Stop(SIGTERM);
  ASSERT_EQ(stopped.exit_code, 0) << stopped.output;
  server_.reset();
  StartServer();  // the same database and configuration

  // Unary-issued ids retried on a stream, stream-issued ids retried unary.
  StreamResult again = RunStream(unary_csrs, "", unary_ids);
  ASSERT_TRUE(again.status.ok()) << again.status.error_message();
  for (int i = 0; i < kEach; ++i) {
    auto a = again.answers.find(unary_ids[i]);
    ASSERT_NE(a, again.answers.end()) << unary_ids[i];
    ASSERT_TRUE(a->second.has_certificate()) << unary_ids[i] << ": " << a->second.error().message();
    EXPECT_TRUE(a->second.certificate().replayed());
    EXPECT_EQ(a->second.certificate().certificate_der(), unary_first[i].certificate_der());
    EXPECT_EQ(a->second.certificate().serial_hex(), unary_first[i].serial_hex());
  }
  for (int i = 0; i < kEach; ++i) {
    v1::SignCsrResponse r;
    grpc::Status st = Sign(stream_csrs[i], stream_ids[i], &r);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_TRUE(r.replayed());
    EXPECT_EQ(r.request_id(), stream_ids[i]);
    EXPECT_EQ(r.certificate_der(), stream_first.answers.at(stream_ids[i]).certificate().certificate_der());
  }
  EXPECT_EQ(Rows(), 2 * kEach);

  // The same id with a different CSR: refused, with the earlier serial named, on both RPCs.
  v1::SignCsrResponse other;
  grpc::Status st = Sign(testing::Csr("ec-p256", "/CN=OTHER"), "restart-u3", &other);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(st.error_message(), HasSubstr("request_id 'restart-u3' was already used by station 'station-1' for a "
                                            "different CSR (certificate serial " + unary_first[3].serial_hex()));
  EXPECT_TRUE(other.certificate_der().empty());
  StreamResult reused = RunStream({testing::Csr("ec-p256", "/CN=OTHER")}, "", {"restart-s4"});
  ASSERT_TRUE(reused.status.ok()) << reused.status.error_message();
  ASSERT_EQ(reused.answers.count("restart-s4"), 1u);
  const auto& refused = reused.answers.at("restart-s4");
  EXPECT_FALSE(refused.has_certificate());
  EXPECT_EQ(refused.error().code(), static_cast<int>(grpc::StatusCode::ALREADY_EXISTS));
  EXPECT_THAT(refused.error().message(), HasSubstr("use a new request_id for a new CSR"));
  EXPECT_EQ(Rows(), 2 * kEach);
}

// One worker, a one-slot queue, batches of one: while the store is held, the worker is stuck on the first request
// and the second fills the queue, so every further concurrent unary call is refused — exactly kCalls - 2 of them.
TEST_F(LineRateTest, FullQueueRefusesUnaryCallsAndRecovers) {
  config_.mutable_signer()->set_workers(1);
  config_.mutable_signer()->set_queue_size(1);
  config_.mutable_signer()->set_max_batch(1);
  StartServer();
  v1::SignCsrResponse warm;
  ASSERT_TRUE(Sign(testing::Csr("ec-p256", "/CN=WARM"), "warm", &warm).ok());  // connected, worker idle

  constexpr int kCalls = 12;
  std::vector<std::string> csrs;
  for (int i = 0; i < kCalls; ++i) csrs.push_back(testing::Csr("ec-p256", absl::StrCat("/CN=FULL", i)));
  std::vector<grpc::Status> statuses(kCalls);
  std::vector<v1::SignCsrResponse> answers(kCalls);
  std::atomic<int> refused{0};
  std::vector<std::thread> threads;
  {
    testing::DbWriteLock lock(db_);
    ASSERT_TRUE(lock.held());
    for (int i = 0; i < kCalls; ++i) {
      threads.emplace_back([&, i] {
        statuses[i] = Sign(csrs[i], absl::StrCat("full-", i), &answers[i]);
        if (statuses[i].error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) ++refused;
      });
    }
    EXPECT_TRUE(WaitFor([&] { return refused.load() >= kCalls - 2; })) << refused.load() << " refused";
  }  // the store is free again: the two accepted calls complete
  for (auto& t : threads) t.join();

  int issued = 0;
  for (int i = 0; i < kCalls; ++i) {
    if (statuses[i].ok()) {
      ++issued;
      EXPECT_TRUE(Recorded(answers[i].serial_hex(), answers[i].certificate_der()));
      EXPECT_EQ(SpkiOfCertificate(answers[i].certificate_der()), SpkiOfCsr(csrs[i]));
    } else {
      EXPECT_EQ(statuses[i].error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << statuses[i].error_message();
      EXPECT_THAT(statuses[i].error_message(), HasSubstr("signing queue is full (1 requests); retry with backoff"));
      EXPECT_TRUE(answers[i].certificate_der().empty());
    }
  }
  EXPECT_EQ(refused.load(), kCalls - 2);
  EXPECT_EQ(issued, 2);
  EXPECT_EQ(Rows(), 1 + issued);
  // Recovered: the refused ids, retried one at a time, are issued (they left no trace to replay).
  for (int i = 0; i < kCalls; ++i) {
    if (statuses[i].ok()) continue;
    v1::SignCsrResponse again;
    grpc::Status st = Sign(csrs[i], absl::StrCat("full-", i), &again);
    EXPECT_TRUE(st.ok()) << st.error_message();
    EXPECT_FALSE(again.replayed());
  }
  EXPECT_EQ(Rows(), 1 + kCalls);
}

// The same one-slot queue, full while a stream pushes 500 requests: the stream is never refused, the queue grows
// by at most the stream's window (128 in flight) — bounded, not with the stream's length — and a unary call made
// meanwhile is refused because the shared queue is full.
TEST_F(LineRateTest, StreamIsSlowedNotRefusedByAFullQueue) {
  constexpr uint64_t kQueueSize = 1, kWindow = 128;
  config_.mutable_signer()->set_workers(1);
  config_.mutable_signer()->set_queue_size(kQueueSize);
  config_.mutable_signer()->set_max_batch(16);
  config_.mutable_signer()->set_max_linger_us(1000);
  StartServer();
  std::vector<std::string> csrs;
  for (int i = 0; i < 500; ++i) csrs.push_back(testing::Csr("ec-p256", absl::StrCat("/CN=SLOW", i)));
  StreamResult r;
  std::thread stream;
  uint64_t most_queued = 0;
  {
    testing::DbWriteLock lock(db_);
    ASSERT_TRUE(lock.held());
    stream = std::thread([&] { r = RunStream(csrs, "slow"); });
    // The worker holds one batch (at most 16); the rest of the window waits in the queue.
    EXPECT_TRUE(WaitFor([&] {
      most_queued = std::max(most_queued, Stats().queued());
      return most_queued >= kWindow - 16;
    })) << most_queued << " queued";
    v1::SignCsrResponse refused;
    grpc::Status st = Sign(testing::Csr("ec-p256", "/CN=UNARY"), "unary-while-full", &refused);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the stream keeps writing; the window holds
    most_queued = std::max(most_queued, Stats().queued());
  }
  stream.join();
  EXPECT_LE(most_queued, kQueueSize + kWindow);
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.duplicates, 0);
  ASSERT_EQ(r.answers.size(), csrs.size());
  for (int i = 0; i < 500; ++i) {
    std::string id = absl::StrCat("slow-", i);
    auto a = r.answers.find(id);
    ASSERT_NE(a, r.answers.end()) << id;
    ASSERT_TRUE(a->second.has_certificate()) << id << ": " << a->second.error().message();
    EXPECT_EQ(SpkiOfCertificate(a->second.certificate().certificate_der()), SpkiOfCsr(csrs[i])) << id;
  }
  EXPECT_EQ(Rows(), 500);
  auto stats = Stats();
  EXPECT_EQ(stats.answers().count("SignCsrStream RESOURCE_EXHAUSTED"), 0u);
  EXPECT_EQ(stats.answers().at("SignCsrStream OK"), 500u);
  EXPECT_EQ(stats.answers().at("SignCsr RESOURCE_EXHAUSTED"), 1u);
}

// A real commit failure under the running server: a trigger added by another connection writes a row violating a
// deferred foreign key, so every COMMIT fails. Unary calls and a stream's requests, batched together, all get
// UNAVAILABLE and no certificate bytes; nothing is recorded. Without the trigger the same ids are issued.
TEST_F(LineRateTest, FailedCommitFailsTheBatchAndReleasesNothing) {
  config_.mutable_signer()->set_workers(1);
  StartServer();
  v1::SignCsrResponse warm;
  ASSERT_TRUE(Sign(testing::Csr("ec-p256", "/CN=WARM"), "warm", &warm).ok());
  ASSERT_EQ(testing::SqliteExec(db_, R"sql(
      CREATE TABLE t_parent (id INTEGER PRIMARY KEY);
      CREATE TABLE t_child (parent INTEGER REFERENCES t_parent (id) DEFERRABLE INITIALLY DEFERRED);
      CREATE TRIGGER t_fail_commit AFTER INSERT ON certificates BEGIN INSERT INTO t_child VALUES (42); END;)sql"),
            "");

  constexpr int kUnary = 4, kStream = 20;
  std::vector<std::string> unary_csrs, stream_csrs;
  for (int i = 0; i < kUnary; ++i) unary_csrs.push_back(testing::Csr("ec-p256", absl::StrCat("/CN=FAILU", i)));
  for (int i = 0; i < kStream; ++i) stream_csrs.push_back(testing::Csr("ec-p256", absl::StrCat("/CN=FAILS", i)));
  auto run = [&](std::vector<grpc::Status>* statuses, std::vector<v1::SignCsrResponse>* answers, StreamResult* sr) {
    std::vector<std::thread> threads;
    for (int i = 0; i < kUnary; ++i) {
      threads.emplace_back(
          [&, i] { (*statuses)[i] = Sign(unary_csrs[i], absl::StrCat("fail-u", i), &(*answers)[i]); });
    }
    threads.emplace_back([&] { *sr = RunStream(stream_csrs, "fail-s"); });
    for (auto& t : threads) t.join();
  };
  std::vector<grpc::Status> statuses(kUnary);
  std::vector<v1::SignCsrResponse> answers(kUnary);
  StreamResult sr;
  run(&statuses, &answers, &sr);
  const std::string why = "certificate not issued: store: commit: FOREIGN KEY constraint failed";
  for (int i = 0; i < kUnary; ++i) {
    EXPECT_EQ(statuses[i].error_code(), grpc::StatusCode::UNAVAILABLE) << statuses[i].error_message();
    EXPECT_THAT(statuses[i].error_message(), HasSubstr(why));
    EXPECT_TRUE(answers[i].certificate_der().empty());
  }
  EXPECT_TRUE(sr.status.ok()) << sr.status.error_message();
  EXPECT_EQ(sr.answers.size(), static_cast<size_t>(kStream));
  for (const auto& [id, a] : sr.answers) {
    ASSERT_FALSE(a.has_certificate()) << id << ": certificate released although its commit failed";
    EXPECT_EQ(a.error().code(), static_cast<int>(grpc::StatusCode::UNAVAILABLE)) << id;
    EXPECT_THAT(a.error().message(), HasSubstr(why));
  }
  EXPECT_EQ(Rows(), 1);
  EXPECT_EQ(testing::SqliteScalar(db_, "SELECT COUNT(*) FROM t_child"), "0");

  ASSERT_EQ(testing::SqliteExec(db_, "DROP TRIGGER t_fail_commit"), "");
  run(&statuses, &answers, &sr);
  for (int i = 0; i < kUnary; ++i) {
    ASSERT_TRUE(statuses[i].ok()) << statuses[i].error_message();
    EXPECT_FALSE(answers[i].replayed());
    EXPECT_TRUE(Recorded(answers[i].serial_hex(), answers[i].certificate_der()));
  }
  EXPECT_EQ(sr.answers.size(), static_cast<size_t>(kStream));
  for (const auto& [id, a] : sr.answers) {
    ASSERT_TRUE(a.has_certificate()) << id << ": " << a.error().message();
    EXPECT_TRUE(Recorded(a.certificate().serial_hex(), a.certificate().certificate_der())) << id;
  }
  EXPECT_EQ(Rows(), 1 + kUnary + kStream);
}

// Another writer holds the database's write lock longer than the store waits (5 s): the transaction cannot even
// begin. One worker per call, so the calls wait side by side.
TEST_F(LineRateTest, LockedStoreFailsTheBatchAndTheServerRecovers) {
  constexpr int kCalls = 3;
  config_.mutable_signer()->set_workers(kCalls);
  StartServer();
  v1::SignCsrResponse warm;
  ASSERT_TRUE(Sign(testing::Csr("ec-p256", "/CN=WARM"), "warm", &warm).ok());
  std::vector<grpc::Status> statuses(kCalls);
  std::vector<v1::SignCsrResponse> answers(kCalls);
  {
    testing::DbWriteLock lock(db_);
    ASSERT_TRUE(lock.held());
    std::vector<std::thread> threads;
    for (int i = 0; i < kCalls; ++i) {
      threads.emplace_back([&, i] {
        statuses[i] = Sign(testing::Csr("ec-p256", absl::StrCat("/CN=LOCKED", i)), absl::StrCat("locked-", i),
                           &answers[i]);
      });
    }
    for (auto& t : threads) t.join();
  }
  for (int i = 0; i < kCalls; ++i) {
    EXPECT_EQ(statuses[i].error_code(), grpc::StatusCode::UNAVAILABLE) << statuses[i].error_message();
    EXPECT_THAT(statuses[i].error_message(), HasSubstr("certificate not issued: store:"));
    EXPECT_THAT(statuses[i].error_message(), HasSubstr("database is locked"));
    EXPECT_TRUE(answers[i].certificate_der().empty());
  }
  EXPECT_EQ(Rows(), 1);
  for (int i = 0; i < kCalls; ++i) {
    v1::SignCsrResponse resp;
    grpc::Status st = Sign(testing::Csr("ec-p256", absl::StrCat("/CN=LOCKED", i)), absl::StrCat("locked-", i), &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
  }
  EXPECT_EQ(Rows(), 1 + kCalls);
}

// A station may hold signer.max_streams_per_station streams open (each bounded to 128 requests in flight), so no
// station can grow the server's memory by opening streams: one more is refused with RESOURCE_EXHAUSTED naming
// the limit, counted; closing one makes room; another identity has its own allowance.
TEST_F(LineRateTest, StreamsPerStationAreBounded) {
  config_.mutable_signer()->set_max_streams_per_station(2);
  StartServer();
  auto stub = v1::CertificateAuthority::NewStub(ca_->Channel(server_->address()));
  grpc::ClientContext c1, c2, c3;
  v1::SignCsrStreamResponse a1, a2, a3;
  auto s1 = testing::OpenStreamWithOneRequest(&c1, stub.get(), "cap-1", &a1);
  auto s2 = testing::OpenStreamWithOneRequest(&c2, stub.get(), "cap-2", &a2);
  ASSERT_TRUE(a1.has_certificate()) << a1.error().message();
  ASSERT_TRUE(a2.has_certificate()) << a2.error().message();

  auto s3 = testing::OpenStreamWithOneRequest(&c3, stub.get(), "cap-3", &a3);
  EXPECT_FALSE(a3.has_certificate());
  grpc::Status st = s3->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_THAT(st.error_message(), HasSubstr("station 'station-1' already has 2 SignCsrStream streams open "
                                            "(signer.max_streams_per_station 2)"));
  EXPECT_EQ(Stats().answers().at("SignCsrStream RESOURCE_EXHAUSTED"), 1u);

  // Another identity (a pattern rule) has its own allowance.
  auto other = v1::CertificateAuthority::NewStub(ca_->Channel(server_->address(), "line1-st1"));
  grpc::ClientContext c4;
  v1::SignCsrStreamResponse a4;
  auto s4 = testing::OpenStreamWithOneRequest(&c4, other.get(), "cap-4", &a4);
  EXPECT_TRUE(a4.has_certificate()) << a4.error().message();
  s4->WritesDone();
  EXPECT_TRUE(s4->Finish().ok());

  // Closing one makes room for the next.
  s1->WritesDone();
  EXPECT_TRUE(s1->Finish().ok());
  EXPECT_TRUE(testing::StreamAdmittedAgain(stub.get(), "cap-5-"));
  s2->WritesDone();
  EXPECT_TRUE(s2->Finish().ok());
}

// SIGTERM while two streams and three unary callers are busy. The store is held across the signal, so accepted
// work is certainly in flight when it arrives. While the server drains it is still running and refuses a new
// signing call with UNAVAILABLE. Afterwards: the process exited 0; every stream request got at most one answer
// (a certificate, or UNAVAILABLE) and a stream ended OK or UNAVAILABLE "server is shutting down"; the certificates
// handed out are exactly the rows in the store (nothing signed and recorded was lost on the way); work accepted
// before the signal was completed. Then, after a restart, every stream request is sent again with its id: those
// answered before come back replayed with the same certificate, the others are issued now — one certificate per
// request, none lost, none twice.
TEST_F(LineRateTest, SigtermUnderLoadAnswersEverythingAcceptedAndExitsZero) {
  StartServer();
  constexpr int kStreams = 2, kPerStream = 1000, kUnaryThreads = 3;
  std::vector<std::vector<std::string>> stream_csrs(kStreams);
  for (int s = 0; s < kStreams; ++s) {
    for (int i = 0; i < kPerStream; ++i) {
      stream_csrs[s].push_back(testing::Csr("ec-p256", absl::StrCat("/CN=DRAIN", s, "-", i)));
    }
  }
  std::vector<StreamResult> streams(kStreams);
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<v1::SignCsrResponse> unary_issued;  // guarded by mu
  std::map<std::string, int> unary_failures;      // "CODE: message" -> count; guarded by mu
  std::vector<std::thread> threads;
  for (int s = 0; s < kStreams; ++s) {
    threads.emplace_back([&, s] { streams[s] = RunStream(stream_csrs[s], absl::StrCat("drain", s)); });
  }
  for (int t = 0; t < kUnaryThreads; ++t) {
    threads.emplace_back([&, t] {
      auto stub = v1::CertificateAuthority::NewStub(ca_->Channel(server_->address()));
      for (int i = 0; !stop; ++i) {
        std::string csr = testing::Csr("ec-p256", "/CN=DRAINU");
        v1::SignCsrResponse resp;
        grpc::Status st = Sign(csr, absl::StrCat("drainu", t, "-", i), &resp, stub.get());
        std::lock_guard<std::mutex> lock(mu);
        if (st.ok()) {
          EXPECT_EQ(SpkiOfCertificate(resp.certificate_der()), SpkiOfCsr(csr));
          unary_issued.push_back(resp);
        } else {
          ++unary_failures[absl::StrCat(st.error_code(), ": ", st.error_message().substr(0, 40))];
          EXPECT_TRUE(resp.certificate_der().empty());
        }
      }
    });
  }
  EXPECT_TRUE(WaitFor([&] { return Rows() >= 50; }, absl::Seconds(20)));
  int64_t rows_at_signal = 0;
  {
    testing::DbWriteLock lock(db_);
    ASSERT_TRUE(lock.held());
    rows_at_signal = Rows();  // nothing commits while the lock is held
    EXPECT_TRUE(WaitFor([&] { return Stats().queued() > 0; })) << "no accepted work in flight";
    ASSERT_EQ(kill(server_->pid(), SIGTERM), 0);
    // Draining, and cannot finish while the store is held: still running, refusing new signing calls.
    auto fresh = v1::CertificateAuthority::NewStub(ca_->Channel(server_->address()));
    v1::SignCsrResponse late;
    grpc::Status st;
    // A call sent before the server has taken the signal in is accepted and then fails with the held store
    // (UNAVAILABLE "database is locked" after the busy timeout, on a loaded machine): keep asking until the drain
    // answers.
    int late_calls = 0;
    EXPECT_TRUE(WaitFor([&] {
      late = v1::SignCsrResponse();
      st = Sign(testing::Csr("ec-p256", "/CN=LATE"), absl::StrCat("late", late_calls++), &late, fresh.get());
      return !st.ok() && absl::StrContains(st.error_message(), "shutting down");
    }, absl::Seconds(20)));
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
    EXPECT_THAT(st.error_message(), HasSubstr("server is shutting down: no new signing requests are taken"));
    EXPECT_TRUE(late.certificate_der().empty());
    EXPECT_TRUE(testing::StillRunning(server_->pid())) << "the server exited with work in flight";
  }
  auto stopped = server_->Stop(SIGTERM);  // waits for the exit (the second SIGTERM is ignored)
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_EQ(stopped.exit_code, 0) << stopped.output;
  EXPECT_THAT(stopped.output, HasSubstr("stopped cleanly"));
  server_.reset();

  std::set<std::string> handed_out;
  std::map<std::string, std::string> serial_by_id;  // stream request id -> serial handed out
  for (int s = 0; s < kStreams; ++s) {
    if (!streams[s].status.ok()) {
      EXPECT_EQ(streams[s].status.error_code(), grpc::StatusCode::UNAVAILABLE) << streams[s].status.error_message();
      EXPECT_THAT(streams[s].status.error_message(), HasSubstr("server is shutting down"));
    }
    EXPECT_EQ(streams[s].duplicates, 0);
    EXPECT_LE(streams[s].answers.size(), static_cast<size_t>(kPerStream));
    for (const auto& [id, a] : streams[s].answers) {
      if (a.has_certificate()) {
        EXPECT_TRUE(handed_out.insert(a.certificate().serial_hex()).second) << id;
        serial_by_id[id] = a.certificate().serial_hex();
        EXPECT_TRUE(Recorded(a.certificate().serial_hex(), a.certificate().certificate_der())) << id;
      } else {
        EXPECT_EQ(a.error().code(), static_cast<int>(grpc::StatusCode::UNAVAILABLE)) << a.error().message();
      }
    }
  }
  for (const auto& r : unary_issued) {
    EXPECT_TRUE(handed_out.insert(r.serial_hex()).second);
    EXPECT_TRUE(Recorded(r.serial_hex(), r.certificate_der()));
  }
  // Calls that arrived during the drain were refused by the server (UNAVAILABLE); once gRPC itself was stopping,
  // it cancelled calls still arriving on an open connection (CANCELLED), and later ones found no server.
  for (const auto& [what, n] : unary_failures) {
    EXPECT_THAT(what, ::testing::AnyOf(::testing::StartsWith(absl::StrCat(grpc::StatusCode::UNAVAILABLE, ": ")),
                                       ::testing::StartsWith(absl::StrCat(grpc::StatusCode::CANCELLED, ": "))))
        << n << "x";
  }
  std::set<std::string> recorded;
  for (const auto& [serial, unused] : testing::SqliteMap(db_, "SELECT serial, 1 FROM certificates")) {
    recorded.insert(serial);
  }
  EXPECT_EQ(recorded, handed_out);  // nothing recorded that was not handed out, and the reverse
  EXPECT_GT(static_cast<int64_t>(recorded.size()), rows_at_signal);  // work accepted before SIGTERM was finished

  // The stations reconnect to the restarted server and send every request again, same ids.
  StartServer();
  int replayed = 0;
  for (int s = 0; s < kStreams; ++s) {
    StreamResult again = RunStream(stream_csrs[s], absl::StrCat("drain", s));
    ASSERT_TRUE(again.status.ok()) << again.status.error_message();
    ASSERT_EQ(again.answers.size(), static_cast<size_t>(kPerStream));
    for (int i = 0; i < kPerStream; ++i) {
      std::string id = absl::StrCat("drain", s, "-", i);
      const auto& a = again.answers.at(id);
      ASSERT_TRUE(a.has_certificate()) << id << ": " << a.error().message();
      EXPECT_EQ(SpkiOfCertificate(a.certificate().certificate_der()), SpkiOfCsr(stream_csrs[s][i])) << id;
      auto before = serial_by_id.find(id);
      EXPECT_EQ(a.certificate().replayed(), before != serial_by_id.end()) << id;
      if (before != serial_by_id.end()) {
        ++replayed;
        EXPECT_EQ(a.certificate().serial_hex(), before->second) << id;
      }
    }
  }
  EXPECT_EQ(replayed, static_cast<int>(serial_by_id.size()));
  EXPECT_EQ(Rows(), static_cast<int64_t>(kStreams * kPerStream + unary_issued.size()));
}

// A station that keeps its stream open between requests, as a line does, does not hold a stopping server up: on
// SIGTERM its stream ends UNAVAILABLE "server is shutting down" at once, with every answer already given, and the
// server exits 0 — not after the 30 s grace, when gRPC would cancel the stream.
TEST_F(LineRateTest, SigtermEndsAnOpenQuietStream) {
  StartServer();
  auto stub = v1::CertificateAuthority::NewStub(ca_->Channel(server_->address()));
  grpc::ClientContext ctx;
  auto stream = stub->SignCsrStream(&ctx);
  v1::SignCsrRequest req;
  req.set_csr_der(testing::Csr("ec-p256", "/CN=QUIET"));
  req.set_request_id("quiet-1");
  ASSERT_TRUE(stream->Write(req));
  v1::SignCsrStreamResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  ASSERT_TRUE(resp.has_certificate()) << resp.error().message();
  EXPECT_EQ(resp.request_id(), "quiet-1");

  ASSERT_EQ(kill(server_->pid(), SIGTERM), 0);
  EXPECT_FALSE(stream->Read(&resp));  // the server finishes the stream: no further answer
  grpc::Status st = stream->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
  EXPECT_THAT(st.error_message(), HasSubstr("server is shutting down: every request it read on this stream has "
                                            "been answered"));
  auto stopped = server_->Stop(SIGTERM);
  EXPECT_EQ(stopped.exit_code, 0) << stopped.output;
  EXPECT_THAT(stopped.output, HasSubstr("stopped cleanly"));
  EXPECT_THAT(stopped.output, Not(HasSubstr("cancelling them")));
  server_.reset();
  EXPECT_EQ(Rows(), 1);
}

}  // namespace
}  // namespace linesign
