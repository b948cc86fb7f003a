// Bulk AWS IoT registration jobs and status end to end (issue 10, "Bulk jobs"): certificates issued before IoT
// was configured, then `linesign iot register` / `linesign iot status` against the real server (SoftHSM2, SQLite,
// mTLS gRPC) and a fake AWS IoT (tests/fake_iot/fake_iot.py) that refuses one certificate. Every refusal of
// EnqueueIotRegistrations / GetIotRegistrations / GetIotStatus, and of the command line, changes nothing.
#include <stdlib.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "linesign/v1/admin.grpc.pb.h"
#include "linesign/v1/ca.grpc.pb.h"
#include "linesign/v1/iot.grpc.pb.h"
#include "server/config/config.h"
#include "tests/testing/certs.h"
#include "tests/testing/fake_iot.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_ca.h"

namespace linesign {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::ServerProcess;
using testing::TestCa;

constexpr char kAccessKey[] = "AKIDLINESIGNJOBS0001";
constexpr char kSecret[] = "linesignJobsSecret/K7MDENG+bPxRfiCYzzzzzzz";
constexpr int kGood = 6;  // certificates AWS accepts; one more, CN=REJECT-ME, it refuses

class IotJobsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto ca = TestCa::Create("ec-p256");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = new TestCa(*ca);
    auto fake = testing::FakeIot::Start(kAccessKey, kSecret, "", {"--no-rate-limits", "--reject-cn", "REJECT-ME"});
    ASSERT_TRUE(fake.ok()) << fake.status();
    fake_ = fake->release();
    setenv("AWS_ACCESS_KEY_ID", kAccessKey, 1);
    setenv("AWS_SECRET_ACCESS_KEY", kSecret, 1);
    unsetenv("AWS_SESSION_TOKEN");
    setenv("AWS_SHARED_CREDENTIALS_FILE", (ca_->dir + "/no-such-credentials").c_str(), 1);

    // First without IoT registration: the certificates a factory issued before it configured AWS IoT.
    v1::ServerConfig c = ca_->Config(ca_->dir + "/linesign.db");
    v1::IotTarget* t = c.mutable_iot()->add_targets();
    t->set_name("main");
    t->set_region("us-east-1");
    t->set_endpoint(fake_->endpoint());
    {
      auto server = ServerProcess::Start({"--config", testing::WriteConfig(ca_->dir, config::ToYaml(c))});
      ASSERT_TRUE(server.ok()) << server.status();
      auto stub = v1::CertificateAuthority::NewStub(ca_->Channel((*server)->address()));
      for (int i = 0; i <= kGood; ++i) {
        v1::SignCsrRequest req;
        req.set_csr_der(testing::Csr("ec-p256", i == kGood ? "/CN=REJECT-ME" : absl::StrCat("/CN=DEVICE", i)));
        req.set_profile("device");
        req.set_request_id(absl::StrCat("iot-jobs-", i));
        v1::SignCsrResponse resp;
        grpc::ClientContext ctx;
        grpc::Status st = stub->SignCsr(&ctx, req, &resp);
        ASSERT_TRUE(st.ok()) << st.error_message();
      }
      EXPECT_EQ((*server)->Stop(SIGTERM).exit_code, 0);
    }
    // Then with it: the device profile registers without the CA, a thing per serial and a policy.
    v1::ProfileIotConfig* iot = (*c.mutable_profiles())["device"].mutable_iot();
    iot->add_targets("main");
    iot->set_register_("without_ca");
    iot->set_thing_name("{serial}");
    iot->set_policy("factory-device");
    auto server = ServerProcess::Start({"--config", testing::WriteConfig(ca_->dir, config::ToYaml(c))});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
    tls_dir_ = new std::string(testing::TempDir("linesign-iot-jobs"));
    for (const char* who : {"admin", "station-1"}) {
      ASSERT_TRUE(tls::WriteCredentials(*tls_dir_ + "/" + who, ca_->station_ca.certificate_pem,
                                        ca_->StationCredentials(who))
                      .ok());
    }
  }
  static void TearDownTestSuite() {
    if (server_ != nullptr) {
      auto r = server_->Stop(SIGTERM);
      EXPECT_EQ(r.exit_code, 0) << r.output;
      EXPECT_THAT(r.output, Not(HasSubstr(kSecret)));
      delete server_;
    }
    delete fake_;
    delete tls_dir_;
    delete ca_;
  }

  static std::unique_ptr<v1::IotAdministration::Stub> Iot(const std::string& who = "admin") {
    return v1::IotAdministration::NewStub(ca_->Channel(server_->address(), who));
  }

  static testing::ExitResult Cli(const std::vector<std::string>& args, const std::string& who = "admin") {
    std::vector<std::string> argv = {testing::ClientBinary(), "iot"};
    argv.insert(argv.end(), args.begin(), args.end());
    for (const std::string& a : {std::string("--server"), server_->address(), std::string("--tls-dir"),
                                 *tls_dir_ + "/" + who}) {
      argv.push_back(a);
    }
    return testing::RunCommand(argv, 300);
  }

  // Serials lists the device certificates' serials (the good ones, then REJECT-ME's).
  static std::pair<std::vector<std::string>, std::string> Serials() {
    v1::ListCertificatesRequest req;
    req.set_profile("device");
    req.set_page_size(100);
    v1::ListCertificatesResponse resp;
    grpc::ClientContext ctx;
    grpc::Status st =
        v1::Administration::NewStub(ca_->Channel(server_->address(), "admin"))->ListCertificates(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    std::vector<std::string> good;
    std::string rejected;
    for (const auto& c : resp.certificates()) {
      (c.subject() == "CN=REJECT-ME" ? rejected : good.emplace_back()) = c.serial_hex();
    }
    return {good, rejected};
  }

  static std::string WriteFile(const std::string& name, const std::string& text) {
    std::string path = *tls_dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }

  static v1::IotTargetStatus Status() {
    v1::IotStatusRequest req;
    v1::IotStatusResponse resp;
    grpc::ClientContext ctx;
    grpc::Status st = Iot()->GetIotStatus(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(resp.targets_size(), 1);
    return resp.targets_size() == 1 ? resp.targets(0) : v1::IotTargetStatus();
  }

  static TestCa* ca_;
  static testing::FakeIot* fake_;
  static ServerProcess* server_;
  static std::string* tls_dir_;
};
TestCa* IotJobsTest::ca_ = nullptr;
testing::FakeIot* IotJobsTest::fake_ = nullptr;
ServerProcess* IotJobsTest::server_ = nullptr;
std::string* IotJobsTest::tls_dir_ = nullptr;

grpc::Status Enqueue(v1::IotAdministration::Stub* stub, const v1::EnqueueIotRegistrationsRequest& req) {
  v1::EnqueueIotRegistrationsResponse resp;
  grpc::ClientContext ctx;
  return stub->EnqueueIotRegistrations(&ctx, req, &resp);
}

// Each refusal names what was wrong and enqueues nothing: the backlog stays empty and AWS is never called.
TEST_F(IotJobsTest, RefusalsNameTheFaultAndEnqueueNothing) {
  auto [good, rejected] = Serials();
  ASSERT_EQ(good.size(), static_cast<size_t>(kGood));
  auto stub = Iot();
  struct Case {
    const char* what;
    v1::EnqueueIotRegistrationsRequest req;
    grpc::StatusCode code;
    std::string message;
  };
  std::vector<Case> cases;
  auto add = [&](const char* what, grpc::StatusCode code, std::string message, auto fill) {
    Case c{what, {}, code, std::move(message)};
    c.req.set_target("main");
    fill(&c.req);
    cases.push_back(std::move(c));
  };
  add("unknown target", grpc::StatusCode::NOT_FOUND, "iot target 'nope' is not configured (iot.targets: main)",
      [&](auto* r) { r->set_target("nope"); r->add_serials_hex(good[0]); });
  add("unknown profile", grpc::StatusCode::NOT_FOUND, "unknown profile 'nope'",
      [&](auto* r) { r->set_profile("nope"); });
  add("profile that does not register", grpc::StatusCode::FAILED_PRECONDITION,
      "profile 'server' does not register with AWS IoT (profiles.server.iot.register is not with_ca or without_ca)",
      [&](auto* r) { r->set_profile("server"); });
  add("neither", grpc::StatusCode::INVALID_ARGUMENT, "give serials_hex (certificates by serial) or profile",
      [&](auto*) {});
  add("both", grpc::StatusCode::INVALID_ARGUMENT, "give serials_hex or profile, not both",
      [&](auto* r) { r->add_serials_hex(good[0]); r->set_profile("device"); });
  add("bad hex", grpc::StatusCode::INVALID_ARGUMENT,
      "serials_hex[1]: \"0A1G\" is not a serial (1 to 42 hexadecimal digits)",
      [&](auto* r) { r->add_serials_hex(good[0]); r->add_serials_hex("0A1G"); });
  add("too long", grpc::StatusCode::INVALID_ARGUMENT, "serials_hex[0]: \"" + std::string(43, 'A') + "\" is not",
      [&](auto* r) { r->add_serials_hex(std::string(43, 'A')); });
  add("too many", grpc::StatusCode::INVALID_ARGUMENT, "serials_hex has 1001 serials; at most 1000 per call",
      [&](auto* r) { for (int i = 0; i < 1001; ++i) r->add_serials_hex(good[i % good.size()]); });
  add("issued_since with serials", grpc::StatusCode::INVALID_ARGUMENT,
      "issued_since and page_token select with profile only",
      [&](auto* r) { r->add_serials_hex(good[0]); r->mutable_issued_since()->set_seconds(1); });
  add("bad page token", grpc::StatusCode::INVALID_ARGUMENT, "",
      [&](auto* r) { r->set_profile("device"); r->set_page_token("not-a-token"); });
  for (const Case& c : cases) {
    grpc::Status st = Enqueue(stub.get(), c.req);
    EXPECT_EQ(st.error_code(), c.code) << c.what << ": " << st.error_message();
    EXPECT_THAT(st.error_message(), HasSubstr(c.message)) << c.what;
  }
  // Not an administrator: every job and status call is refused.
  auto station = Iot("station-1");
  v1::EnqueueIotRegistrationsRequest ok;
  ok.set_target("main");
  ok.set_profile("device");
  EXPECT_EQ(Enqueue(station.get(), ok).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  {
    v1::GetIotRegistrationsRequest req;
    req.set_target("main");
    v1::IotRegistrationsSummary resp;
    grpc::ClientContext ctx;
    EXPECT_EQ(station->GetIotRegistrations(&ctx, req, &resp).error_code(), grpc::StatusCode::PERMISSION_DENIED);
    grpc::ClientContext ctx2;
    req.set_target("nope");
    EXPECT_EQ(stub->GetIotRegistrations(&ctx2, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
    grpc::ClientContext ctx3;
    req.set_target("main");
    req.add_serials_hex("xyz");
    grpc::Status st = stub->GetIotRegistrations(&ctx3, req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(st.error_message(), HasSubstr("serials_hex[0]: \"xyz\" is not a serial"));
  }
  {
    v1::IotStatusRequest req;
    v1::IotStatusResponse resp;
    grpc::ClientContext ctx;
    EXPECT_EQ(station->GetIotStatus(&ctx, req, &resp).error_code(), grpc::StatusCode::PERMISSION_DENIED);
    req.set_target("nope");
    grpc::ClientContext ctx2;
    grpc::Status st = stub->GetIotStatus(&ctx2, req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_THAT(st.error_message(), HasSubstr("iot target 'nope' is not configured (iot.targets: main)"));
  }

  // The command line refuses bad files before sending anything: by line number, and by size.
  auto bad = Cli({"register", "--target", "main", "--serials",
                  WriteFile("bad.txt", absl::StrCat(good[0], "\n# comment\nnot-hex\n"))});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.output, HasSubstr("bad.txt:3: \"not-hex\" is not a serial (1 to 42 hexadecimal digits)"));
  std::string huge;
  for (int i = 1; i <= 100001; ++i) absl::StrAppend(&huge, absl::Hex(i), "\n");
  auto too_many = Cli({"register", "--target", "main", "--serials", WriteFile("huge.txt", huge)});
  EXPECT_EQ(too_many.exit_code, 1);
  EXPECT_THAT(too_many.output, HasSubstr("huge.txt:100001: more than 100000 serials, the most one job takes"));
  auto unknown = Cli({"register", "--target", "nope", "--profile", "device"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_THAT(unknown.output, HasSubstr("NOT_FOUND: iot target 'nope' is not configured (iot.targets: main)"));
  auto denied = Cli({"status"}, "station-1");
  EXPECT_EQ(denied.exit_code, 1);
  EXPECT_THAT(denied.output, HasSubstr("PERMISSION_DENIED"));

  v1::IotTargetStatus s = Status();
  EXPECT_EQ(s.pending() + s.registered() + s.failed(), 0) << s.DebugString();
  EXPECT_TRUE(fake_->Calls().empty()) << fake_->Calls().dump();
}

// The happy path: a profile's certificates registered with progress and a summary (one refused by AWS, with its
// reason, not retried), then the same certificates by serial file: all skipped as already registered.
TEST_F(IotJobsTest, RegisterByProfileThenBySerialsFile) {
  auto [good, rejected] = Serials();
  ASSERT_EQ(good.size(), static_cast<size_t>(kGood));
  auto job = Cli({"register", "--target", "main", "--profile", "device", "--issued-since", "2000-01-01T00:00:00Z",
                  "--poll", "0.2"});
  EXPECT_EQ(job.exit_code, 1) << job.output;  // one failed
  EXPECT_THAT(job.output, HasSubstr(absl::StrCat("target main: ", kGood + 1, " certificates: enqueued ", kGood + 1,
                                                 ", already registered 0, already pending 0, unknown serial 0")));
  EXPECT_THAT(job.output, HasSubstr(absl::StrCat("registered ", kGood, " of ", kGood + 1, ", failed 1, pending 0")));
  EXPECT_THAT(job.output, HasSubstr(absl::StrCat("registered: ", kGood, "\nalready registered before this job: 0\n")));
  EXPECT_THAT(job.output, HasSubstr("failed: 1\n  CertificateValidationException: 1\n    " + rejected));
  nlohmann::json state = fake_->State();
  EXPECT_EQ(state["certificates"].size(), static_cast<size_t>(kGood));
  for (const auto& c : state["certificates"]) EXPECT_EQ(c["status"], "ACTIVE");
  EXPECT_EQ(state["policies"]["factory-device"].size(), static_cast<size_t>(kGood));

  auto again = Cli({"register", "--target", "main", "--serials",
                    WriteFile("good.txt", absl::StrJoin(good, "\n") + "\n")});
  EXPECT_EQ(again.exit_code, 0) << again.output;
  EXPECT_THAT(again.output, HasSubstr(absl::StrCat("enqueued 0, already registered ", kGood)));
  EXPECT_THAT(again.output, HasSubstr(absl::StrCat("registered: 0\nalready registered before this job: ", kGood)));
  EXPECT_THAT(again.output, HasSubstr("failed: 0\n"));

  auto status = Cli({"status"});
  ASSERT_EQ(status.exit_code, 0) << status.output;
  EXPECT_THAT(status.output, HasSubstr(absl::StrCat("target main\n  backlog: 0\n  registered: ", kGood,
                                                    "\n  failed: 1\n    CertificateValidationException: 1\n")));
  EXPECT_THAT(status.output, HasSubstr("RegisterCertificateWithoutCA"));
  // AWS saw one registration per good certificate and one refused attempt, nothing more.
  int registrations = 0, refused = 0;
  for (const auto& call : fake_->Calls()) {
    if (call["operation"] != "RegisterCertificateWithoutCA") continue;
    (call["error"].is_null() ? registrations : refused) += 1;
  }
  EXPECT_EQ(registrations, kGood);
  EXPECT_EQ(refused, 1);
}

}  // namespace
}  // namespace linesign
