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

#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "linesign/v1/ca.grpc.pb.h"
#include "server/config/config.h"
#include "tests/testing/certs.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_ca.h"

namespace linesign {
namespace {

using testing::ServerProcess;
using testing::TestCa;

constexpr int kRounds = 20;
constexpr int kStations = 3;
constexpr int kPerRound = 150;  // new requests per station and round (plus its unanswered ones)

// Station is one client's view: the CSR behind each request id, and what it was answered.
struct Station {
  std::string identity;
  std::map<std::string, std::string> csr_by_id;
  std::map<std::string, std::string> serial_by_id;  // answered with a certificate
  std::set<std::string> unanswered;                 // sent (or about to be), no certificate yet
  int next = 0;
  int64_t answers = 0, replays = 0, changed = 0;
};

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

  // Stream sends every unanswered request of `s` and `fresh` new ones on one stream to `address`, reading
  // answers as they come, until the stream ends (all answered, or the server died).
  void Stream(const std::string& address, Station* s, int fresh) {
    for (int i = 0; i < fresh; ++i) {
      std::string id = absl::StrCat(s->identity, "-", s->next++);
      s->csr_by_id[id] = testing::Csr("ec-p256", absl::StrCat("/CN=", id));
      s->unanswered.insert(id);
    }
    std::vector<std::string> to_send(s->unanswered.begin(), s->unanswered.end());
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    auto stub = v1::CertificateAuthority::NewStub(ca_->Channel(address, s->identity));
    auto stream = stub->SignCsrStream(&ctx);
    std::thread writer([&] {
      for (const std::string& id : to_send) {
        v1::SignCsrRequest r;
        r.set_csr_der(s->csr_by_id[id]);
        r.set_request_id(id);
        if (!stream->Write(r)) return;
      }
      stream->WritesDone();
    });
    v1::SignCsrStreamResponse answer;
    size_t answered = 0;
    while (answered < to_send.size() && stream->Read(&answer)) {
      ++answered;
      if (!answer.has_certificate()) {
        ADD_FAILURE() << answer.request_id() << " refused: " << answer.error().message();
        continue;
      }
      const std::string& id = answer.request_id();
      const std::string& serial = answer.certificate().serial_hex();
      ++s->answers;
      if (answer.certificate().replayed()) ++s->replays;
      auto [it, first] = s->serial_by_id.emplace(id, serial);
      if (!first && it->second != serial) {
        ++s->changed;
        ADD_FAILURE() << id << " was answered with serial " << it->second << " and later with " << serial;
      }
      s->unanswered.erase(id);
    }
    ctx.TryCancel();
    writer.join();
    stream->Finish();
  }

  std::unique_ptr<TestCa> ca_;
  std::string db_;
  v1::ServerConfig config_;
  std::string config_file_;
};

TEST_F(CrashTest, SigkillUnderStreamingLoadLosesNothingAndDuplicatesNothing) {
  std::vector<Station> stations(kStations);
  const char* names[kStations] = {"station-1", "line1-st1", "line2-st7"};
  for (int i = 0; i < kStations; ++i) stations[i].identity = names[i];
  std::mt19937 rng(20261202);
  std::uniform_int_distribution<int> delay_ms(30, 400);
  int killed_with_work_unanswered = 0;

  for (int round = 0; round <= kRounds; ++round) {
    auto server = Start();
    ASSERT_TRUE(server.ok()) << "round " << round << ": " << server.status();
    const std::string address = (*server)->address();
    const bool last = round == kRounds;  // the last round is not killed: everything left is answered
    std::vector<std::thread> clients;
    for (Station& s : stations) {
      clients.emplace_back([&, fresh = last ? 0 : kPerRound] { Stream(address, &s, fresh); });
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
      for (Station& s : stations) {
        const int64_t before = s.replays;
        const size_t ids = s.serial_by_id.size();
        for (const auto& [id, serial] : s.serial_by_id) s.unanswered.insert(id);
        Stream(address, &s, 0);
        EXPECT_EQ(s.replays - before, static_cast<int64_t>(ids)) << s.identity;
        EXPECT_TRUE(s.unanswered.empty()) << s.identity;
      }
      auto stopped = (*server)->Stop(SIGTERM);
      EXPECT_EQ(stopped.exit_code, 0) << stopped.output;
    }
  }

  // Every request was answered in the end, each id with one serial.
  std::map<std::string, std::string> received;  // "station request_id" -> serial
  int64_t answers = 0, replays = 0, final_replays = 0;
  for (const Station& s : stations) {
    final_replays += static_cast<int64_t>(s.serial_by_id.size());
    EXPECT_TRUE(s.unanswered.empty()) << s.identity << " still has " << s.unanswered.size() << " unanswered";
    EXPECT_EQ(s.changed, 0);
    answers += s.answers;
    replays += s.replays;
    for (const auto& [id, serial] : s.serial_by_id) received[s.identity + " " + id] = serial;
  }
  // The store: one row per (station, request id), every serial once, each the one its station was given.
  auto rows = testing::SqliteMap(db_, "SELECT station || ' ' || request_id, serial FROM certificates");
  auto distinct_serials = testing::SqliteScalar(db_, "SELECT COUNT(DISTINCT serial) FROM certificates");
  auto count = testing::SqliteScalar(db_, "SELECT COUNT(*) FROM certificates");
  EXPECT_EQ(count, absl::StrCat(rows.size())) << "a (station, request id) appears twice";
  EXPECT_EQ(distinct_serials, count) << "a serial appears twice";
  size_t missing = 0;
  for (const auto& [key, serial] : received) {
    auto it = rows.find(key);
    if (it == rows.end()) {
      ++missing;
      ADD_FAILURE() << key << " was answered with serial " << serial << " but is not in the store";
    } else {
      EXPECT_EQ(it->second, serial) << key;
    }
  }
  EXPECT_EQ(missing, 0u);
  EXPECT_EQ(rows.size(), received.size()) << "the store holds certificates nobody asked for";
  EXPECT_GT(killed_with_work_unanswered, kRounds / 2) << "the kills did not land under load";
  std::cout << "crash: " << kRounds << " SIGKILLs (" << killed_with_work_unanswered
            << " with requests unanswered), " << received.size() << " certificates received, " << answers
            << " answers of which " << replays - final_replays << " replays after a kill (and " << final_replays
            << " in the final check), lost " << missing << ", duplicated "
            << (std::stoll(count) - std::stoll(distinct_serials)) << std::endl;
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
