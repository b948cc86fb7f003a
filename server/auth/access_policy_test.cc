#include "server/auth/access_policy.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace linesign::auth {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<AccessPolicy> Policy() {
  google::protobuf::RepeatedPtrField<v1::AccessRule> rules;
  v1::AccessRule* exact = rules.Add();
  exact->set_identity("station-1");
  exact->add_profiles("device");
  exact->add_profiles("server");
  v1::AccessRule* pattern = rules.Add();
  pattern->set_identity_pattern("line[0-9]+-st[0-9]+");
  pattern->add_profiles("device");
  pattern->set_rate_per_second(2);
  pattern->set_burst(3);
  v1::AccessRule* admin = rules.Add();
  admin->set_identity("admin");
  admin->set_admin(true);
  auto p = AccessPolicy::Create(rules);
  EXPECT_TRUE(p.ok()) << p.status();
  return *std::move(p);
}

TEST(AccessPolicyTest, StationMayUseItsProfilesOnly) {
  auto p = Policy();
  absl::Time now = absl::Now();
  EXPECT_TRUE(p->AllowSign("station-1", "server", now).ok());
  EXPECT_TRUE(p->AllowSign("line4-st12", "device", now).ok());
  absl::Status denied = p->AllowSign("line4-st12", "server", now);
  EXPECT_EQ(denied.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(denied.message(), HasSubstr("station 'line4-st12' may not use profile 'server' (allowed: device)"));
}

TEST(AccessPolicyTest, PatternMustMatchWholeIdentity) {
  auto p = Policy();
  absl::Status denied = p->AllowSign("xline4-st12", "device", absl::Now());
  EXPECT_EQ(denied.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(denied.message(), HasSubstr("identity 'xline4-st12' may not call SignCsr: no access rule matches it"));
}

TEST(AccessPolicyTest, UnknownIdentityMayDoNothing) {
  auto p = Policy();
  EXPECT_EQ(p->AllowRead("nobody", "GetCaChain").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(p->AllowAdmin("nobody", "GetStats").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(p->AllowRead("station-1", "GetCaChain").ok());
}

TEST(AccessPolicyTest, AdminOnlyForAdmins) {
  auto p = Policy();
  EXPECT_TRUE(p->AllowAdmin("admin", "GetCertificate").ok());
  absl::Status denied = p->AllowAdmin("station-1", "GetCertificate");
  EXPECT_EQ(denied.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(denied.message(), HasSubstr("administrators only"));
  EXPECT_EQ(p->AllowSign("admin", "device", absl::Now()).code(), absl::StatusCode::kPermissionDenied);
}

TEST(AccessPolicyTest, TokenBucketPerIdentity) {
  auto p = Policy();
  absl::Time t = absl::FromUnixSeconds(1000);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(p->AllowSign("line1-st1", "device", t).ok()) << i;  // the burst
  absl::Status limited = p->AllowSign("line1-st1", "device", t);
  EXPECT_EQ(limited.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(limited.message(), HasSubstr("exceeded its rate limit of 2 requests/s"));
  EXPECT_TRUE(p->AllowSign("line1-st2", "device", t).ok());  // another station has its own bucket
  EXPECT_TRUE(p->AllowSign("line1-st1", "device", t + absl::Milliseconds(500)).ok());  // one token refilled
  EXPECT_FALSE(p->AllowSign("line1-st1", "device", t + absl::Milliseconds(500)).ok());
  EXPECT_TRUE(p->AllowSign("station-1", "device", t).ok());  // no limit configured
}

TEST(AccessPolicyTest, BadPatternNamesTheRule) {
  google::protobuf::RepeatedPtrField<v1::AccessRule> rules;
  rules.Add()->set_identity_pattern("line(");
  auto p = AccessPolicy::Create(rules);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(p.status().message(), HasSubstr("access[0].identity_pattern"));
}

}  // namespace
}  // namespace linesign::auth
