#include "server/config/config.h"

#include <sys/stat.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/auth/station_credential.h"

namespace linesign::config {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

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
tls:
  insecure: true
access:
  - identity: station-1
    profiles: [device]
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
  EXPECT_EQ(c->signer().max_streams_per_station(), 16u);
  EXPECT_EQ(c->health_check_interval_ms(), 2000u);
  EXPECT_EQ(c->crl().validity_seconds(), 604800u);
  EXPECT_EQ(c->crl().refresh_before_seconds(), 302400u);
  EXPECT_EQ(c->crl().min_interval_ms(), 1000u);
  EXPECT_EQ(c->crl().http_path(), "/linesign.crl");
  EXPECT_EQ(c->http().listen(), "127.0.0.1:9443");
  EXPECT_EQ(c->http().tls(), "off");
  EXPECT_EQ(c->http().threads(), 2u);
  EXPECT_THAT(p.key_usages(), ::testing::ElementsAre("digitalSignature"));
  EXPECT_EQ(p.max_subject_value_bytes(), 64u);
  EXPECT_EQ(p.max_san_value_bytes(), 255u);
  EXPECT_EQ(p.max_validity_days(), 3650u);
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
  EXPECT_THAT(std::string(ParseConfigYaml("listen: \"\xff\"\n").status().message()), HasSubstr("not valid UTF-8"));
  // Found by fuzz/config_fuzzer: a recursive alias used to recurse until the stack overflowed.
  EXPECT_THAT(std::string(ParseConfigYaml("a: &x [*x]\n").status().message()), HasSubstr("recursive alias"));
  EXPECT_THAT(std::string(ParseConfigYaml("a: " + std::string(40, '[') + std::string(40, ']') + "\n").status().message()),
              HasSubstr("nested more than 16 levels"));
}

// hsm.sessions: 0 to 256 signing sessions; more is refused with the field's name and range.
TEST(ConfigTest, HsmSessionsOverTheirRangeAreRefused) {
  const std::string yaml = R"yaml(
hsm: {development_key_file: /etc/hostname, sessions: SESSIONS}
ca: {chain_file: /etc/hostname}
store: {sqlite: {path: /tmp/x.db}}
listen: 127.0.0.1:7443
profiles:
  device: {}
tls: {insecure: true}
access: [{identity: s, profiles: [device]}]
)yaml";
  for (const char* sessions : {"64", "256", "257"}) {
    std::string text = yaml;
    text.replace(text.find("SESSIONS"), 8, sessions);
    auto parsed = ParseConfigYaml(text);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    ApplyDefaults(&*parsed);
    const std::string message(Validate(*parsed).message());
    if (std::string(sessions) == "257") {
      EXPECT_THAT(message, HasSubstr("hsm.sessions: must be 0 to 256 (0: one per signer.workers)"));
    } else {
      EXPECT_THAT(message, Not(HasSubstr("hsm.sessions"))) << sessions;
    }
  }
}

TEST(ConfigTest, ValidationErrorsNameTheField) {
  struct Case {
    std::string edit;
    std::string message;
  } cases[] = {
      {"profiles:\n  device:\n    validity_days: 4000\n", "profiles.device.validity_days: must be 1 to max_validity_days"},
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
      {"signer:\n  max_streams_per_station: 2000\n", "signer.max_streams_per_station: must be 1 to 1024"},
      {"limits:\n  stream_window: 5000\n", "limits.stream_window: must be 1 to 4096"},
      {"limits:\n  stream_window_bytes: 1000\n", "limits.stream_window_bytes: must be 65536 to 67108864"},
      {"limits:\n  max_streams: 200000\n", "limits.max_streams: must be 1 to 100000"},
      {"limits:\n  max_concurrent_streams_per_connection: 20000\n",
       "limits.max_concurrent_streams_per_connection: must be 1 to 10000"},
      {"limits:\n  max_connection_idle_seconds: 100000\n", "limits.max_connection_idle_seconds: must be 1 to 86400"},
      {"limits:\n  handshake_timeout_seconds: 301\n", "limits.handshake_timeout_seconds: must be 1 to 300"},
      {"limits:\n  grpc_memory_bytes: 1000\n", "limits.grpc_memory_bytes: must be 16777216"},
      {"health_check_interval_ms: 50\n", "health_check_interval_ms: must be 100 to 60000"},
      {"health_check_interval_ms: 60001\n", "health_check_interval_ms: must be 100 to 60000"},
      {"http: {tls: on}\nlisten: 127.0.0.1:7443\ntls: {insecure: true}\n",
       "http.tls: 'on' is not one of off, same-as-grpc"},
      {"http: {require_client_certificate: true}\n", "http.require_client_certificate: needs http.tls: same-as-grpc"},
      {"http: {threads: 17}\n", "http.threads: must be 1 to 16"},
      {"http: {listen: nowhere}\nlisten: 127.0.0.1:7443\n", "http.listen: must be host:port"},
      {"profiles:\n  device:\n    validity_days: 400\n    max_validity_days: 365\n",
       "profiles.device.validity_days: must be 1 to max_validity_days (365)"},
      {"profiles:\n  device:\n    key_usages: [certSign]\n", "profiles.device.key_usages: unknown 'certSign'"},
      {"profiles:\n  device:\n    subject_patterns: {O: 'x'}\n    subject_attributes: [CN]\n",
       "profiles.device.subject_patterns.O: the attribute is not in subject_attributes"},
      {"profiles:\n  device:\n    subject_patterns: {CN: '^[A-Z'}\n", "profiles.device.subject_patterns.CN: bad RE2"},
      {"profiles:\n  device:\n    san_patterns: {dns: 'x'}\n", "profiles.device.san_patterns.dns: the type is not"},
      {"profiles:\n  device:\n    san_from_subject: dns\n    san_types: [dns]\n",
       "profiles.device.san_from_subject: cannot be combined with san_types"},
      {"profiles:\n  device:\n    san_from_subject: uri\n", "profiles.device.san_from_subject: must be"},
      {"profiles:\n  device:\n    max_san_value_bytes: 5000\n", "profiles.device.max_san_value_bytes: must be"},
      {"profiles:\n  device:\n    crl_distribution_point: 'file:///crl'\n",
       "profiles.device.crl_distribution_point: must be an http://"},
      {"profiles:\n  device:\n    crl_distribution_point: 'http://crl.example/a b.crl'\n",
       "profiles.device.crl_distribution_point: holds the byte 0x20 at offset 20: the URL must be printable ASCII"},
      {"profiles:\n  device:\n    crl_distribution_point: 'http://crl.example/\xc3\xa9.crl'\n",
       "profiles.device.crl_distribution_point: holds the byte 0xC3 at offset 19"},
      {"profiles:\n  device:\n    crl_distribution_point: 'http:///ca.crl'\n",
       "profiles.device.crl_distribution_point: has no host after the scheme"},
      {"profiles:\n  device:\n    crl_distribution_point: 'http://crl.example/%zz'\n",
       "profiles.device.crl_distribution_point: has a '%' at offset 19 that is not followed by two hexadecimal"},
      {"profiles:\n  device:\n    crl_distribution_point: 'HTTP://crl.example/ca.crl'\n",
       "profiles.device.crl_distribution_point: must be an http://, https:// or ldap:// URL"},
      {absl::StrCat("profiles:\n  device:\n    crl_distribution_point: 'http://crl.example/", std::string(500, 'a'),
                    "'\n"),
       "profiles.device.crl_distribution_point: must be at most 512 bytes (it has 519)"},
      {"crl: {validity_seconds: 60}\n", "crl.validity_seconds: must be 3600 (1 hour) to 31622400 (366 days)"},
      {"crl: {validity_seconds: 7200, refresh_before_seconds: 7200}\n",
       "crl.refresh_before_seconds: must be 60 to crl.validity_seconds - 60 (7140)"},
      {"crl: {min_interval_ms: 5}\n", "crl.min_interval_ms: must be 10 to 3600000"},
      {"crl: {http_path: 'linesign.crl'}\n", "crl.http_path: must be \"off\" or \"/\" followed by"},
      {"crl: {http_path: '/'}\n", "crl.http_path: must be \"off\" or \"/\" followed by"},
      {"crl: {http_path: '/a/../metrics'}\n", "crl.http_path: must be \"off\" or \"/\" followed by"},
      {"crl: {http_path: '/crl?x=1'}\n", "crl.http_path: must be \"off\" or \"/\" followed by"},
      {"crl: {http_path: '/metrics'}\n", "crl.http_path: is /metrics, which the HTTP listener already serves"},
      {"profiles:\n  device:\n    policy_oids: ['1.2.x']\n", "profiles.device.policy_oids: '1.2.x' is not"},
      {"profiles:\n  device:\n    allow_wildcard_dns: true\n", "profiles.device.allow_wildcard_dns: needs \"dns\" in san_types"},
      {"tls: {}\n", "tls.certificate_file: required"},
      {"tls: {insecure: true}\nlisten: 0.0.0.0:7443\n", "tls.insecure: plaintext is allowed only on a loopback"},
      {"tls: {certificate_file: /etc/hostname, key_file: /etc/hostname, client_ca_file: /etc/hostname}\n",
       "tls.key_file: /etc/hostname is readable by others"},
      {"tls: {certificate_file: /nonexistent.pem}\n", "tls.certificate_file: cannot read /nonexistent.pem"},
      {"tls: {insecure: false, identity: serial}\n", "tls.certificate_file: required"},
      {"access: []\n", "access: at least one rule is required"},
      {"access: [{profiles: [device]}]\n", "access[0]: exactly one of identity and identity_pattern"},
      {"access: [{identity: a, identity_pattern: b}]\n", "access[0]: exactly one of"},
      {"access: [{identity: a}, {identity_pattern: 'line('}]\n", "access[1].identity_pattern: bad RE2"},
      {"access: [{identity: a, profiles: [nope]}]\n", "access[0].profiles: unknown profile 'nope'"},
      {"access: [{identity: a, rate_per_second: -1}]\n", "access[0].rate_per_second: must be 0"},
      {"events: {webhook: {timeout_ms: 1000}}\n", "events.webhook.url: required"},
      {"events: {webhook: {url: 'ftp://hooks.example/in'}}\n",
       "events.webhook.url: 'ftp://hooks.example/in' must start with http:// or https://"},
      {"events: {webhook: {url: 'http:///in'}}\n", "events.webhook.url: 'http:///in' has no host"},
      {"events: {webhook: {url: 'http://hooks.example:70000/in'}}\n",
       "events.webhook.url: port '70000' is not 1 to 65535"},
      {"events: {webhook: {url: 'https://u:pw@hooks.example/in'}}\n",
       "events.webhook.url: user information (user:password@) is not allowed"},
      {"events: {webhook: {url: 'http://hooks.example/in', timeout_ms: 50}}\n",
       "events.webhook.timeout_ms: must be 100 to 60000"},
      {"events: {webhook: {url: 'http://hooks.example/in', max_backoff_ms: 3600001}}\n",
       "events.webhook.max_backoff_ms: must be 100 to 3600000"},
      {"events: {webhook: {url: 'http://hooks.example/in', secret_file: /etc/hostname}}\n",
       "events.webhook.secret_file: /etc/hostname is readable by others"},
      {"events: {webhook: {url: 'http://hooks.example/in', secret_file: /nonexistent.secret}}\n",
       "events.webhook.secret_file: cannot read /nonexistent.secret"},
  };
  for (const auto& c : cases) {
    std::string yaml = R"yaml(
hsm: {development_key_file: /etc/hostname}
ca: {chain_file: /etc/hostname}
store: {sqlite: {path: /tmp/x.db}}
)yaml" + c.edit;
    if (c.edit.find("listen:") == std::string::npos) yaml += "listen: 127.0.0.1:7443\n";
    if (c.edit.find("profiles:\n") == std::string::npos) yaml += "profiles:\n  device: {}\n";
    if (c.edit.find("tls:") == std::string::npos) yaml += "tls: {insecure: true}\n";
    if (c.edit.find("access:") == std::string::npos) yaml += "access: [{identity: s, profiles: [device]}]\n";
    auto parsed = ParseConfigYaml(yaml);
    ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << yaml;
    ApplyDefaults(&*parsed);
    EXPECT_THAT(std::string(Validate(*parsed).message()), HasSubstr(c.message)) << yaml;
  }
}

// Who is a station: no profile may put the station EKU (or anyExtendedKeyUsage, which would match it) into a
// device certificate, by name or by OID, as a usage or as a policy.
TEST(ConfigTest, NoProfileCanIssueTheStationMarker) {
  const std::string marker = auth::kStationEkuOid;
  struct Case {
    std::string profile;
    std::string message;
  } cases[] = {
      {"extended_key_usages: [clientAuth, '" + marker + "']",
       "profiles.device.extended_key_usages: '" + marker + "' is the linesign station EKU " + marker +
           ", which marks station and administrator credentials; no profile may issue it"},
      {"policy_oids: ['" + marker + "']", "profiles.device.policy_oids: '" + marker + "' is the linesign station EKU"},
      {"extended_key_usages: [anyExtendedKeyUsage]",
       "profiles.device.extended_key_usages: 'anyExtendedKeyUsage' is anyExtendedKeyUsage (2.5.29.37.0)"},
      {"extended_key_usages: ['2.5.29.37.0']",
       "profiles.device.extended_key_usages: '2.5.29.37.0' is anyExtendedKeyUsage"},
  };
  for (const auto& c : cases) {
    std::string yaml = std::string(kMinimal);
    yaml.replace(yaml.find("    san_types: [dns]\n"), 0, "    " + c.profile + "\n");
    auto parsed = ParseConfigYaml(yaml);
    ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << yaml;
    ApplyDefaults(&*parsed);
    EXPECT_THAT(std::string(Validate(*parsed).message()), HasSubstr(c.message)) << yaml;
  }
}

TEST(ConfigTest, StationMarkerNeedsClientCertificates) {
  auto c = ParseConfigYaml(kMinimal);
  ASSERT_TRUE(c.ok()) << c.status();
  ApplyDefaults(&*c);
  c->mutable_tls()->set_require_station_marker(true);
  EXPECT_THAT(std::string(Validate(*c).message()),
              HasSubstr("tls.require_station_marker: cannot be combined with tls.insecure"));
}

TEST(ConfigTest, TrustedProxiesNeedClientCertificates) {
  auto c = ParseConfigYaml(kMinimal);
  ASSERT_TRUE(c.ok()) << c.status();
  ApplyDefaults(&*c);
  c->mutable_tls()->add_trusted_proxies("edge-proxy");
  EXPECT_THAT(std::string(Validate(*c).message()),
              HasSubstr("tls.trusted_proxies: cannot be combined with tls.insecure"));
}

TEST(ConfigTest, MissingTlsSectionIsExplained) {
  std::string yaml = kMinimal;
  yaml.replace(yaml.find("tls:\n  insecure: true\n"), 21, "");
  auto c = ParseConfigYaml(yaml);
  ASSERT_TRUE(c.ok()) << c.status();
  ApplyDefaults(&*c);
  EXPECT_THAT(std::string(Validate(*c).message()), HasSubstr("tls: required"));
}

TEST(ConfigTest, LoopbackAddresses) {
  EXPECT_TRUE(IsLoopback("127.0.0.1:7443"));
  EXPECT_TRUE(IsLoopback("127.1.2.3:1"));
  EXPECT_TRUE(IsLoopback("[::1]:7443"));
  EXPECT_TRUE(IsLoopback("localhost:7443"));
  EXPECT_FALSE(IsLoopback("0.0.0.0:7443"));
  EXPECT_FALSE(IsLoopback("[::]:7443"));
  EXPECT_FALSE(IsLoopback("10.0.0.1:7443"));
  EXPECT_FALSE(IsLoopback("127.0.0.1"));
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

namespace linesign::config {
namespace {

// store: {postgres: ...} (issue 13): a connection string with a password is refused without repeating it; the
// password file must be private.
TEST(ConfigTest, PostgresStoreRules) {
  auto with_store = [](const std::string& store_yaml) {
    std::string yaml = kMinimal;
    yaml.replace(yaml.find("store:\n  sqlite:\n    path: /tmp/x.db\n"),
                 std::string("store:\n  sqlite:\n    path: /tmp/x.db\n").size(), store_yaml);
    auto c = ParseConfigYaml(yaml);
    EXPECT_TRUE(c.ok()) << c.status();
    ApplyDefaults(&*c);
    return Validate(*c);
  };
  EXPECT_TRUE(with_store("store:\n  postgres:\n    connection: \"host=db1 dbname=linesign user=linesign\"\n").ok());
  EXPECT_TRUE(with_store("store:\n  postgres:\n    connection: \"postgresql://linesign@db1:5432/linesign\"\n").ok());
  for (const char* secret : {"host=db1 dbname=linesign user=linesign password=Hunter2-secret",
                             "postgresql://linesign:Hunter2-secret@db1/linesign",
                             "postgresql://db1/linesign?password=Hunter2-secret"}) {
    absl::Status st = with_store(absl::StrCat("store:\n  postgres:\n    connection: \"", secret, "\"\n"));
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << secret;
    EXPECT_THAT(st.message(), HasSubstr("store.postgres.connection: holds a password; remove it and give the "
                                        "password in store.postgres.password_file"));
    EXPECT_THAT(st.message(), ::testing::Not(HasSubstr("Hunter2")));
  }
  absl::Status st = with_store("store:\n  postgres:\n    connection: \"host='Hunter2-secret\"\n");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("store.postgres.connection: is not a libpq connection string"));
  EXPECT_THAT(st.message(), ::testing::Not(HasSubstr("Hunter2")));
  EXPECT_THAT(with_store("store:\n  postgres: {}\n").message(), HasSubstr("store.postgres.connection: required"));

  const std::string dir = ::testing::TempDir();
  const std::string pw = dir + "/pg-password-rules";
  { std::ofstream(pw) << "secret\n"; }
  chmod(pw.c_str(), 0644);
  st = with_store(absl::StrCat("store:\n  postgres:\n    connection: \"host=db1\"\n    password_file: ", pw, "\n"));
  EXPECT_THAT(st.message(), HasSubstr(absl::StrCat("store.postgres.password_file: ", pw,
                                                   " is readable by others; chmod o-r it")));
  chmod(pw.c_str(), 0600);
  EXPECT_TRUE(
      with_store(absl::StrCat("store:\n  postgres:\n    connection: \"host=db1\"\n    password_file: ", pw, "\n")).ok());
  st = with_store("store:\n  postgres:\n    connection: \"host=db1\"\n    password_file: /nonexistent/pw\n");
  EXPECT_THAT(st.message(), HasSubstr("store.postgres.password_file: cannot read /nonexistent/pw"));
}

// A profile that registers its certificates with AWS IoT is accepted on the PostgreSQL store, which holds the
// registrations as SQLite does (it was refused while it did not).
TEST(ConfigTest, PostgresStoreTakesAwsIotRegistration) {
  std::string yaml = kMinimal;
  const std::string sqlite = "store:\n  sqlite:\n    path: /tmp/x.db\n";
  yaml.replace(yaml.find(sqlite), sqlite.size(), "store:\n  postgres:\n    connection: \"host=db1\"\n");
  auto c = ParseConfigYaml(yaml);
  ASSERT_TRUE(c.ok()) << c.status();
  v1::Profile& device = c->mutable_profiles()->at("device");
  device.mutable_iot()->set_register_("without_ca");
  device.mutable_iot()->add_targets("main");
  ApplyDefaults(&*c);
  EXPECT_TRUE(Validate(*c).ok()) << Validate(*c);
}

}  // namespace
}  // namespace linesign::config
