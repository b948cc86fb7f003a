#include "server/service/rpc_counters.h"

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace linesign::service {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

class FixedClock : public Clock {
 public:
  absl::Time Now() const override { return absl::FromUnixSeconds(1700000000); }
};

class RpcCountersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = std::filesystem::path(::testing::TempDir()) /
            (std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + ".audit.jsonl");
    std::filesystem::remove(path_);
    auto log = audit::AuditLog::Open(path_.string());
    ASSERT_TRUE(log.ok()) << log.status();
    audit_ = *std::move(log);
  }
  std::vector<nlohmann::json> Lines() {
    std::vector<nlohmann::json> out;
    std::ifstream in(path_);
    for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
    return out;
  }
  std::filesystem::path path_;
  std::unique_ptr<audit::AuditLog> audit_;
  FixedClock clock_;
};

TEST_F(RpcCountersTest, RefusedCountsAuditsAndReturnsTheGrpcStatus) {
  RpcCounters counters(audit_.get(), &clock_);
  grpc::Status st = counters.Refused(Rpc::kSignCsr, CallInfo{"st1", "ipv4:1.2.3.4:5", "dev", "r\xff" "1"},
                                     absl::InvalidArgumentError("bad CSR"));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(st.error_message(), "bad CSR");
  EXPECT_EQ(counters.answered(Rpc::kSignCsr, grpc::StatusCode::INVALID_ARGUMENT), 1u);
  auto lines = Lines();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["rpc"], "SignCsr");
  EXPECT_EQ(lines[0]["outcome"], "refused");
  EXPECT_EQ(lines[0]["identity"], "st1");
  EXPECT_EQ(lines[0]["request_id"], "r\\xFF1") << "a request id that is not UTF-8 is escaped in the audit";
  EXPECT_EQ(lines[0]["code"], "INVALID_ARGUMENT");
}

TEST_F(RpcCountersTest, CompletedAuditsIssuedReplayedAndFailed) {
  RpcCounters counters(audit_.get(), &clock_);
  store::CertificateRecord r;
  r.serial_hex = "0A";
  r.subject = "CN=dev";
  counters.Completed(Rpc::kSignCsrStream, CallInfo{"st1", "p", "dev", "1"}, r, /*replayed=*/false);
  counters.Completed(Rpc::kSignCsrStream, CallInfo{"st1", "p", "dev", "1"}, r, /*replayed=*/true);
  counters.Completed(Rpc::kSignCsr, CallInfo{"st1", "p", "dev", "2"}, absl::AlreadyExistsError("reused"), false);
  counters.Completed(Rpc::kSignCsr, CallInfo{"st1", "p", "dev", "3"}, absl::UnavailableError("disk"), false);
  auto lines = Lines();
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0]["outcome"], "issued");
  EXPECT_EQ(lines[0]["serial"], "0A");
  EXPECT_EQ(lines[1]["outcome"], "replayed");
  EXPECT_EQ(lines[2]["outcome"], "refused");
  EXPECT_EQ(lines[3]["outcome"], "failed");
  EXPECT_EQ(counters.answered(Rpc::kSignCsrStream, grpc::StatusCode::OK), 2u);
  EXPECT_THAT(counters.Snapshot(), ElementsAre(Pair("SignCsr ALREADY_EXISTS", 1u), Pair("SignCsr UNAVAILABLE", 1u),
                                               Pair("SignCsrStream OK", 2u)));
}

TEST_F(RpcCountersTest, AnsweredCountsWithoutAuditing) {
  RpcCounters counters(audit_.get(), &clock_);
  counters.Answered(Rpc::kListCertificates);
  counters.Answered(Rpc::kListCertificates);
  EXPECT_THAT(counters.Snapshot(), ElementsAre(Pair("ListCertificates OK", 2u)));
  EXPECT_TRUE(Lines().empty());
}

// A revocation is counted as OK and audited "revoked" (or "already_revoked") with the serial, subject and reason.
TEST_F(RpcCountersTest, RevokedAuditsTheRevocation) {
  RpcCounters counters(audit_.get(), &clock_);
  store::CertificateRecord r;
  r.serial_hex = "0A1B";
  r.subject = "CN=dev";
  counters.Revoked(Rpc::kRevokeCertificate, CallInfo{"admin", "ipv4:1.2.3.4:5", "", ""}, r, false, "keyCompromise");
  counters.Revoked(Rpc::kRevokeCertificate, CallInfo{"admin", "ipv4:1.2.3.4:5", "", ""}, r, true, "keyCompromise");
  EXPECT_EQ(counters.answered(Rpc::kRevokeCertificate, grpc::StatusCode::OK), 2u);
  auto lines = Lines();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["rpc"], "RevokeCertificate");
  EXPECT_EQ(lines[0]["outcome"], "revoked");
  EXPECT_EQ(lines[0]["serial"], "0A1B");
  EXPECT_EQ(lines[0]["subject"], "CN=dev");
  EXPECT_EQ(lines[0]["reason"], "keyCompromise");
  EXPECT_EQ(lines[1]["outcome"], "already_revoked");
  EXPECT_EQ(counters.Snapshot()["RevokeCertificate OK"], 2u);
}

}  // namespace
}  // namespace linesign::service
