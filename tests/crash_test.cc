// Crashes under load: the only server is killed with SIGKILL at random moments while stations stream requests,
// twenty times, and restarted on the same database each time. Whatever a station was told is true afterwards:
// every certificate a client received is in the store, no serial and no (station, request id) appears twice, and
// a station that resends the requests that got no answer, with the same request ids, gets certificates for them
// (the same one it may have been sent before, if the kill came after the commit).
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/resource.h>

#include <cerrno>
#include <cstring>

#include <iostream>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "linesign/v1/ca.grpc.pb.h"
#include "server/config/config.h"
#include "tests/testing/certs.h"
#include "tests/testing/crash_stations.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_ca.h"

namespace linesign {
namespace {

using testing::ServerProcess;
using testing::Station;
using testing::StreamRequests;
using testing::TestCa;
using testing::kCrashPerRound;
using testing::kCrashRounds;


class CrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = TestCa::Create("ec-p256");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::make_unique<TestCa>(*ca);
    db_ = ca_->dir + "/linesign.db";
    config_ = ca_->Config(db_);
    config_file_ = testing::WriteConfig(ca_->dir, config::ToYaml(config_));
  }
  absl::StatusOr<std::unique_ptr<ServerProcess>> Start() {
    return ServerProcess::Start({"--config", config_file_});
  }

  void Stream(const std::string& address, Station* s, int fresh) { StreamRequests(*ca_, address, s, fresh); }

  std::unique_ptr<TestCa> ca_;
  std::string db_;
  v1::ServerConfig config_;
  std::string config_file_;
};

TEST_F(CrashTest, SigkillUnderStreamingLoadLosesNothingAndDuplicatesNothing) {
  std::vector<Station> stations = testing::CrashStations();
  std::mt19937 rng(20261202);
  std::uniform_int_distribution<int> delay_ms(30, 400);
  int killed_with_work_unanswered = 0;

  for (int round = 0; round <= kCrashRounds; ++round) {
    auto server = Start();
    ASSERT_TRUE(server.ok()) << "round " << round << ": " << server.status();
    const std::string address = (*server)->address();
    const bool last = round == kCrashRounds;  // the last round is not killed: everything left is answered
    std::vector<std::thread> clients;
    for (Station& s : stations) {
      clients.emplace_back([&, fresh = last ? 0 : kCrashPerRound] { Stream(address, &s, fresh); });
    }
    if (!last) {
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
      auto killed = (*server)->Stop(SIGKILL);
      EXPECT_EQ(killed.exit_code, -1) << "round " << round << ": the server was not killed: " << killed.output;
    }
    for (auto& c : clients) c.join();
    if (!last) {
      for (const Station& s : stations) {
        if (!s.unanswered.empty()) {
          ++killed_with_work_unanswered;
          break;
        }
      }
    } else {
      // Every id once more, after all the crashes: each is a replay of the serial its station holds.
      for (Station& s : stations) testing::ExpectEveryIdReplayed(*ca_, address, &s);
      auto stopped = (*server)->Stop(SIGTERM);
      EXPECT_EQ(stopped.exit_code, 0) << stopped.output;
    }
  }

  // Every request was answered in the end, each id with one serial, and the store holds exactly that.
  auto rows = testing::SqliteMap(db_, "SELECT station || ' ' || request_id, serial FROM certificates");
  const testing::StoreCheck check = testing::CheckStoreAgainstStations(
      stations, rows, std::stoll(testing::SqliteScalar(db_, "SELECT COUNT(*) FROM certificates")),
      std::stoll(testing::SqliteScalar(db_, "SELECT COUNT(DISTINCT serial) FROM certificates")));
  EXPECT_GT(killed_with_work_unanswered, kCrashRounds / 2) << "the kills did not land under load";
  std::cout << testing::CrashSummary("", kCrashRounds, killed_with_work_unanswered, check) << std::endl;
}

// The database cannot grow (the server's file size limit is lowered to 4 KiB under it, which fails writes like a
// full disk does): every request is refused UNAVAILABLE with the store's reason and no certificate bytes, nothing
// is recorded; once the files may grow again the same request ids are issued,
// without restarting the server.
TEST_F(CrashTest, FullDiskRefusesCleanlyAndRecoversWithoutRestart) {
  auto server = Start();
  ASSERT_TRUE(server.ok()) << server.status();
  Station s;
  s.identity = "station-1";
  Stream((*server)->address(), &s, 5);
  ASSERT_TRUE(s.unanswered.empty());
  const std::string rows_before = testing::SqliteScalar(db_, "SELECT COUNT(*) FROM certificates");
  ASSERT_EQ(rows_before, "5");

  struct rlimit before = {};
  ASSERT_EQ(prlimit((*server)->pid(), RLIMIT_FSIZE, nullptr, &before), 0) << strerror(errno);
  struct rlimit tiny = {4096, before.rlim_max};  // the soft limit only: it may be raised again without privilege
  ASSERT_EQ(prlimit((*server)->pid(), RLIMIT_FSIZE, &tiny, nullptr), 0) << strerror(errno);
  auto stub = v1::CertificateAuthority::NewStub(ca_->Channel((*server)->address(), "station-1"));
  std::vector<std::string> csrs;
  for (int i = 0; i < 3; ++i) {
    csrs.push_back(testing::Csr("ec-p256", absl::StrCat("/CN=FULL", i)));
    grpc::ClientContext ctx;
    v1::SignCsrRequest request;
    request.set_csr_der(csrs.back());
    request.set_request_id(absl::StrCat("full-", i));
    v1::SignCsrResponse response;
    grpc::Status st = stub->SignCsr(&ctx, request, &response);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << i << ": " << st.error_message();
    EXPECT_THAT(st.error_message(), ::testing::HasSubstr("certificate not issued: store:"));
    EXPECT_TRUE(response.certificate_der().empty());
  }
  ASSERT_EQ(prlimit((*server)->pid(), RLIMIT_FSIZE, &before, nullptr), 0) << strerror(errno);
  EXPECT_EQ(testing::SqliteScalar(db_, "SELECT COUNT(*) FROM certificates"), rows_before);

  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext ctx;
    v1::SignCsrRequest request;
    request.set_csr_der(csrs[i]);
    request.set_request_id(absl::StrCat("full-", i));
    v1::SignCsrResponse response;
    grpc::Status st = stub->SignCsr(&ctx, request, &response);
    ASSERT_TRUE(st.ok()) << i << ": " << st.error_message();
    EXPECT_FALSE(response.replayed());
  }
  EXPECT_EQ(testing::SqliteScalar(db_, "SELECT COUNT(*) FROM certificates"), "8");
  auto stopped = (*server)->Stop(SIGTERM);
  EXPECT_EQ(stopped.exit_code, 0) << stopped.output;
}

}  // namespace
}  // namespace linesign
