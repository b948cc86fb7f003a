// A network HSM that fails: the real server, gRPC and SQLite, with the CA key in SoftHSM2 behind
// tests/netsim_pkcs11 (our PKCS#11 module that forwards to SoftHSM2 and, on demand, fails C_Sign at a rate or
// loses every session). Requests that meet the failure are answered UNAVAILABLE with the PKCS#11 reason; every
// certificate that is answered verifies and is recorded; health follows the HSM; the server recovers by itself,
// never restarting.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <stdio.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/openssl_util.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "linesign/v1/ca.grpc.pb.h"
#include "server/config/config.h"
#include "tests/testing/certs.h"
#include "tests/testing/health_checks.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_ca.h"

namespace linesign {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using grpc::health::v1::HealthCheckResponse;
using testing::ServerProcess;
using testing::TestCa;

// kPatience bounds every wait for the health to change (the monitor checks every 100 ms, the module looks at its
// control file every 20 ms); the bound is for a loaded machine.
constexpr absl::Duration kPatience = absl::Seconds(60);

// Answer is one SignCsr call's outcome.
struct Answer {
  std::string request_id;
  grpc::Status status;
  std::string der;
};

// Signing is a parameter: hsm.sessions 0 (each worker signs its own batch in its own session) or 4 (a batch's
// signatures spread over four signing threads with a session each), and hsm.session_key_copy.
struct Signing {
  int sessions;
  bool session_key_copy;
  const char* name;
};

class NetHsmTest : public ::testing::TestWithParam<Signing> {
 protected:
  void SetUp() override {
    auto ca = TestCa::Create("ec-p256");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::make_unique<TestCa>(*ca);
    db_ = ca_->dir + "/linesign.db";
    control_ = ca_->dir + "/netsim.conf";
    SetControl("");
    v1::ServerConfig config = ca_->Config(db_);
    config.set_health_check_interval_ms(100);
    config.mutable_signer()->set_workers(GetParam().sessions == 0 ? 4 : 2);
    config.mutable_hsm()->set_sessions(GetParam().sessions);
    config.mutable_hsm()->set_session_key_copy(GetParam().session_key_copy);
    config.mutable_hsm()->set_module(LINESIGN_NETSIM_MODULE);
    (*config.mutable_hsm()->mutable_module_env())["LINESIGN_NETSIM_CONFIG"] = control_;
    auto server = ServerProcess::Start({"--config", testing::WriteConfig(ca_->dir, config::ToYaml(config))});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    stub_ = v1::CertificateAuthority::NewStub(ca_->Channel(server_->address()));
    auto pin = ReadFile(ca_->pin_file);
    ASSERT_TRUE(pin.ok());
    pin_ = std::string(absl::StripTrailingAsciiWhitespace(*pin));
    ASSERT_FALSE(pin_.empty());
  }

  // SetControl replaces the module's control file at once (WriteFile renames a new file over the old one).
  void SetControl(const std::string& lines) {
    ASSERT_TRUE(
        WriteFile(control_, absl::StrCat("module = ", ca_->module, "\nreread_ms = 20\n", lines, "\n"), 0600).ok());
  }

  Answer Sign(const std::string& request_id) {
    v1::SignCsrRequest req;
    req.set_csr_der(testing::Csr("ec-p256", "/CN=NETHSM-" + request_id));
    req.set_request_id(request_id);
    v1::SignCsrResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    Answer a{request_id, stub_->SignCsr(&ctx, req, &resp), ""};
    if (a.status.ok()) a.der = resp.certificate_der();
    return a;
  }

  // CheckAnswer: a certificate verifies against the chain and is the one recorded for its request id; a failure
  // is UNAVAILABLE naming `reason` and left no record.
  void CheckAnswer(const Answer& a, const std::map<std::string, std::string>& recorded,
                   const std::string& reason) {
    auto it = recorded.find(a.request_id);
    if (a.status.ok()) {
      auto cert = testing::ParseDer(a.der);
      ASSERT_NE(cert, nullptr) << a.request_id;
      EXPECT_EQ(testing::VerifyChain(cert.get(), ca_->root_pem, ca_->chain_pem), "") << a.request_id;
      ASSERT_NE(it, recorded.end()) << a.request_id << " answered with a certificate that was not recorded";
      EXPECT_EQ(it->second, absl::BytesToHexString(a.der)) << a.request_id;
    } else {
      EXPECT_EQ(a.status.error_code(), grpc::StatusCode::UNAVAILABLE)
          << a.request_id << ": " << a.status.error_message();
      EXPECT_THAT(a.status.error_message(), HasSubstr("certificate not issued: the CA key did not sign"));
      EXPECT_THAT(a.status.error_message(), HasSubstr(reason));
      EXPECT_EQ(it, recorded.end()) << a.request_id << " failed but was recorded";
    }
  }

  std::map<std::string, std::string> Recorded() {
    return testing::SqliteMap(db_, "SELECT request_id, lower(hex(der)) FROM certificates");
  }

  HealthCheckResponse::ServingStatus Health() { return testing::HealthStatus(ca_->Channel(server_->address())); }

  // Readyz returns /readyz's HTTP status (0 without an answer).
  int Readyz(std::string* body = nullptr) { return testing::Readyz(server_->http_address(), body); }

  bool WaitForHealth(HealthCheckResponse::ServingStatus want) {
    return testing::WaitUntil([&] { return Health() == want; }, kPatience);
  }

  // Stop ends the server with SIGTERM (it must still be the process started in SetUp) and returns its output.
  std::string Stop() {
    EXPECT_TRUE(testing::StillRunning(server_->pid())) << "the server died";
    auto r = server_->Stop(SIGTERM);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_THAT(r.output, Not(HasSubstr(pin_))) << "the PIN was logged";
    return r.output;
  }

  std::unique_ptr<TestCa> ca_;
  std::string db_, control_, pin_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::CertificateAuthority::Stub> stub_;
};

// C_Sign answering CKR_DEVICE_ERROR for about a third of the signatures: those requests fail UNAVAILABLE naming
// the device error, nothing is recorded for them, and every certificate answered verifies and is the recorded
// one. Before: the client got the bare "C_Sign: CKR_DEVICE_ERROR", without saying no certificate was issued.
TEST_P(NetHsmTest, SignErrorsAtARateAreUnavailableAndEverySuccessVerifies) {
  ASSERT_TRUE(Sign("warm-up").status.ok());
  SetControl("sign_error_rate = 0.3");
  std::mutex mu;
  std::vector<Answer> answers;
  std::atomic<int> failed{0}, succeeded{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      // Until both outcomes were seen often enough (the module re-reads its file within 20 ms).
      for (int i = 0; i < 500 && (failed < 20 || succeeded < 20); ++i) {
        Answer a = Sign(absl::StrCat("rate-", t, "-", i));
        (a.status.ok() ? succeeded : failed)++;
        std::lock_guard<std::mutex> lock(mu);
        answers.push_back(std::move(a));
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_GE(failed.load(), 20);
  EXPECT_GE(succeeded.load(), 20);
  const auto recorded = Recorded();
  for (const Answer& a : answers) CheckAnswer(a, recorded, "C_Sign: CKR_DEVICE_ERROR");
  EXPECT_EQ(recorded.size(), static_cast<size_t>(succeeded.load()) + 1);  // + warm-up

  SetControl("");
  EXPECT_TRUE(WaitForHealth(HealthCheckResponse::SERVING));
  Stop();
}

// The HSM goes away (every session lost, C_OpenSession refused) under load: requests fail UNAVAILABLE naming the
// device, grpc.health and /readyz say NOT_SERVING with the reason; when it comes back the signer opens new
// sessions and logs in again by itself: SERVING, certificates again, the same server process throughout.
TEST_P(NetHsmTest, HsmAwayIsUnavailableAndNotServingThenRecoversWithoutRestart) {
  ASSERT_TRUE(Sign("before").status.ok());
  ASSERT_EQ(Health(), HealthCheckResponse::SERVING);
  ASSERT_EQ(Readyz(), 200);
  const pid_t pid = server_->pid();

  // Load throughout: two stations signing one request after another.
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<Answer> answers;
  std::vector<std::thread> load;
  for (int t = 0; t < 2; ++t) {
    load.emplace_back([&, t] {
      for (int i = 0; !stop; ++i) {
        Answer a = Sign(absl::StrCat("load-", t, "-", i));
        std::lock_guard<std::mutex> lock(mu);
        answers.push_back(std::move(a));
      }
    });
  }

  SetControl("away = 1");
  EXPECT_TRUE(WaitForHealth(HealthCheckResponse::NOT_SERVING)) << "still SERVING with the HSM away";
  std::string body;
  EXPECT_EQ(Readyz(&body), 503);
  EXPECT_THAT(body, HasSubstr("hsm:"));
  EXPECT_THAT(body, HasSubstr("CKR_DEVICE_REMOVED"));
  const Answer away = Sign("while-away");
  EXPECT_EQ(away.status.error_code(), grpc::StatusCode::UNAVAILABLE) << away.status.error_message();
  EXPECT_THAT(away.status.error_message(), HasSubstr("CKR_DEVICE_REMOVED"));

  SetControl("away = 0");
  EXPECT_TRUE(WaitForHealth(HealthCheckResponse::SERVING)) << "not SERVING again after the HSM came back";
  EXPECT_EQ(Readyz(), 200);
  const Answer back = Sign("after");
  EXPECT_TRUE(back.status.ok()) << back.status.error_message();
  stop = true;
  for (auto& t : load) t.join();

  const auto recorded = Recorded();
  CheckAnswer(back, recorded, "");
  int failures = 0;
  for (const Answer& a : answers) {
    failures += a.status.ok() ? 0 : 1;
    // In flight at the loss, a request may also meet the lost session's own code before the device's.
    if (!a.status.ok() && a.status.error_message().find("CKR_DEVICE_REMOVED") == std::string::npos) {
      CheckAnswer(a, recorded, "CKR_SESSION_HANDLE_INVALID");
    } else {
      CheckAnswer(a, recorded, "CKR_DEVICE_REMOVED");
    }
  }
  EXPECT_GT(failures, 0) << "no request met the HSM away";
  EXPECT_EQ(server_->pid(), pid);
  const std::string out = Stop();
  EXPECT_THAT(out, HasSubstr("health: NOT_SERVING: hsm: "));
  EXPECT_THAT(out, HasSubstr("health: SERVING again"));
}

// A fail-over: every session (and the login) lost at once while the HSM stays reachable. The signer replaces the
// session, logs in again and signs: no request fails, health never has to change.
TEST_P(NetHsmTest, SessionsLostInAFailOverAreReplacedWithoutFailingRequests) {
  ASSERT_TRUE(Sign("before").status.ok());
  for (int epoch = 1; epoch <= 3; ++epoch) {
    SetControl(absl::StrCat("epoch = ", epoch));
    // The module sees the change within 20 ms; requests go on meanwhile and must all succeed either way.
    std::vector<Answer> answers;
    std::vector<std::thread> threads;
    std::mutex mu;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 10; ++i) {
          Answer a = Sign(absl::StrCat("failover-", epoch, "-", t, "-", i));
          std::lock_guard<std::mutex> lock(mu);
          answers.push_back(std::move(a));
        }
      });
    }
    for (auto& t : threads) t.join();
    const auto recorded = Recorded();
    for (const Answer& a : answers) {
      EXPECT_TRUE(a.status.ok()) << a.request_id << ": " << a.status.error_message();
      CheckAnswer(a, recorded, "");
    }
  }
  Stop();
}

INSTANTIATE_TEST_SUITE_P(Sessions, NetHsmTest,
                         ::testing::Values(Signing{0, false, "SessionPerWorker"},
                                           Signing{4, false, "FourSigningSessions"},
                                           Signing{4, true, "FourSigningSessionsWithKeyCopies"}),
                         [](const ::testing::TestParamInfo<Signing>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace linesign
