#include "server/policy/profile_policy.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/certs.h"

namespace linesign::policy {
namespace {

using ::testing::HasSubstr;

v1::Profile DeviceProfile() {
  v1::Profile p;
  for (const char* k : {"ec-p256"}) p.add_key_types(k);
  for (const char* a : {"CN", "O"}) p.add_subject_attributes(a);
  p.add_required_subject_attributes("CN");
  p.add_san_types("dns");
  p.add_san_types("uri");
  (*p.mutable_subject_patterns())["CN"] = "^[A-Z0-9]{12}$";
  (*p.mutable_san_patterns())["dns"] = "[a-z0-9-]+\\.devices\\.example";
  p.set_rsa_min_bits(2048);
  p.set_rsa_max_bits(4096);
  p.set_max_subject_value_bytes(64);
  p.set_max_san_value_bytes(40);
  return p;
}

absl::StatusOr<csr::CheckedCsr> Checked(const v1::Profile& profile, const std::string& subject,
                                        const std::vector<std::string>& sans = {}) {
  auto policy = ProfilePolicy::Create("device", profile);
  if (!policy.ok()) return policy.status();
  auto checked = csr::CheckCsr(testing::Csr("ec-p256", subject, sans), profile, "device");
  if (!checked.ok()) return checked.status();
  if (auto st = (*policy)->Apply(&*checked); !st.ok()) return st;
  return checked;
}

TEST(ProfilePolicyTest, AcceptsWhatTheRulesAllow) {
  auto c = Checked(DeviceProfile(), "/CN=AB12CD34EF56/O=Acme", {"DNS:unit-7.devices.example"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->sans, ::testing::ElementsAre("DNS:unit-7.devices.example"));
}

TEST(ProfilePolicyTest, SubjectPatternNamesAttributeValueAndPattern) {
  auto c = Checked(DeviceProfile(), "/CN=ab12cd34ef56");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(),
              HasSubstr("subject CN 'ab12cd34ef56' does not match the pattern '^[A-Z0-9]{12}$' of profile 'device'"));
}

TEST(ProfilePolicyTest, SanPatternMustMatchInFull) {
  auto c = Checked(DeviceProfile(), "/CN=AB12CD34EF56", {"DNS:unit-7.devices.example.evil.com"});
  EXPECT_THAT(c.status().message(), HasSubstr("subjectAltName dns 'unit-7.devices.example.evil.com' does not match"));
  // A type without a pattern is only bounded by length.
  EXPECT_TRUE(Checked(DeviceProfile(), "/CN=AB12CD34EF56", {"URI:urn:x"}).ok());
}

TEST(ProfilePolicyTest, LengthLimits) {
  v1::Profile p = DeviceProfile();
  p.clear_subject_patterns();
  p.set_max_subject_value_bytes(8);
  auto c = Checked(p, "/CN=ABCDEFGHIJ");
  EXPECT_THAT(c.status().message(), HasSubstr("subject CN of 10 bytes exceeds the limit of 8 bytes"));
  c = Checked(DeviceProfile(), "/CN=AB12CD34EF56", {"URI:urn:" + std::string(40, 'x')});
  EXPECT_THAT(c.status().message(), HasSubstr("subjectAltName uri of 44 bytes exceeds the limit of 40 bytes"));
}

TEST(ProfilePolicyTest, SanFromSubjectCn) {
  v1::Profile p = DeviceProfile();
  p.clear_subject_patterns();
  p.clear_san_types();
  p.clear_san_patterns();
  p.set_san_from_subject("dns");
  auto c = Checked(p, "/CN=gw-17.line4.example");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->sans, ::testing::ElementsAre("DNS:gw-17.line4.example"));
  EXPECT_EQ(c->san_der, std::string("\x30\x15\x82\x13gw-17.line4.example", 23));
  c = Checked(p, "/CN=not a host");
  EXPECT_THAT(c.status().message(), HasSubstr("subject CN 'not a host' is not a valid DNS name"));
}

}  // namespace
}  // namespace linesign::policy
