// The AWS IoT device registrar end to end: the real server (SoftHSM2 CA key, SQLite, mTLS gRPC) registers every
// certificate a station signs under a registering profile with fake AWS IoT control planes
// (tests/fake_iot/fake_iot.py, SigV4 verified, 5xx injected, AWS's default quotas), and `linesign iot wait` /
// AwaitIotRegistration report the outcome without calling AWS.
#include <stdlib.h>

#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/openssl_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "linesign/v1/ca.grpc.pb.h"
#include "linesign/v1/iot.grpc.pb.h"
#include "server/config/config.h"
#include "server/iot/sigv4.h"
#include "tests/testing/certs.h"
#include "tests/testing/fake_iot.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_ca.h"

namespace linesign {
namespace {

using ::testing::HasSubstr;
using testing::ServerProcess;
using testing::TestCa;

constexpr char kAccessKey[] = "AKIDLINESIGNREGE2E01";
constexpr char kSecret[] = "linesignRegistrarE2E/K7MDENG+bPxRfiCYzz";
constexpr char kToken[] = "FQoGZXIvYXdzELINESIGNregE2ETOKEN==";

class IotRegistrarTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto ca = TestCa::Create("ec-p256");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = new TestCa(*ca);
    auto main_fake = testing::FakeIot::Start(kAccessKey, kSecret, kToken,
                                             {"--fault-5xx", "0.1", "--reject-cn", "REJECT-.*", "--seed", "3"});
    ASSERT_TRUE(main_fake.ok()) << main_fake.status();
    main_ = main_fake->release();
    // Every call takes three seconds there: a registration outlasts a one-second wait.
    auto slow_fake = testing::FakeIot::Start(kAccessKey, kSecret, kToken, {"--no-rate-limits", "--latency-ms", "3000"});
    ASSERT_TRUE(slow_fake.ok()) << slow_fake.status();
    slow_ = slow_fake->release();

    v1::ServerConfig c = ca_->Config(ca_->dir + "/linesign.db");
    for (auto [name, endpoint] : {std::pair{"main", main_->endpoint()}, std::pair{"slow", slow_->endpoint()}}) {
      v1::IotTarget* t = c.mutable_iot()->add_targets();
      t->set_name(name);
      t->set_region("us-east-1");
      t->set_endpoint(endpoint);
    }
    c.mutable_iot()->set_retry_base_ms(50);
    c.mutable_iot()->set_retry_max_ms(500);
    for (auto [name, mode, target] :
         {std::tuple{"line", "with_ca", "main"}, std::tuple{"slowline", "without_ca", "slow"}}) {
      v1::Profile& p = (*c.mutable_profiles())[name];
      p.set_validity_days(30);
      p.add_key_types("ec-p256");
      p.mutable_iot()->set_register_(mode);
      p.mutable_iot()->add_targets(target);
      p.mutable_iot()->set_thing_name("{subject.CN}");
      p.mutable_iot()->set_policy("factory-device");
      c.mutable_access(0)->add_profiles(name);  // station-1
    }
    setenv("AWS_ACCESS_KEY_ID", kAccessKey, 1);
    setenv("AWS_SECRET_ACCESS_KEY", kSecret, 1);
    setenv("AWS_SESSION_TOKEN", kToken, 1);
    auto server = ServerProcess::Start({"--config", testing::WriteConfig(ca_->dir, config::ToYaml(c))});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
    admin_dir_ = new std::string(testing::TempDir("linesign-iot-wait"));
    ASSERT_TRUE(tls::WriteCredentials(*admin_dir_ + "/admin", ca_->station_ca.certificate_pem,
                                      ca_->StationCredentials("admin"))
                    .ok());
    ASSERT_TRUE(tls::WriteCredentials(*admin_dir_ + "/station", ca_->station_ca.certificate_pem,
                                      ca_->StationCredentials("station-1"))
                    .ok());
    // The CA first (SNI_ONLY: no verification certificate), as a factory does before the line starts.
    auto registered = Iot({"register-ca", "--target", "main", "--mode", "sni-only"});
    ASSERT_EQ(registered.exit_code, 0) << registered.output;
  }
  static void TearDownTestSuite() {
    if (server_ != nullptr) {
      auto r = server_->Stop(SIGTERM);
      EXPECT_EQ(r.exit_code, 0) << r.output;
      delete server_;
    }
    delete main_;
    delete slow_;
    delete admin_dir_;
    delete ca_;
  }

  static testing::ExitResult Iot(std::vector<std::string> args, const std::string& who = "admin") {
    std::vector<std::string> argv = {testing::ClientBinary(), "iot", args[0], "--server", server_->address(),
                                     "--tls-dir", *admin_dir_ + "/" + who};
    argv.insert(argv.end(), args.begin() + 1, args.end());
    return testing::RunCommand(argv, 180);
  }

  // Sign has station-1 sign a CSR for `cn` under `profile`; returns the serial.
  static std::string Sign(const std::string& cn, const std::string& profile) {
    v1::SignCsrRequest req;
    req.set_csr_der(testing::Csr("ec-p256", "/CN=" + cn));
    req.set_request_id("req-" + cn);
    req.set_profile(profile);
    v1::SignCsrResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    grpc::Status st =
        v1::CertificateAuthority::NewStub(ca_->Channel(server_->address(), "station-1"))->SignCsr(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    ders_[resp.serial_hex()] = resp.certificate_der();
    return resp.serial_hex();
  }

  static grpc::Status Await(const std::string& serial, const std::string& target, uint32_t timeout_ms,
                            v1::IotRegistrationStatus* out, const std::string& who = "admin") {
    v1::AwaitIotRegistrationRequest req;
    req.set_serial_hex(serial);
    req.set_target(target);
    req.set_timeout_ms(timeout_ms);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(200));
    return v1::IotAdministration::NewStub(ca_->Channel(server_->address(), who))->AwaitIotRegistration(&ctx, req, out);
  }

  static TestCa* ca_;
  static testing::FakeIot* main_;
  static testing::FakeIot* slow_;
  static ServerProcess* server_;
  static std::string* admin_dir_;
  static inline std::map<std::string, std::string> ders_;
};
TestCa* IotRegistrarTest::ca_ = nullptr;
testing::FakeIot* IotRegistrarTest::main_ = nullptr;
testing::FakeIot* IotRegistrarTest::slow_ = nullptr;
ServerProcess* IotRegistrarTest::server_ = nullptr;
std::string* IotRegistrarTest::admin_dir_ = nullptr;

// Two dozen certificates signed under a registering profile, through injected 5xx answers at AWS's default
// quotas: each is registered exactly once, ACTIVE, attached to its thing and policy, with no DescribeCertificate;
// the one the fake rejects is reported failed with AWS's reason, and the wait answers both.
TEST_F(IotRegistrarTest, SignedCertificatesAreRegisteredOnceAndWaitReportsEachOutcome) {
  std::vector<std::string> serials;
  for (int i = 0; i < 24; ++i) serials.push_back(Sign(absl::StrCat("line-dev-", i), "line"));
  const std::string rejected = Sign("REJECT-line", "line");

  for (size_t i = 0; i < serials.size(); ++i) {
    v1::IotRegistrationStatus s;
    grpc::Status st = Await(serials[i], "main", 120000, &s);
    ASSERT_TRUE(st.ok()) << serials[i] << ": " << st.error_message();
    EXPECT_EQ(s.state(), v1::IotRegistrationStatus::STATE_REGISTERED) << s.error_code() << " " << s.error_message();
    EXPECT_EQ(s.certificate_id(), iot::HexSha256(ders_[serials[i]]));
    EXPECT_EQ(s.thing_name(), absl::StrCat("line-dev-", i));
    EXPECT_EQ(s.policy(), "factory-device");
  }
  // The CLI: registered (exit 0) with the ids; failed (exit 2) with AWS's reason.
  auto ok = Iot({"wait", serials[0], "--target", "main", "--timeout", "60s"});
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_THAT(ok.output, HasSubstr(absl::StrCat("registered\nserial: ", serials[0], "\ntarget: main\n")));
  EXPECT_THAT(ok.output, HasSubstr("thing: line-dev-0\npolicy: factory-device\n"));
  auto failed = Iot({"wait", rejected, "--target", "main", "--timeout", "120"});
  EXPECT_EQ(failed.exit_code, 2) << failed.output;
  EXPECT_THAT(failed.output, HasSubstr("failed\n"));
  EXPECT_THAT(failed.output, HasSubstr("error_code: CertificateValidationException\n"));

  nlohmann::json state = main_->State();
  nlohmann::json calls = main_->Calls();
  std::map<std::string, std::string> status;
  for (const auto& c : state["certificates"]) status[c["certificateId"]] = c["status"];
  EXPECT_EQ(status.size(), serials.size());
  std::set<std::string> attached(state["policies"]["factory-device"].begin(), state["policies"]["factory-device"].end());
  EXPECT_EQ(attached.size(), serials.size());
  for (const std::string& s : serials) EXPECT_EQ(status[iot::HexSha256(ders_[s])], "ACTIVE") << s;
  int registered_ok = 0, rejected_calls = 0, described = 0;
  for (const auto& c : calls) {
    const bool succeeded = c["error"].is_null() && c["fault"].is_null();
    registered_ok += c["operation"] == "RegisterCertificate" && succeeded;
    rejected_calls += c["operation"] == "RegisterCertificate" && c["error"] == "CertificateValidationException";
    described += c["operation"] == "DescribeCertificate";
  }
  EXPECT_EQ(registered_ok, static_cast<int>(serials.size()));
  EXPECT_EQ(rejected_calls, 1);  // the permanent failure is not retried
  EXPECT_EQ(described, 0);
}

// The wait ends DEADLINE_EXCEEDED while the registration is still on its way; hostile and wrong requests are
// refused by name and change nothing.
TEST_F(IotRegistrarTest, WaitDeadlineAndRefusals) {
  const std::string slow = Sign("slow-dev", "slowline");
  auto late = Iot({"wait", slow, "--target", "slow", "--timeout", "1s"});
  EXPECT_EQ(late.exit_code, 1) << late.output;
  EXPECT_THAT(late.output, HasSubstr("DEADLINE_EXCEEDED"));
  EXPECT_THAT(late.output, HasSubstr("did not end in time"));

  v1::IotRegistrationStatus s;
  grpc::Status st = Await("XYZ", "main", 1000, &s);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("serial_hex must be 1 to 42 hexadecimal digits"));
  st = Await(slow, "nope", 1000, &s);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(st.error_message(), HasSubstr("is not configured (iot.targets: main, slow)"));
  st = Await(slow, "", 1000, &s);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("target is required: 2 targets are configured"));
  st = Await("0123456789ABCDEF", "main", 1000, &s);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(st.error_message(), HasSubstr("no certificate with serial 0123456789ABCDEF"));
  // Signed under a profile that registers with another target: never queued for this one.
  st = Await(slow, "main", 1000, &s);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(st.error_message(), HasSubstr("was never queued for registration with target 'main'"));
  // A station waits for the certificates it requested (still pending here), not for another station's, and a
  // serial it did not request is answered the same whether it exists or not.
  st = Await(slow, "slow", 500, &s, "station-1");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << st.error_message();
  st = Await(slow, "slow", 500, &s, "line1-st1");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(st.error_message(), HasSubstr("station 'line1-st1' may wait only for certificates it requested"));
  st = Await("0123456789ABCDEF", "slow", 500, &s, "line1-st1");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  st = Await(slow, "slow", 500, &s, "stranger-9");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  auto bad_timeout = Iot({"wait", slow, "--timeout", "soon"});
  EXPECT_EQ(bad_timeout.exit_code, 1);
  EXPECT_THAT(bad_timeout.output, HasSubstr("is not a duration"));
}

}  // namespace
}  // namespace linesign
