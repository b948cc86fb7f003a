// `linesign iot register-ca` end to end: the real server (SoftHSM2 CA key, SQLite, mTLS gRPC) registering its
// issuing CA with fake AWS IoT control planes (tests/fake_iot/fake_iot.py), which check the SigV4 signatures,
// that the verification certificate's CN is their registration code and that the CA's key signed it.
#include <stdlib.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/openssl_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "linesign/v1/admin.grpc.pb.h"
#include "linesign/v1/iot.grpc.pb.h"
#include "server/config/config.h"
#include "server/iot/sigv4.h"
#include "server/iot/verification_certificate.h"
#include "tests/testing/fake_iot.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_ca.h"

namespace linesign {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::ServerProcess;
using testing::TestCa;

constexpr char kAccessKey[] = "AKIDLINESIGNE2E00001";
constexpr char kSecret[] = "linesignE2ESecret/K7MDENG+bPxRfiCYzzzzzz";
constexpr char kToken[] = "FQoGZXIvYXdzELINESIGNe2eTOKEN0123456789==";

class IotCaRegistrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto ca = TestCa::Create("ec-p256");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = new TestCa(*ca);
    auto main_fake = testing::FakeIot::Start(kAccessKey, kSecret, kToken, {"--no-rate-limits"});
    ASSERT_TRUE(main_fake.ok()) << main_fake.status();
    main_ = main_fake->release();
    auto sni_fake = testing::FakeIot::Start(kAccessKey, kSecret, kToken, {"--no-rate-limits"});
    ASSERT_TRUE(sni_fake.ok()) << sni_fake.status();
    sni_ = sni_fake->release();
    auto status_fake = testing::FakeIot::Start(kAccessKey, kSecret, kToken, {"--no-rate-limits"});
    ASSERT_TRUE(status_fake.ok()) << status_fake.status();
    status_ = status_fake->release();

    v1::ServerConfig c = ca_->Config(ca_->dir + "/linesign.db");
    for (auto [name, endpoint, profile] : {std::tuple{"main", main_->endpoint(), ""},
                                           std::tuple{"sni", sni_->endpoint(), ""},
                                           std::tuple{"status", status_->endpoint(), ""},
                                           std::tuple{"nowhere", main_->endpoint(), "missing-profile"}}) {
      v1::IotTarget* t = c.mutable_iot()->add_targets();
      t->set_name(name);
      t->set_region("us-east-1");
      t->set_endpoint(endpoint);
      t->set_profile(profile);
    }
    // The server inherits the environment: the AWS CLI's variables, and a shared credentials file that does not
    // exist (the "nowhere" target's profile cannot be found there).
    setenv("AWS_ACCESS_KEY_ID", kAccessKey, 1);
    setenv("AWS_SECRET_ACCESS_KEY", kSecret, 1);
    setenv("AWS_SESSION_TOKEN", kToken, 1);
    setenv("AWS_SHARED_CREDENTIALS_FILE", (ca_->dir + "/no-such-credentials").c_str(), 1);
    auto server = ServerProcess::Start({"--config", testing::WriteConfig(ca_->dir, config::ToYaml(c))});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
    admin_dir_ = new std::string(testing::TempDir("linesign-iot-admin"));
    ASSERT_TRUE(tls::WriteCredentials(*admin_dir_ + "/admin", ca_->station_ca.certificate_pem,
                                      ca_->StationCredentials("admin"))
                    .ok());
    ASSERT_TRUE(tls::WriteCredentials(*admin_dir_ + "/station", ca_->station_ca.certificate_pem,
                                      ca_->StationCredentials("station-1"))
                    .ok());
  }
  static void TearDownTestSuite() {
    if (server_ != nullptr) {
      auto r = server_->Stop(SIGTERM);
      EXPECT_EQ(r.exit_code, 0) << r.output;
      // Nothing secret is ever logged by the server.
      for (const char* hidden : {kSecret, kToken}) EXPECT_THAT(r.output, Not(HasSubstr(hidden)));
      delete server_;
    }
    delete main_;
    delete sni_;
    delete status_;
    delete admin_dir_;
    delete ca_;
  }

  static testing::ExitResult RegisterCa(const std::vector<std::string>& args, const std::string& who = "admin") {
    std::vector<std::string> argv = {testing::ClientBinary(), "iot", "register-ca", "--server", server_->address(),
                                     "--tls-dir", *admin_dir_ + "/" + who};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::RunCommand(argv, 120);
  }

  static std::string CaDer() {
    auto pem = ReadFile(ca_->chain_pem);
    auto certs = ParseCertificatesPem(*pem, "chain");
    return CertificateDer(certs->front().get());
  }

  static int Count(const nlohmann::json& calls, const std::string& op, bool succeeded) {
    int n = 0;
    for (const auto& call : calls) n += call["operation"] == op && (call["error"].is_null() == succeeded);
    return n;
  }

  static TestCa* ca_;
  static testing::FakeIot* main_;
  static testing::FakeIot* sni_;
  static testing::FakeIot* status_;  // only CaStatusActivateAndDeactivate registers there
  static ServerProcess* server_;
  static std::string* admin_dir_;
};
TestCa* IotCaRegistrationTest::ca_ = nullptr;
testing::FakeIot* IotCaRegistrationTest::main_ = nullptr;
testing::FakeIot* IotCaRegistrationTest::sni_ = nullptr;
testing::FakeIot* IotCaRegistrationTest::status_ = nullptr;
ServerProcess* IotCaRegistrationTest::server_ = nullptr;
std::string* IotCaRegistrationTest::admin_dir_ = nullptr;

TEST_F(IotCaRegistrationTest, DefaultModeWithAVerificationCertificateFromTheHsmKeyThenIdempotent) {
  auto first = RegisterCa({"--target", "main", "--mode", "default"});
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const std::string id = iot::HexSha256(CaDer());
  EXPECT_THAT(first.output, HasSubstr("registered\ncertificate_id: " + id + "\n"));
  EXPECT_THAT(first.output, HasSubstr("status: ACTIVE\nmode: DEFAULT\n"));
  nlohmann::json state = main_->State();
  ASSERT_EQ(state["caCertificates"].size(), 1u);
  EXPECT_EQ(state["caCertificates"][0]["certificateId"], id);
  EXPECT_EQ(state["caCertificates"][0]["status"], "ACTIVE");

  // The verification certificate was issued through the issuance core and recorded like any certificate.
  std::string serial;
  for (absl::string_view line : absl::StrSplit(first.output, '\n')) {
    if (absl::ConsumePrefix(&line, "verification_certificate_serial: ")) serial = std::string(line);
  }
  ASSERT_FALSE(serial.empty()) << first.output;
  v1::GetCertificateRequest get;
  get.set_serial_hex(serial);
  v1::GetCertificateResponse record;
  grpc::ClientContext ctx;
  grpc::Status st =
      v1::Administration::NewStub(ca_->Channel(server_->address(), "admin"))->GetCertificate(&ctx, get, &record);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(record.subject(), absl::StrCat("CN=", state["registrationCode"].get<std::string>()));
  EXPECT_EQ(record.profile(), iot::kVerificationProfileName);
  EXPECT_EQ(record.station(), "admin");
  EXPECT_LE(record.not_after().seconds() - record.not_before().seconds(), 86400 + 300);

  auto again = RegisterCa({"--target", "main", "--mode", "default"});
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_THAT(again.output, HasSubstr("already registered\ncertificate_id: " + id + "\n"));
  EXPECT_THAT(again.output, Not(HasSubstr("verification_certificate_serial")));
  nlohmann::json calls = main_->Calls();
  EXPECT_EQ(Count(calls, "RegisterCACertificate", true), 1) << calls.dump();
  EXPECT_EQ(Count(calls, "GetRegistrationCode", true), 1) << calls.dump();
  for (const auto& call : calls) EXPECT_NE(call.value("signature", ""), "invalid") << call.dump();
}

TEST_F(IotCaRegistrationTest, SniOnlyNeedsNoVerificationCertificate) {
  auto r = RegisterCa({"--target", "sni", "--mode", "sni-only", "--no-activate", "--auto-registration"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("status: INACTIVE\nmode: SNI_ONLY\nauto_registration: ENABLE\n"));
  EXPECT_THAT(r.output, Not(HasSubstr("verification_certificate_serial")));
  nlohmann::json calls = sni_->Calls();
  EXPECT_EQ(Count(calls, "GetRegistrationCode", true), 0);
  EXPECT_EQ(sni_->State()["caCertificates"][0]["certificateMode"], "SNI_ONLY");
}

TEST_F(IotCaRegistrationTest, UnknownAndUnresolvableTargetsAndStationsAreRefusedByName) {
  auto unknown = RegisterCa({"--target", "nope"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_THAT(unknown.output,
              HasSubstr("NOT_FOUND: iot target 'nope' is not configured (iot.targets: main, nowhere, sni, status)"));
  auto unresolved = RegisterCa({"--target", "nowhere"});
  EXPECT_EQ(unresolved.exit_code, 1);
  EXPECT_THAT(unresolved.output, HasSubstr("FAILED_PRECONDITION: iot target 'nowhere': AWS credentials: profile "
                                           "[missing-profile] (the target's profile) cannot be read"));
  auto station = RegisterCa({"--target", "main"}, "station");
  EXPECT_EQ(station.exit_code, 1);
  EXPECT_THAT(station.output, HasSubstr("PERMISSION_DENIED"));
}

}  // namespace
}  // namespace linesign

namespace linesign {
namespace {

TEST_F(IotCaRegistrationTest, CaStatusActivateAndDeactivate) {
  auto iot = [](const std::string& command, const std::string& target) {
    return testing::RunCommand({testing::ClientBinary(), "iot", command, "--server",
                                IotCaRegistrationTest::server_->address(), "--tls-dir",
                                *IotCaRegistrationTest::admin_dir_ + "/admin", "--target", target},
                               120);
  };
  const std::string id = iot::HexSha256(CaDer());
  auto before = iot("ca-status", "status");
  ASSERT_EQ(before.exit_code, 0) << before.output;
  EXPECT_THAT(before.output, HasSubstr("not registered\ncertificate_id: " + id + "\n"));
  auto deactivate_unregistered = iot("deactivate-ca", "status");
  EXPECT_EQ(deactivate_unregistered.exit_code, 1);
  EXPECT_THAT(deactivate_unregistered.output, HasSubstr("NOT_FOUND"));
  EXPECT_THAT(deactivate_unregistered.output, HasSubstr("ResourceNotFoundException"));

  ASSERT_EQ(RegisterCa({"--target", "status", "--mode", "sni-only"}).exit_code, 0);
  auto deactivated = iot("deactivate-ca", "status");
  ASSERT_EQ(deactivated.exit_code, 0) << deactivated.output;
  EXPECT_THAT(deactivated.output, HasSubstr("registered\ncertificate_id: " + id + "\n"));
  EXPECT_THAT(deactivated.output, HasSubstr("status: INACTIVE\n"));
  EXPECT_EQ(status_->State()["caCertificates"][0]["status"], "INACTIVE");
  auto status = iot("ca-status", "status");
  EXPECT_THAT(status.output, HasSubstr("status: INACTIVE\nmode: SNI_ONLY\n"));
  auto activated = iot("activate-ca", "status");
  ASSERT_EQ(activated.exit_code, 0) << activated.output;
  EXPECT_THAT(activated.output, HasSubstr("status: ACTIVE\n"));
  EXPECT_EQ(status_->State()["caCertificates"][0]["status"], "ACTIVE");
}

}  // namespace
}  // namespace linesign
