#include "server/service/request_checker.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/certs.h"

namespace linesign::service {
namespace {

using ::testing::HasSubstr;

class RequestCheckerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    v1::Profile device;
    device.add_key_types("ec-p256");
    device.add_subject_attributes("CN");
    device.add_required_subject_attributes("CN");
    device.set_rsa_min_bits(2048);
    device.set_rsa_max_bits(4096);
    device.set_max_subject_value_bytes(64);
    device.set_max_san_value_bytes(64);
    (*config_.mutable_profiles())["device"] = device;
    config_.set_default_profile("device");
    auto profiles = profile::Profiles::Compile(config_);
    ASSERT_TRUE(profiles.ok()) << profiles.status();
    profiles_ = *std::move(profiles);
    google::protobuf::RepeatedPtrField<v1::AccessRule> rules;
    v1::AccessRule* station = rules.Add();
    station->set_identity("st1");
    station->add_profiles("device");
    v1::AccessRule* ghost = rules.Add();  // a configuration Validate refuses; the checker must still not crash
    ghost->set_identity("ghost");
    ghost->add_profiles("unconfigured");
    auto access = auth::AccessPolicy::Create(rules);
    ASSERT_TRUE(access.ok()) << access.status();
    access_ = *std::move(access);
    checker_ = std::make_unique<RequestChecker>(access_.get(), &profiles_, RealClock::Get());
  }

  v1::SignCsrRequest Request(const std::string& profile = "", const std::string& id = "req-1") {
    v1::SignCsrRequest r;
    r.set_csr_der(testing::Csr("ec-p256", "/CN=DEVICE1"));
    r.set_profile(profile);
    r.set_request_id(id);
    return r;
  }
  absl::Status Check(const v1::SignCsrRequest& r, const std::string& identity, std::string* profile = nullptr) {
    std::string ignored;
    return checker_->Check(r, identity, profile != nullptr ? profile : &ignored).status();
  }

  v1::ServerConfig config_;
  profile::Profiles profiles_;
  std::unique_ptr<auth::AccessPolicy> access_;
  std::unique_ptr<RequestChecker> checker_;
};

TEST_F(RequestCheckerTest, ChecksAGoodRequestIntoAJob) {
  std::string profile;
  auto job = checker_->Check(Request(), "st1", &profile);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(profile, "device") << "an empty profile selects the default";
  EXPECT_EQ(job->request.requester.identity, "st1");
  EXPECT_EQ(job->request.requester.request_id, "req-1");
  EXPECT_EQ(job->request.profile->name(), "device");
}

TEST_F(RequestCheckerTest, AnIdentityNoRuleMatchesIsRefusedBeforeTheRequestIsLookedAt) {
  // Even a request that is malformed in every way: the identity learns nothing about what it sent.
  v1::SignCsrRequest bad = Request("no such profile!", std::string(500, '\x01'));
  std::string profile;
  absl::Status st = Check(bad, "stranger", &profile);
  EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied) << st;
  EXPECT_TRUE(profile.empty()) << "the profile is not even resolved";
}

TEST_F(RequestCheckerTest, AnUnknownProfileIsRefusedLikeAForbiddenOne) {
  absl::Status unknown = Check(Request("nonexistent"), "st1");
  EXPECT_EQ(unknown.code(), absl::StatusCode::kPermissionDenied) << unknown;
  EXPECT_THAT(unknown.message(), HasSubstr("may not use profile 'nonexistent'"));
  // A rule naming a profile that is not configured (refused by config validation) fails closed.
  absl::Status ghost = Check(Request("unconfigured"), "ghost");
  EXPECT_EQ(ghost.code(), absl::StatusCode::kFailedPrecondition) << ghost;
  EXPECT_THAT(ghost.message(), HasSubstr("profile 'unconfigured' is allowed for 'ghost' but not configured"));
}

TEST_F(RequestCheckerTest, TextThatIsNotUtf8IsRefusedNamingTheField) {
  absl::Status id = Check(Request("", "abc\xff"), "st1");
  EXPECT_EQ(id.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(id.message(), "request_id is not valid UTF-8 (byte 0xFF at offset 3)");
  absl::Status profile = Check(Request("dev\xc3"), "st1");
  EXPECT_EQ(profile.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(profile.message(), "profile is not valid UTF-8 (byte 0xC3 at offset 3)");
  v1::SignCsrRequest pem = Request();
  pem.set_csr_pem("-----BEGIN CERTIFICATE REQUEST-----\n\x80");
  absl::Status csr = Check(pem, "st1");
  EXPECT_EQ(csr.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(csr.message(), HasSubstr("csr_pem is not valid UTF-8"));
}

// Unknown fields would ride along with an accepted request for as long as it waits to be signed: refused.
TEST_F(RequestCheckerTest, FieldsTheServerDoesNotKnowAreRefused) {
  v1::SignCsrRequest r = Request();
  r.GetReflection()->MutableUnknownFields(&r)->AddLengthDelimited(111, "hello");
  absl::Status st = Check(r, "st1");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("the request carries a field linesign.v1.SignCsrRequest does not define (number 111, 1 in all)"));
  EXPECT_TRUE(Check(Request(), "st1").ok());
}

TEST_F(RequestCheckerTest, RequestIdRules) {
  absl::Status long_id = Check(Request("", std::string(129, 'a')), "st1");
  EXPECT_EQ(long_id.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(long_id.message(), "request_id of 129 bytes exceeds 128");
  EXPECT_TRUE(Check(Request("", std::string(kMaxRequestIdBytes, 'a')), "st1").ok());
  EXPECT_THAT(Check(Request("", ""), "st1").message(), HasSubstr("request_id is required"));
  EXPECT_EQ(Check(Request("", "a\tb"), "st1").message(), "request_id must be printable ASCII");
}

TEST_F(RequestCheckerTest, ProfileNameFormIsCheckedBeforeAuthorisation) {
  absl::Status st = Check(Request("bad name"), "st1");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("is not a profile name (1 to 64 of [A-Za-z0-9_-])"));
}

TEST_F(RequestCheckerTest, ACsrTheProfileRefusesIsInvalidArgument) {
  v1::SignCsrRequest r = Request();
  r.set_csr_der(testing::Csr("rsa-2048", "/CN=DEVICE1"));  // the profile takes ec-p256 only
  absl::Status st = Check(r, "st1");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
}

}  // namespace
}  // namespace linesign::service
