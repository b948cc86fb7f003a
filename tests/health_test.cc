// grpc.health.v1 follows the HSM and the store: the real server, SoftHSM2 and SQLite, each made unusable behind
// the server's back and then restored. Health is asked as a station over mTLS, as a load balancer would.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/config/config.h"
#include "common/openssl_util.h"
#include "hsm/pin.h"
#include "hsm/pkcs11_module.h"
#include "hsm/pkcs11_signer.h"
#include "hsm/pkcs11_uri.h"
#include "server/observability/health_monitor.h"
#include "tests/testing/db_write_lock.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_ca.h"

namespace linesign {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;
using testing::ServerProcess;
using testing::TestCa;

// kPatience bounds every wait for the health to change: the monitor checks every 100 ms here and the store's
// ping gives up after 1 s, so a change shows within about 1.1 s; the bound is for a loaded machine.
constexpr absl::Duration kPatience = absl::Seconds(60);

// TokenDir returns the directories.tokendir of the SoftHSM2 configuration file `conf`.
std::string TokenDir(const std::string& conf) {
  std::ifstream in(conf);
  std::string line;
  static const std::regex kTokenDir(R"(^\s*directories\.tokendir\s*=\s*(\S+)\s*$)");
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_match(line, m, kTokenDir)) return m[1];
  }
  return "";
}

class HealthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = TestCa::Create("ec-p256");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::make_unique<TestCa>(*ca);
    db_ = ca_->dir + "/linesign.db";
    v1::ServerConfig config = ca_->Config(db_);
    config.set_health_check_interval_ms(100);
    auto server = ServerProcess::Start({"--config", testing::WriteConfig(ca_->dir, config::ToYaml(config))});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  // Stop ends the server with SIGTERM and returns its output (the test checks the health lines in it).
  std::string Stop() {
    auto r = server_->Stop(SIGTERM);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return r.output;
  }

  // Status asks Health.Check as station-1; UNKNOWN when the call itself fails.
  HealthCheckResponse::ServingStatus Status() {
    HealthCheckRequest req;
    HealthCheckResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    grpc::Status st = Health::NewStub(channel())->Check(&ctx, req, &resp);
    if (!st.ok()) {
      ADD_FAILURE() << "Health.Check: " << st.error_code() << " " << st.error_message();
      return HealthCheckResponse::UNKNOWN;
    }
    return resp.status();
  }

  // WaitForStatus asks until the answer is `want` (true) or kPatience has passed (false).
  bool WaitForStatus(HealthCheckResponse::ServingStatus want) {
    const absl::Time deadline = absl::Now() + kPatience;
    while (absl::Now() < deadline) {
      if (Status() == want) return true;
      absl::SleepFor(absl::Milliseconds(50));
    }
    return false;
  }

  std::shared_ptr<grpc::Channel> channel() {
    if (channel_ == nullptr) channel_ = ca_->Channel(server_->address());
    return channel_;
  }

  std::unique_ptr<TestCa> ca_;
  std::string db_;
  std::unique_ptr<ServerProcess> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

// A database locked by another process past the ping's busy timeout is a server that cannot record a
// certificate: NOT_SERVING, with the reason logged once; once the lock is gone, SERVING again. Before the health
// monitor, health said SERVING from start-up to shutdown whatever the database did.
TEST_F(HealthTest, StoreLockedPastItsBusyTimeoutIsNotServingUntilReleased) {
  ASSERT_EQ(Status(), HealthCheckResponse::SERVING);
  testing::DbWriteLock lock(db_);
  ASSERT_TRUE(lock.held());
  EXPECT_TRUE(WaitForStatus(HealthCheckResponse::NOT_SERVING)) << "still SERVING with the database locked";
  lock.Release();
  EXPECT_TRUE(WaitForStatus(HealthCheckResponse::SERVING)) << "not SERVING again after the lock was released";
  const std::string out = Stop();
  EXPECT_THAT(out, HasSubstr("health: NOT_SERVING: store: ping: database is locked"));
  EXPECT_THAT(out, HasSubstr("health: SERVING again"));
  // Logged once per change, not once per check.
  EXPECT_EQ(out.find("health: NOT_SERVING: store"), out.rfind("health: NOT_SERVING: store")) << out;
}

// The CA key taken away behind the server (its object files moved out of the SoftHSM2 token, as if the key were
// deleted on the HSM): the health probe's signature fails, the signer's recovery (log in again, find the key
// again) finds no key, and health says NOT_SERVING with that reason. Recovery is not checked here: a running
// SoftHSM2 does not pick up objects or tokens put back on disk behind it (moving the files back, even after another
// process wrote to the token, leaves the key unfound until the module is initialised again), so "SERVING again"
// is proven with the store (above) and by the monitor's unit test.
TEST_F(HealthTest, KeyGoneFromTheTokenIsNotServing) {
  ASSERT_EQ(Status(), HealthCheckResponse::SERVING);
  const std::string tokens = TokenDir(ca_->softhsm2_conf);
  ASSERT_FALSE(tokens.empty()) << "no directories.tokendir in " << ca_->softhsm2_conf;
  // tokendir/<token uuid>/<object uuid>.object beside token.object (the token's own record, left in place).
  const std::string away = ca_->dir + "/objects-away";
  ASSERT_EQ(mkdir(away.c_str(), 0700), 0);
  int moved = 0;
  for (const auto& token : std::filesystem::directory_iterator(tokens)) {
    if (!token.is_directory()) continue;
    for (const auto& f : std::filesystem::directory_iterator(token.path())) {
      const std::string name = f.path().filename();
      if (f.path().extension() != ".object" || name == "token.object") continue;
      ASSERT_EQ(rename(f.path().c_str(), (away + "/" + name).c_str()), 0) << f.path();
      ++moved;
    }
  }
  ASSERT_GT(moved, 0) << "no key objects under " << tokens;
  EXPECT_TRUE(WaitForStatus(HealthCheckResponse::NOT_SERVING)) << "still SERVING without the key";
  const std::string out = Stop();
  EXPECT_THAT(out, HasSubstr("health: NOT_SERVING: hsm: C_SignInit: CKR_OBJECT_HANDLE_INVALID; logging in again "
                             "failed: no private key on the token matches"));
}

// The HSM half of health, in process so the test can act on the token as a failing device would: the real
// PKCS#11 signer on SoftHSM2 and the real monitor. Every session of the application is closed behind the signer
// and the PIN changed, so logging in again fails: NOT_SERVING with the reason. The PIN is put back: at the next
// round the signer logs in again by itself and the monitor reports SERVING again, with no restart.
TEST(HsmHealthTest, TokenWhoseSessionsWereClosedIsNotServingUntilItCanLogInAgain) {
  auto ca = TestCa::Create("ec-p256");
  ASSERT_TRUE(ca.ok()) << ca.status();
  auto module = hsm::Pkcs11Module::Load(ca->module, {{"SOFTHSM2_CONF", ca->softhsm2_conf}});
  ASSERT_TRUE(module.ok()) << module.status();
  auto chain = ReadFile(ca->chain_pem);
  ASSERT_TRUE(chain.ok());
  auto certs = ParseCertificatesPem(*chain, "chain");
  ASSERT_TRUE(certs.ok());
  auto pin = hsm::LoadPinFromFile(ca->pin_file);
  ASSERT_TRUE(pin.ok());
  std::string real_pin = pin->value(), other_pin = "changed-behind-the-server";
  auto uri = hsm::ParsePkcs11Uri(ca->key_uri);
  ASSERT_TRUE(uri.ok());
  auto signer = hsm::Pkcs11Signer::Create(*module, *uri, *std::move(pin), X509_get0_pubkey((*certs)[0].get()), 1);
  ASSERT_TRUE(signer.ok()) << signer.status();

  std::vector<bool> reported;
  observability::HealthMonitor monitor({{"hsm", [&] { return (*signer)->Sign("linesign health probe").status(); }}},
                                       [&](bool serving) { reported.push_back(serving); }, absl::Seconds(2));
  ASSERT_TRUE(monitor.RunOnce(absl::Now()).ok());
  EXPECT_TRUE(monitor.serving());

  CK_FUNCTION_LIST_PTR f = (*module)->functions();
  CK_SLOT_ID slots[8];
  CK_ULONG n = 8;
  ASSERT_EQ(f->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
  ASSERT_GE(n, 1u);
  auto set_pin = [&](std::string from, std::string to) {
    CK_SESSION_HANDLE s;
    ASSERT_EQ(f->C_OpenSession(slots[0], CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &s), CKR_OK);
    ASSERT_EQ(f->C_SetPIN(s, reinterpret_cast<CK_UTF8CHAR_PTR>(from.data()), from.size(),
                          reinterpret_cast<CK_UTF8CHAR_PTR>(to.data()), to.size()),
              CKR_OK);
    ASSERT_EQ(f->C_CloseAllSessions(slots[0]), CKR_OK);  // the signer's sessions, and its login, are gone
  };
  set_pin(real_pin, other_pin);
  ASSERT_TRUE(monitor.RunOnce(absl::Now()).ok());
  EXPECT_FALSE(monitor.serving());
  EXPECT_THAT(monitor.reason(), HasSubstr("hsm: "));
  EXPECT_THAT(monitor.reason(), HasSubstr("CKR_PIN_INCORRECT"));
  EXPECT_THAT(monitor.reason(), Not(HasSubstr(real_pin)));

  set_pin(other_pin, real_pin);
  ASSERT_TRUE(monitor.RunOnce(absl::Now()).ok());
  EXPECT_TRUE(monitor.serving()) << monitor.reason();
  EXPECT_EQ(reported, (std::vector<bool>{true, false, true}));
}

}  // namespace
}  // namespace linesign
