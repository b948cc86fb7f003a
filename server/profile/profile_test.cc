#include "server/profile/profile.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/csr/csr.h"
#include "tests/testing/certs.h"

namespace linesign::profile {
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
  auto compiled = Profile::Compile("device", profile);
  if (!compiled.ok()) return compiled.status();
  return csr::CheckCsr(testing::Csr("ec-p256", subject, sans), **compiled);
}

TEST(ProfileTest, AcceptsWhatTheRulesAllow) {
  auto c = Checked(DeviceProfile(), "/CN=AB12CD34EF56/O=Acme", {"DNS:unit-7.devices.example"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->sans, ::testing::ElementsAre(csr::San{csr::SanType::kDns, "unit-7.devices.example"}));
}

TEST(ProfileTest, SubjectPatternNamesAttributeValueAndPattern) {
  auto c = Checked(DeviceProfile(), "/CN=ab12cd34ef56");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(),
              HasSubstr("subject CN 'ab12cd34ef56' does not match the pattern '^[A-Z0-9]{12}$' of profile 'device'"));
}

TEST(ProfileTest, SanPatternMustMatchInFull) {
  auto c = Checked(DeviceProfile(), "/CN=AB12CD34EF56", {"DNS:unit-7.devices.example.evil.com"});
  EXPECT_THAT(c.status().message(), HasSubstr("subjectAltName dns 'unit-7.devices.example.evil.com' does not match"));
  // A type without a pattern is only bounded by length.
  EXPECT_TRUE(Checked(DeviceProfile(), "/CN=AB12CD34EF56", {"URI:urn:x"}).ok());
}

TEST(ProfileTest, LengthLimits) {
  v1::Profile p = DeviceProfile();
  p.clear_subject_patterns();
  p.set_max_subject_value_bytes(8);
  auto c = Checked(p, "/CN=ABCDEFGHIJ");
  EXPECT_THAT(c.status().message(), HasSubstr("subject CN of 10 bytes exceeds the limit of 8 bytes"));
  c = Checked(DeviceProfile(), "/CN=AB12CD34EF56", {"URI:urn:" + std::string(40, 'x')});
  EXPECT_THAT(c.status().message(), HasSubstr("subjectAltName uri of 44 bytes exceeds the limit of 40 bytes"));
}

TEST(ProfileTest, SanFromSubjectCn) {
  v1::Profile p = DeviceProfile();
  p.clear_subject_patterns();
  p.clear_san_types();
  p.clear_san_patterns();
  p.set_san_from_subject("dns");
  auto c = Checked(p, "/CN=gw-17.line4.example");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->sans, ::testing::ElementsAre(csr::San{csr::SanType::kDns, "gw-17.line4.example"}));
  EXPECT_EQ(csr::GeneralNamesDer(c->sans), std::string("\x30\x15\x82\x13gw-17.line4.example", 23));
  c = Checked(p, "/CN=not a host");
  EXPECT_THAT(c.status().message(), HasSubstr("subject CN 'not a host' is not a valid DNS name"));
}

// The value rules are a pure check: a refused CSR's SANs are not rewritten, and MakeSans is the only step that
// changes them.
TEST(ProfileTest, CheckValuesChangesNothingAndMakeSansDerives) {
  v1::Profile p = DeviceProfile();
  p.clear_subject_patterns();
  p.set_san_from_subject("dns");
  auto compiled = Profile::Compile("device", p);
  ASSERT_TRUE(compiled.ok()) << compiled.status();
  std::vector<csr::SubjectAttribute> subject = {{"CN", "gw-1.example"}};
  std::vector<csr::San> sans;
  EXPECT_TRUE((*compiled)->CheckValues(subject, sans).ok());
  EXPECT_TRUE(sans.empty());
  ASSERT_TRUE((*compiled)->MakeSans(subject, &sans).ok());
  EXPECT_THAT(sans, ::testing::ElementsAre(csr::San{csr::SanType::kDns, "gw-1.example"}));
  // A second derivation refuses: SANs from the CSR and from the CN do not mix.
  EXPECT_THAT(std::string((*compiled)->MakeSans(subject, &sans).message()),
              HasSubstr("CSR carries subjectAltNames, but profile 'device' makes the SAN from the subject CN"));
}

TEST(ProfileTest, IpSanRulesSeeTheAddressAsText) {
  v1::Profile p = DeviceProfile();
  (*p.mutable_san_patterns())["ip"] = "10\\.0\\..*";
  auto compiled = Profile::Compile("device", p);
  ASSERT_TRUE(compiled.ok()) << compiled.status();
  EXPECT_TRUE((*compiled)->CheckValues({}, {{csr::SanType::kIp, std::string("\x0a\x00\x00\x07", 4)}}).ok());
  EXPECT_THAT(std::string((*compiled)->CheckValues({}, {{csr::SanType::kIp, std::string("\xc0\x00\x02\x01", 4)}})
                              .message()),
              HasSubstr("subjectAltName ip '192.0.2.1' does not match the pattern"));
}

TEST(ProfilesTest, FindResolvesOnceAndNamesUnknownProfiles) {
  v1::ServerConfig config;
  (*config.mutable_profiles())["device"] = DeviceProfile();
  config.set_default_profile("device");
  auto profiles = Profiles::Compile(config);
  ASSERT_TRUE(profiles.ok()) << profiles.status();
  EXPECT_EQ(profiles->default_profile(), "device");
  auto found = profiles->Find("device");
  ASSERT_TRUE(found.ok());
  EXPECT_EQ((*found)->name(), "device");
  EXPECT_EQ((*found)->renew_before(), absl::Hours(24 * 60));
  EXPECT_EQ((*found)->renewal_mode(), RenewalMode::kManaged);
  EXPECT_EQ(profiles->Find("other").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(profiles->Find("other").status().message()), HasSubstr("unknown profile 'other'"));
}

// renew_before: as configured, else 60 days but at most a third of the validity (a 30-day certificate is due
// 10 days before its end, never from the moment it is issued); the renewal mode as configured.
TEST(ProfileTest, RenewalSettingsAndTheirDefaults) {
  v1::Profile p = DeviceProfile();
  p.set_validity_days(365);
  EXPECT_EQ((*Profile::Compile("d", p))->renew_before(), absl::Hours(24 * 60));
  p.set_validity_days(30);
  EXPECT_EQ((*Profile::Compile("d", p))->renew_before(), absl::Hours(24 * 10));
  p.set_renew_before_days(5);
  p.set_renewal("notify");
  auto compiled = Profile::Compile("d", p);
  EXPECT_EQ((*compiled)->renew_before(), absl::Hours(24 * 5));
  EXPECT_EQ((*compiled)->renewal_mode(), RenewalMode::kNotify);
  p.set_renewal("off");
  EXPECT_EQ((*Profile::Compile("d", p))->renewal_mode(), RenewalMode::kOff);
}

}  // namespace
}  // namespace linesign::profile
