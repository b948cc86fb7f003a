#include "server/iot/iot_config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/config/config.h"

namespace linesign::iot {
namespace {

using ::testing::HasSubstr;

constexpr char kBase[] = R"yaml(
listen: 127.0.0.1:7443
hsm: {development_key_file: /etc/hostname}
ca: {chain_file: /etc/hostname}
store: {sqlite: {path: /tmp/x.db}}
tls: {insecure: true}
access: [{identity: station-1, profiles: [device]}]
)yaml";

absl::Status Check(const std::string& yaml) {
  auto c = config::ParseConfigYaml(std::string(kBase) + yaml);
  if (!c.ok()) return c.status();
  config::ApplyDefaults(&*c);
  return config::Validate(*c);
}

TEST(IotConfig, TheIssuesExampleIsAccepted) {
  auto c = config::ParseConfigYaml(std::string(kBase) + R"yaml(
iot:
  targets:
    - name: main
      region: us-east-1
      endpoint: ""
      profile: ""
      rates: {RegisterCertificate: 9, AttachPolicy: 13}
profiles:
  device:
    iot:
      targets: [main]
      register: with_ca
      thing_name: "{subject.CN}"
      policy: factory-device
)yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  config::ApplyDefaults(&*c);
  EXPECT_TRUE(config::Validate(*c).ok()) << config::Validate(*c);
  EXPECT_EQ(c->profiles().at("device").iot().register_(), "with_ca");
  EXPECT_TRUE(IotConfigWarnings(*c).empty());
  auto rates = EffectiveRates(c->iot().targets(0));
  EXPECT_EQ(rates["RegisterCertificate"], 9);
  EXPECT_EQ(rates["CreateThing"], 90);
}

TEST(IotConfig, RegistrarSettingsHaveDefaultsAndRanges) {
  auto c = config::ParseConfigYaml(std::string(kBase) + "profiles: {device: {}}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  config::ApplyDefaults(&*c);
  EXPECT_EQ(c->iot().max_in_flight(), 32u);
  EXPECT_EQ(c->iot().retry_base_ms(), 1000u);
  EXPECT_EQ(c->iot().retry_max_ms(), 300000u);
  EXPECT_EQ(c->iot().lease_seconds(), 120u);
  EXPECT_EQ(c->iot().poll_interval_ms(), 200u);
  EXPECT_TRUE(Check("iot: {max_in_flight: 64, retry_base_ms: 50, retry_max_ms: 500}\nprofiles: {device: {}}").ok());
  for (auto [yaml, message] : {
           std::pair{"iot: {max_in_flight: 2000}", "iot.max_in_flight: 2000 is outside 1 to 1024"},
           std::pair{"iot: {retry_base_ms: 5}", "iot.retry_base_ms: 5 is outside 10 to 600000"},
           std::pair{"iot: {retry_base_ms: 5000, retry_max_ms: 100}",
                     "iot.retry_max_ms: 100 is outside retry_base_ms (5000) to 3600000"},
           std::pair{"iot: {lease_seconds: 1}", "iot.lease_seconds: 1 is outside 10 to 3600"},
           std::pair{"iot: {poll_interval_ms: 99999999}", "iot.poll_interval_ms: 99999999 is outside 10 to 60000"},
       }) {
    absl::Status st = Check(std::string(yaml) + "\nprofiles: {device: {}}");
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << yaml;
    EXPECT_THAT(st.message(), HasSubstr(message)) << yaml;
  }
}

TEST(IotConfig, ErrorsNameTheField) {
  struct Case {
    const char* yaml;
    const char* message;
  } cases[] = {
      {"iot: {targets: [{name: main}, {name: main}]}\nprofiles: {device: {}}", "iot.targets[1].name: 'main' is given twice"},
      {"iot: {targets: [{name: 'a b'}]}\nprofiles: {device: {}}", "iot.targets[0].name: 'a b' is not 1-64"},
      {"iot: {targets: [{name: m, region: US}]}\nprofiles: {device: {}}", "iot.targets[0].region: 'US' is not a region"},
      {"iot: {targets: [{name: m, endpoint: 'http://iot.example'}]}\nprofiles: {device: {}}",
       "iot.targets[0].endpoint: AWS IoT endpoint 'http://iot.example' (iot.targets[].endpoint) uses plain http"},
      {"iot: {targets: [{name: m, rates: {RegisterThing: 3}}]}\nprofiles: {device: {}}",
       "iot.targets[0].rates: 'RegisterThing' is not an AWS IoT operation"},
      {"iot: {targets: [{name: m, rates: {AttachPolicy: 0}}]}\nprofiles: {device: {}}",
       "iot.targets[0].rates.AttachPolicy: 0 is outside (0, 10000]"},
      {"profiles: {device: {iot: {register: always}}}", "profiles.device.iot.register: 'always' is not with_ca"},
      {"profiles: {device: {iot: {register: with_ca}}}", "profiles.device.iot.targets: required when register is with_ca"},
      {"profiles: {device: {iot: {register: with_ca, targets: [m], thing_name: '{subject.O}'}}}",
       "profiles.device.iot.thing_name: unknown placeholder {subject.O}"},
      {"profiles: {device: {iot: {register: with_ca, targets: [m], thing_name: 'a b'}}}",
       "profiles.device.iot.thing_name: character ' ' cannot be in a thing name"},
      {"profiles: {device: {iot: {register: with_ca, targets: [m], policy: 'a/b'}}}",
       "profiles.device.iot.policy: 'a/b' is not an AWS IoT policy name"},
      {"profiles: {device: {iot: {policy: p}}}", "profiles.device.iot.register: thing_name and policy need register"},
  };
  for (const Case& c : cases) {
    absl::Status s = Check(c.yaml);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.yaml;
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.message)) << c.yaml;
  }
}

TEST(IotConfig, AnUnknownTargetIsAWarningNotAnError) {
  auto c = config::ParseConfigYaml(std::string(kBase) +
                                   "profiles: {device: {iot: {register: without_ca, targets: [mian]}}}");
  ASSERT_TRUE(c.ok()) << c.status();
  config::ApplyDefaults(&*c);
  EXPECT_TRUE(config::Validate(*c).ok());
  auto warnings = IotConfigWarnings(*c);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_THAT(warnings[0], HasSubstr("profiles.device.iot.targets: 'mian' is not a target in iot.targets"));
}

TEST(IotConfig, ThingNameTemplate) {
  ThingNameFields f{.subject_cn = "DEVICE000001", .serial = "5A0CE1", .station = "line3-st7"};
  EXPECT_EQ(*ExpandThingName("{subject.CN}", f), "DEVICE000001");
  EXPECT_EQ(*ExpandThingName("acme:{station}_{serial}", f), "acme:line3-st7_5A0CE1");
  auto bad = ExpandThingName("{subject.CN}", {.subject_cn = "Device 1"});
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("holds ' ', which AWS IoT does not allow"));
  EXPECT_FALSE(ExpandThingName("{station}", {}).ok());  // empty
}

}  // namespace
}  // namespace linesign::iot
