#include "server/observability/server_metrics.h"

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/test_ca.h"

namespace linesign::observability {
namespace {

using ::testing::HasSubstr;

TEST(RefusalReasonTest, ClassesTheServersOwnMessages) {
  using grpc::StatusCode;
  EXPECT_EQ(RefusalReason(StatusCode::UNAUTHENTICATED, "client certificate 'CN=x' expired"), "authentication");
  EXPECT_EQ(RefusalReason(StatusCode::PERMISSION_DENIED, "station 'a' may not use profile 'b'"), "authorization");
  EXPECT_EQ(RefusalReason(StatusCode::RESOURCE_EXHAUSTED, "station 'a' exceeded its rate limit of 5"), "rate_limit");
  EXPECT_EQ(RefusalReason(StatusCode::RESOURCE_EXHAUSTED, "signing queue is full (4096 requests)"), "queue_full");
  EXPECT_EQ(RefusalReason(StatusCode::INVALID_ARGUMENT, "CSR PEM has 4 bytes of trailing data"), "csr");
  EXPECT_EQ(RefusalReason(StatusCode::INVALID_ARGUMENT, "subject attribute CN (UTF8String) ..."), "subject");
  EXPECT_EQ(RefusalReason(StatusCode::INVALID_ARGUMENT, "subjectAltName dns 'a' is not a valid DNS name"), "san");
  EXPECT_EQ(RefusalReason(StatusCode::INVALID_ARGUMENT, "EC public key is a compressed point"), "key");
  EXPECT_EQ(RefusalReason(StatusCode::INVALID_ARGUMENT, "request_id is not valid UTF-8"), "request");
  EXPECT_EQ(RefusalReason(StatusCode::ALREADY_EXISTS, "request_id 'r1' was already used"), "request_id_reused");
  EXPECT_EQ(RefusalReason(StatusCode::UNAVAILABLE, "server is shutting down"), "draining");
  EXPECT_EQ(RefusalReason(StatusCode::UNAVAILABLE, "certificate not issued: store: commit: disk I/O error"), "store");
}

// The metered store counts what the real SQLite store recorded, by profile and station, and a replay of a
// recorded request is not a second issue.
TEST(ServerMetricsTest, MeteredStoreCountsRecordedCertificatesByProfileAndStation) {
  const std::string dir = testing::TempDir("metrics");
  v1::StoreConfig config;
  config.mutable_sqlite()->set_path(dir + "/m.db");
  auto store = store::Open(config, RealClock::Get());
  ASSERT_TRUE(store.ok()) << store.status();
  ServerMetrics m;
  auto metered = m.MeterStore(store->get());
  store::Batch batch;
  for (int i = 0; i < 3; ++i) {
    store::BatchEntry e;
    e.cert.issuer_id = "issuer";
    e.cert.serial_hex = absl::StrCat("0", i + 1);
    e.cert.subject = "CN=x";
    e.cert.station = i == 2 ? "line2-st1" : "line1-st1";
    e.cert.profile = "device";
    e.cert.request_id = absl::StrCat("r", i);
    e.cert.der = "der";
    batch.entries.push_back(std::move(e));
  }
  auto out = metered->RecordBatch(batch);
  ASSERT_TRUE(out.ok()) << out.status();
  // The same batch again: every entry is a duplicate request, nothing new is recorded.
  out = metered->RecordBatch(batch);
  ASSERT_TRUE(out.ok()) << out.status();
  const std::string text = m.registry()->Render();
  EXPECT_THAT(text, HasSubstr("linesign_certificates_issued_total{profile=\"device\",station=\"line1-st1\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("linesign_certificates_issued_total{profile=\"device\",station=\"line2-st1\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("linesign_batch_size_certificates_count 2\n"));
  EXPECT_THAT(text, HasSubstr("linesign_store_commit_duration_seconds_count 2\n"));

  // The store statistics task reads the expiry distribution: none of these certificates has a notAfter after now.
  auto task = m.StoreStatsTask(store->get(), absl::Seconds(1));
  const absl::Time t0 = absl::Now();
  ASSERT_TRUE(task->RunOnce(t0).ok());
  EXPECT_THAT(m.registry()->Render(), HasSubstr("linesign_certificates_expiring{within_days=\"+Inf\"} 0\n"));

  // A certificate recorded now is counted in the expiry distribution only once kExpiryEvery has passed: the
  // distribution is a pass over every unexpired certificate, not read on every run.
  store::Batch later;
  later.entries.push_back(batch.entries[0]);
  later.entries[0].cert.serial_hex = "99";
  later.entries[0].cert.request_id = "r99";
  later.entries[0].cert.not_after = absl::ToUnixSeconds(t0 + absl::Hours(24 * 10));
  ASSERT_TRUE((*store)->RecordBatch(later).ok());
  ASSERT_TRUE(task->RunOnce(t0 + absl::Minutes(1)).ok());
  EXPECT_THAT(m.registry()->Render(), HasSubstr("linesign_certificates_expiring{within_days=\"+Inf\"} 0\n"));
  ASSERT_TRUE(task->RunOnce(t0 + ServerMetrics::kExpiryEvery).ok());
  const std::string expiry = m.registry()->Render();
  EXPECT_THAT(expiry, HasSubstr("linesign_certificates_expiring{within_days=\"+Inf\"} 1\n"));
  EXPECT_THAT(expiry, HasSubstr("linesign_certificates_expiring{within_days=\"30\"} 1\n"));
  EXPECT_THAT(expiry, HasSubstr("linesign_certificates_expiring{within_days=\"7\"} 0\n"));
}

// The status page's JSON: per-station counts and refusals (an unauthenticated caller under its own name), refusals
// by reason class, the latency buckets.
TEST(ServerMetricsTest, StatusJsonHasStationsRefusalsAndLatency) {
  ServerMetrics m;
  m.OnDecision(service::Rpc::kSignCsr, grpc::StatusCode::PERMISSION_DENIED, "intruder", "refused",
               absl::PermissionDeniedError("identity 'intruder' may not call SignCsr"));
  m.OnDecision(service::Rpc::kSignCsr, grpc::StatusCode::UNAUTHENTICATED, "", "refused",
               absl::UnauthenticatedError("no client certificate"));
  m.OnAnswered(issuance::BatchSigner::Admission::kAlways, absl::Milliseconds(3), absl::OkStatus());
  const std::string json = m.StatusJson(nullptr);
  EXPECT_THAT(json, HasSubstr("\"intruder\":{\"issued\":0,\"refused\":1}"));
  EXPECT_THAT(json, HasSubstr("\"(unauthenticated)\":{\"issued\":0,\"refused\":1}"));
  EXPECT_THAT(json, HasSubstr("\"refusals_by_reason\":{\"authentication\":1,\"authorization\":1}"));
  EXPECT_THAT(json, HasSubstr("\"latency_counts\":[0,0,0,0,0,1,"));
}

}  // namespace
}  // namespace linesign::observability
