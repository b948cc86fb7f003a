// AdminService against real parts: an in-process gRPC server on loopback (tls.insecure: every caller is
// "anonymous"), a real SQLite store, the real access policy, counters and executor.
#include "server/service/admin_service.h"

#include <grpcpp/grpcpp.h>

#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/store/store.h"
#include "tests/testing/test_ca.h"

namespace linesign::service {
namespace {

using ::testing::HasSubstr;

constexpr int kRecords = 250;

store::CertificateRecord Record(int i) {
  store::CertificateRecord r;
  r.issuer_id = "ISSUER";
  r.serial_hex = absl::AsciiStrToUpper(absl::StrCat("7F", absl::Hex(1000 + i, absl::kZeroPad4)));
  r.subject = absl::StrCat("CN=DEVICE", i);
  r.sans = {store::San{"DNS", absl::StrCat("d", i, ".example")}, store::San{"URI", "urn:\xff"}};
  r.station = i % 2 == 0 ? "st-even" : "st-odd\nforged";  // station text is quoted by clients, not trusted
  r.profile = i % 5 == 0 ? "serial" : "device";
  r.request_id = absl::StrCat("req-", i);
  r.csr_sha256 = absl::StrCat("CSR", i);
  r.spki_sha256 = absl::StrCat("SPKI", i);
  r.der = std::string("\x30\x00", 2);
  r.issued_at = 1'000'000 + i;           // one per second
  r.not_before = r.issued_at;
  r.not_after = 2'000'000 + 10 * i;
  return r;
}

class AdminServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    v1::StoreConfig config;
    config.mutable_sqlite()->set_path(testing::TempDir("admin") + "/db");
    auto store = store::Open(config, RealClock::Get());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = store->release();
    store::Batch batch;
    for (int i = 0; i < kRecords; ++i) batch.entries.push_back({.cert = Record(i)});
    ASSERT_TRUE(store_->RecordBatch(batch).ok());
  }
  static void TearDownTestSuite() {
    delete store_;
    store_ = nullptr;
  }

  void SetUp() override { Start(/*admin=*/true, /*max_pending=*/4); }
  void TearDown() override { Stop(); }

  void Start(bool admin, size_t max_pending) {
    v1::TlsConfig tls;
    tls.set_insecure(true);
    authenticator_ = *auth::Authenticator::Create(tls, "");
    google::protobuf::RepeatedPtrField<v1::AccessRule> rules;
    rules.Add()->set_identity(std::string(auth::kInsecureIdentity));
    rules[0].set_admin(admin);
    access_ = *auth::AccessPolicy::Create(rules);
    audit_ = *audit::AuditLog::Open("");
    counters_ = std::make_unique<RpcCounters>(audit_.get(), RealClock::Get());
    drain_ = std::make_unique<DrainTracker>(DrainTracker::Limits{1, 1});
    executor_ = std::make_unique<BoundedExecutor>(1, max_pending);
    service_ = std::make_unique<AdminService>(AdminService::Parts{
        .issuer_id = "ISSUER", .authenticator = authenticator_.get(), .access = access_.get(), .reader = store_,
        .queued = [] { return size_t{7}; }, .counters = counters_.get(), .drain = drain_.get(),
        .executor = executor_.get(), .clock = RealClock::Get(), .revocations = store_});
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = v1::Administration::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  }
  void Stop() {
    if (server_ != nullptr) server_->Shutdown();
    executor_.reset();
    server_.reset();
  }

  grpc::Status List(const v1::ListCertificatesRequest& req, v1::ListCertificatesResponse* resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return stub_->ListCertificates(&ctx, req, resp);
  }
  // ListAll follows every page of `req` and returns the request ids seen, checking no page exceeds its size.
  std::vector<std::string> ListAll(v1::ListCertificatesRequest req) {
    std::vector<std::string> ids;
    for (int pages = 0; pages < 1000; ++pages) {
      v1::ListCertificatesResponse resp;
      grpc::Status st = List(req, &resp);
      EXPECT_TRUE(st.ok()) << st.error_message();
      if (!st.ok()) break;
      EXPECT_LE(resp.certificates_size(), req.page_size() == 0 ? 100 : static_cast<int>(req.page_size()));
      for (const auto& c : resp.certificates()) ids.push_back(c.request_id());
      if (resp.next_page_token().empty()) break;
      req.set_page_token(resp.next_page_token());
    }
    return ids;
  }

  static store::Store* store_;
  std::unique_ptr<auth::Authenticator> authenticator_;
  std::unique_ptr<auth::AccessPolicy> access_;
  std::unique_ptr<audit::AuditLog> audit_;
  std::unique_ptr<RpcCounters> counters_;
  std::unique_ptr<DrainTracker> drain_;
  std::unique_ptr<BoundedExecutor> executor_;
  std::unique_ptr<AdminService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::Administration::Stub> stub_;
};
store::Store* AdminServiceTest::store_ = nullptr;

TEST_F(AdminServiceTest, GetCertificateFoundNotFoundAndBadSerial) {
  v1::GetCertificateRequest req;
  req.set_serial_hex(absl::StrCat("007f", absl::Hex(1003, absl::kZeroPad4)));  // leading zero octet, lower case
  v1::GetCertificateResponse resp;
  {
    grpc::ClientContext ctx;
    grpc::Status st = stub_->GetCertificate(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(resp.request_id(), "req-3");
    EXPECT_EQ(resp.station(), "st-odd\nforged");
    ASSERT_EQ(resp.san_size(), 2);
    EXPECT_EQ(resp.san(1).value(), "urn:\\xFF");
    EXPECT_EQ(resp.san(1).raw_value(), "urn:\xff");
  }
  {
    req.set_serial_hex("7E");
    grpc::ClientContext ctx;
    grpc::Status st = stub_->GetCertificate(&ctx, req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(st.error_message(), "no certificate with serial 7E from this CA");
  }
  for (const std::string bad : {std::string(""), std::string("xyz"), std::string(43, 'A'), std::string("7F\xff")}) {
    req.set_serial_hex(bad);
    grpc::ClientContext ctx;
    grpc::Status st = stub_->GetCertificate(&ctx, req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(st.error_message(), "serial_hex must be 1 to 42 hexadecimal digits");
  }
  EXPECT_EQ(counters_->answered(Rpc::kGetCertificate, grpc::StatusCode::OK), 1u);
  EXPECT_EQ(counters_->answered(Rpc::kGetCertificate, grpc::StatusCode::INVALID_ARGUMENT), 4u);
}

TEST_F(AdminServiceTest, ListPagesThroughEveryRecordExactlyOnce) {
  v1::ListCertificatesRequest req;
  req.set_page_size(40);
  std::vector<std::string> ids = ListAll(req);
  ASSERT_EQ(ids.size(), static_cast<size_t>(kRecords));
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), ids.size()) << "no record twice";
  EXPECT_EQ(ids.front(), "req-0") << "oldest first";
  EXPECT_EQ(ids.back(), "req-249");

  v1::ListCertificatesResponse first;
  ASSERT_TRUE(List(v1::ListCertificatesRequest(), &first).ok());
  EXPECT_EQ(first.certificates_size(), 100) << "page_size 0 means 100";
  const v1::CertificateSummary& c = first.certificates(1);
  EXPECT_EQ(c.serial_hex(), "7F03E9");
  EXPECT_EQ(c.status(), "expired");  // judged at the server's time: not_after was in 1970
  EXPECT_EQ(c.issued_at().seconds(), 1'000'001);
  EXPECT_EQ(c.not_after().seconds(), 2'000'010);
  EXPECT_EQ(c.san(0).value(), "d1.example");
}

TEST_F(AdminServiceTest, ListFiltersAllHold) {
  v1::ListCertificatesRequest req;
  req.set_page_size(7);
  req.set_profile("serial");
  EXPECT_EQ(ListAll(req).size(), 50u);  // every fifth
  req.set_station("st-even");
  EXPECT_EQ(ListAll(req).size(), 25u);  // multiples of ten
  req.clear_profile();
  req.clear_station();
  req.mutable_issued_after()->set_seconds(1'000'100);
  req.mutable_issued_before()->set_seconds(1'000'110);
  std::vector<std::string> window = ListAll(req);
  ASSERT_EQ(window.size(), 10u);
  EXPECT_EQ(window.front(), "req-100");
  EXPECT_EQ(window.back(), "req-109");
  req.clear_issued_after();
  req.clear_issued_before();
  req.mutable_expiring_before()->set_seconds(2'000'050);
  EXPECT_EQ(ListAll(req).size(), 5u);  // not_after 2'000'000 .. 2'000'040
  req.set_station("st-odd\nforged");
  EXPECT_EQ(ListAll(req).size(), 2u);
}

TEST_F(AdminServiceTest, ListRefusesBadArgumentsNamingTheField) {
  struct Case {
    std::function<void(v1::ListCertificatesRequest*)> set;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](auto* r) { r->set_page_size(1001); }, "page_size 1001 is outside 1..1000 (0 means 100)"},
      {[](auto* r) { r->set_page_token("c1.1' OR 1=1 --"); }, "page_token is not one this server returned"},
      {[](auto* r) { r->set_page_token(std::string(65, 'a')); }, "page_token is not one this server returned"},
      {[](auto* r) { r->set_page_token("c1.-5"); }, "page token 'c1.-5' is not one this store returned"},
      {[](auto* r) { r->set_page_token("c2.10"); }, "page token 'c2.10' is not one this store returned"},
      {[](auto* r) { r->set_station(std::string(129, 's')); }, "station of 129 bytes exceeds 128"},
      {[](auto* r) { r->set_profile("dev\xc0"); }, "profile is not valid UTF-8 (byte 0xC0 at offset 3)"},
      {[](auto* r) { r->mutable_issued_after()->set_seconds(-1); }, "issued_after (-1s 0ns) is outside"},
      {[](auto* r) { r->mutable_expiring_before()->set_nanos(-3); }, "expiring_before (0s -3ns) is outside"},
      {[](auto* r) {
         r->mutable_issued_after()->set_seconds(20);
         r->mutable_issued_before()->set_seconds(20);
       },
       "issued_after must be before issued_before"},
  };
  for (const Case& c : cases) {
    v1::ListCertificatesRequest req;
    c.set(&req);
    v1::ListCertificatesResponse resp;
    grpc::Status st = List(req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.message;
    EXPECT_THAT(st.error_message(), HasSubstr(c.message));
    EXPECT_EQ(resp.certificates_size(), 0);
  }
  EXPECT_EQ(counters_->answered(Rpc::kListCertificates, grpc::StatusCode::INVALID_ARGUMENT), cases.size());
}

TEST_F(AdminServiceTest, GetStatsReportsCountersQueueAndRecords) {
  counters_->Answered(Rpc::kSignCsr);
  v1::GetStatsResponse stats;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->GetStats(&ctx, {}, &stats).ok());
  EXPECT_EQ(stats.answers().at("SignCsr OK"), 1u);
  EXPECT_EQ(stats.answers().at("GetStats OK"), 1u) << "the call counts itself";
  EXPECT_EQ(stats.queued(), 7u);
  EXPECT_EQ(stats.certificates_recorded(), kRecords);
}

TEST_F(AdminServiceTest, NonAdministratorsAreRefusedForEveryRpc) {
  Stop();
  Start(/*admin=*/false, 4);
  const std::string who = "identity 'anonymous' may not call ";
  grpc::ClientContext c1, c2, c3;
  v1::GetStatsResponse stats;
  grpc::Status st = stub_->GetStats(&c1, {}, &stats);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(st.error_message(), HasSubstr(who + "GetStats"));
  v1::ListCertificatesResponse list;
  st = stub_->ListCertificates(&c2, {}, &list);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(st.error_message(), HasSubstr(who + "ListCertificates"));
  v1::GetCertificateRequest get;
  get.set_serial_hex("zz");  // authorisation comes before the argument is looked at
  v1::GetCertificateResponse cert;
  st = stub_->GetCertificate(&c3, get, &cert);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(AdminServiceTest, AFullExecutorRefusesInsteadOfQueueingOrStartingAThread) {
  Stop();
  Start(/*admin=*/true, /*max_pending=*/2);
  // Fill the executor's bound with reads that wait: the next administrative call must be refused at once.
  absl::Notification release;
  ASSERT_TRUE(executor_->TrySubmit([&] { release.WaitForNotification(); }));
  ASSERT_TRUE(executor_->TrySubmit([] {}));
  v1::GetStatsResponse stats;
  grpc::ClientContext ctx;
  grpc::Status st = stub_->GetStats(&ctx, {}, &stats);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(st.error_message(), "too many administrative reads in progress (at most 2); retry in a moment");
  release.Notify();
  EXPECT_TRUE(drain_->WaitUntilIdle(absl::InfiniteFuture())) << "a refused read leaves nothing entered";
  // Once the reads are done, calls are served again.
  for (;;) {
    grpc::ClientContext again;
    st = stub_->GetStats(&again, {}, &stats);
    if (st.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) break;
  }
  EXPECT_TRUE(st.ok()) << st.error_message();
}

// RevokeCertificate: the serial in any case and with leading zero octets finds the record; a second call reports
// the first revocation; a bad reason or serial is refused before the store is touched; an unknown serial is
// NOT_FOUND. (tests/revocation_test.cc has the rest, against the real server.)
TEST_F(AdminServiceTest, RevokeIsIdempotentAndRefusesEachBadInput) {
  auto revoke = [&](const std::string& serial, int reason, v1::RevokeCertificateResponse* resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::RevokeCertificateRequest req;
    req.set_serial_hex(serial);
    req.set_reason(static_cast<v1::RevocationReason>(reason));
    return stub_->RevokeCertificate(&ctx, req, resp);
  };
  v1::RevokeCertificateResponse first, second, refused;
  grpc::Status st = revoke("007f04e1", 4, &first);  // Record(249)
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(first.serial_hex(), "7F04E1");
  EXPECT_FALSE(first.already_revoked());
  EXPECT_EQ(first.reason(), v1::REVOCATION_REASON_SUPERSEDED);
  st = revoke("7F04E1", 1, &second);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_TRUE(second.already_revoked());
  EXPECT_EQ(second.reason(), v1::REVOCATION_REASON_SUPERSEDED);
  EXPECT_EQ(second.revoked_at().seconds(), first.revoked_at().seconds());

  for (int reason : {6, 7, 8, 10, 11, -1}) {
    st = revoke("7F03E9", reason, &refused);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << reason;
    EXPECT_EQ(AdminService::CheckRevocationReason(reason).message(), st.error_message());
  }
  st = revoke("7F0", 1, &refused);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(st.error_message(), "no certificate with serial 7F0 from this CA");
  st = revoke("7F03E9 ", 1, &refused);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(st.error_message(), "serial_hex must be 1 to 42 hexadecimal digits (got 7 bytes: \"7F03E9 \")");
  auto record = store_->FindBySerial("ISSUER", "7F03E9");
  ASSERT_TRUE(record.ok() && record->has_value());
  EXPECT_EQ((*record)->status, store::CertificateStatus::kValid);
  for (int reason : {0, 1, 2, 3, 4, 5, 9}) EXPECT_TRUE(AdminService::CheckRevocationReason(reason).ok()) << reason;
}

// The lifecycle filters (issue 11): a status must be one of the five, a subject filter is text like the others.
TEST(AdminServiceQueryTest, LifecycleFiltersAreCheckedAndNamed) {
  v1::ListCertificatesRequest req;
  req.set_status("renewal_due");
  req.set_subject("CN=DEV");
  auto q = AdminService::ToQuery(req);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->status, store::ListStatus::kRenewalDue);
  EXPECT_EQ(q->subject_contains, "CN=DEV");
  req.set_status("bogus");
  EXPECT_EQ(AdminService::ToQuery(req).status().message(),
            "status \"bogus\" is not one of valid, renewal_due, expired, superseded, revoked");
  req.set_status("");
  req.set_subject(std::string(129, 'x'));
  EXPECT_EQ(AdminService::ToQuery(req).status().message(), "subject of 129 bytes exceeds 128");
}

}  // namespace
}  // namespace linesign::service
