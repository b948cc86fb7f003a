#include "server/config/config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace linesign::config {
namespace {

using ::testing::HasSubstr;

constexpr char kMinimal[] = R"yaml(
listen: 127.0.0.1:7443
hsm:
  development_key_file: /etc/hostname
ca:
  chain_file: /etc/hostname
store:
  sqlite:
    path: /tmp/x.db
profiles:
  device:
    validity_days: 90
    san_types: [dns]
)yaml";

TEST(ConfigTest, MinimalConfigGetsItsDefaults) {
  auto c = ParseConfigYaml(kMinimal);
  ASSERT_TRUE(c.ok()) << c.status();
  ApplyDefaults(&*c);
  EXPECT_TRUE(Validate(*c).ok()) << Validate(*c);
  EXPECT_EQ(c->default_profile(), "device");
  const auto& p = c->profiles().at("device");
  EXPECT_EQ(p.validity_days(), 90u);
  EXPECT_EQ(p.backdate_seconds(), 300u);
  EXPECT_THAT(p.extended_key_usages(), ::testing::ElementsAre("clientAuth"));
  EXPECT_THAT(p.required_subject_attributes(), ::testing::ElementsAre("CN"));
  EXPECT_GE(c->signer().workers(), 1u);
  EXPECT_EQ(c->signer().max_batch(), 64u);
}

TEST(ConfigTest, RoundTripsThroughYaml) {
  auto c = ParseConfigYaml(kMinimal);
  ApplyDefaults(&*c);
  auto again = ParseConfigYaml(ToYaml(*c));
  ASSERT_TRUE(again.ok()) << again.status() << "\n" << ToYaml(*c);
  EXPECT_EQ(again->SerializeAsString(), c->SerializeAsString());
}

TEST(ConfigTest, ParseErrorsNameTheField) {
  EXPECT_THAT(std::string(ParseConfigYaml(std::string(kMinimal) + "colour: red\n").status().message()),
              HasSubstr("colour"));
  EXPECT_THAT(std::string(ParseConfigYaml("listen: [\n").status().message()), HasSubstr("not valid YAML"));
  EXPECT_THAT(std::string(ParseConfigYaml("- a\n- b\n").status().message()), HasSubstr("must be a mapping"));
  EXPECT_THAT(std::string(ParseConfigYaml("signer:\n  workers: many\n").status().message()), HasSubstr("workers"));
  EXPECT_THAT(std::string(ParseConfigYaml("listen: a\nlisten: b\n").status().message()), HasSubstr("listen"));
}

TEST(ConfigTest, ValidationErrorsNameTheField) {
  struct Case {
    std::string edit;
    std::string message;
  } cases[] = {
      {"profiles:\n  device:\n    validity_days: 4000\n", "profiles.device.validity_days: must be 1 to 3650"},
      {"profiles:\n  device:\n    key_types: [dsa]\n", "profiles.device.key_types: unknown 'dsa'"},
      {"profiles:\n  device:\n    rsa_min_bits: 1024\n", "profiles.device.rsa_min_bits"},
      {"profiles:\n  device:\n    extended_key_usages: [flying]\n", "unknown usage 'flying'"},
      {"profiles:\n  device:\n    subject_attributes: [XX]\n", "unknown attribute 'XX'"},
      {"profiles:\n  device:\n    required_subject_attributes: [O]\n    subject_attributes: [CN]\n",
       "'O' is required but not in subject_attributes"},
      {"profiles:\n  device:\n    san_types: [x400]\n", "san_types: unknown 'x400'"},
      {"profiles:\n  'bad name':\n    validity_days: 1\n", "name must be"},
      {"profiles:\n  a: {}\n  b: {}\n", "default_profile: required"},
      {"default_profile: other\nprofiles:\n  a: {}\n", "'other' is not a key of profiles"},
      {"signer:\n  workers: 100\n", "signer.workers: must be 1 to 64"},
  };
  for (const auto& c : cases) {
    std::string yaml = R"yaml(
listen: 127.0.0.1:7443
hsm: {development_key_file: /etc/hostname}
ca: {chain_file: /etc/hostname}
store: {sqlite: {path: /tmp/x.db}}
)yaml" + c.edit;
    if (c.edit.find("profiles") == std::string::npos) yaml += "profiles:\n  device: {}\n";
    auto parsed = ParseConfigYaml(yaml);
    ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << yaml;
    ApplyDefaults(&*parsed);
    EXPECT_THAT(std::string(Validate(*parsed).message()), HasSubstr(c.message)) << yaml;
  }
}

TEST(ConfigTest, HsmRulesNameTheField) {
  auto c = ParseConfigYaml(kMinimal);
  ApplyDefaults(&*c);
  c->mutable_hsm()->set_module("/etc/hostname");
  EXPECT_THAT(std::string(Validate(*c).message()), HasSubstr("cannot be combined with hsm.module"));
  c->mutable_hsm()->clear_development_key_file();
  EXPECT_THAT(std::string(Validate(*c).message()), HasSubstr("hsm.key_uri: required"));
  c->mutable_hsm()->set_key_uri("pkcs11:object=k");
  EXPECT_THAT(std::string(Validate(*c).message()), HasSubstr("exactly one of hsm.pin_file and hsm.pin_env"));
  c->mutable_hsm()->set_pin_env("PIN");
  EXPECT_TRUE(Validate(*c).ok()) << Validate(*c);
}

}  // namespace
}  // namespace linesign::config
