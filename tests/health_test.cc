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
#include "tests/testing/db_write_lock.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_ca.h"

namespace linesign {
namespace {

using ::testing::HasSubstr;
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

}  // namespace
}  // namespace linesign
