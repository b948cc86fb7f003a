// Faults on PostgreSQL (issue 13): the real linesign-server binary with `store: {postgres: …}`, SoftHSM2, gRPC over
// loopback, and a real PostgreSQL server.
//  - Two replicas on one database, one of them SIGKILLed at a random moment twenty times while stations stream
//    requests over both; the stations of the killed one resend their unanswered request ids through the other at
//    once (what a load balancer gives them), and the killed one is started again. Whatever a station was told is
//    true afterwards, in the database.
//  - PostgreSQL itself stopped and started again under load (a server of the test's own): requests fail
//    UNAVAILABLE saying the certificate was not issued, health and /readyz follow, signing resumes in the same
//    process, and nothing is half-recorded.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <stdlib.h>

#include <atomic>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "linesign/v1/ca.grpc.pb.h"
#include "server/config/config.h"
#include "tests/pg/pg_test_server.h"
#include "tests/testing/certs.h"
#include "tests/testing/crash_stations.h"
#include "tests/testing/health_checks.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_ca.h"

namespace linesign {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using grpc::health::v1::HealthCheckResponse;
using testing::ServerProcess;
using testing::Station;
using testing::TestCa;

constexpr char kCertificateRows[] = "SELECT station || ' ' || request_id, serial FROM certificates";

// ConfigOn returns the test CA's configuration with the store on `db`.
v1::ServerConfig ConfigOn(const TestCa& ca, const v1::PostgresStoreConfig& db) {
  v1::ServerConfig config = ca.Config(ca.dir + "/unused.db");
  *config.mutable_store()->mutable_postgres() = db;
  return config;
}

// Scalar runs `sql` on `db` as a number (-1, with a test failure, when it cannot).
int64_t Scalar(const v1::PostgresStoreConfig& db, const std::string& sql) {
  auto v = testing::PgQuery(db, sql);
  if (!v.ok()) {
    ADD_FAILURE() << v.status();
    return -1;
  }
  return std::stoll(*v);
}

// CheckStore holds the certificates of `db` (those `where` selects) to what `stations` were told
// (CheckStoreAgainstStations).
testing::StoreCheck CheckStore(const v1::PostgresStoreConfig& db, const std::vector<Station>& stations,
                               const std::string& where = "") {
  auto rows = testing::PgMap(db, absl::StrCat(kCertificateRows, where));
  EXPECT_TRUE(rows.ok()) << rows.status();
  return testing::CheckStoreAgainstStations(stations, rows.value_or(std::map<std::string, std::string>{}),
                                            Scalar(db, absl::StrCat("SELECT count(*) FROM certificates", where)),
                                            Scalar(db, absl::StrCat("SELECT count(DISTINCT serial) FROM certificates",
                                                                    where)));
}

TEST(PostgresCrashTest, SigkillAReplicaUnderStreamingLoadLosesNothingAndDuplicatesNothing) {
  auto cluster = testing::SharedPgCluster();
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  auto db = testing::CreateTestDatabase(*cluster);
  ASSERT_TRUE(db.ok()) << db.status();
  auto ca = TestCa::Create("ec-p256");
  ASSERT_TRUE(ca.ok()) << ca.status();
  const std::string config_path = testing::WriteConfig(ca->dir, config::ToYaml(ConfigOn(*ca, *db)));
  std::unique_ptr<ServerProcess> replicas[2];
  for (auto& replica : replicas) {
    auto started = ServerProcess::Start({"--config", config_path});
    ASSERT_TRUE(started.ok()) << started.status();
    replica = *std::move(started);
  }

  std::vector<Station> stations = testing::CrashStations();
  std::mt19937 rng(20261213);
  std::uniform_int_distribution<int> delay_ms(30, 400);
  int killed_with_work_unanswered = 0;
  for (int round = 0; round < testing::kCrashRounds; ++round) {
    const int victim = round % 2;
    ServerProcess* survivor = replicas[1 - victim].get();
    std::atomic<bool> cut_short{false};
    std::vector<std::thread> clients;
    for (size_t i = 0; i < stations.size(); ++i) {
      const int replica = static_cast<int>(i + round) % 2;  // the stations spread over both replicas
      clients.emplace_back([&, i, replica, address = replicas[replica]->address(), other = survivor->address()] {
        Station& s = stations[i];
        testing::StreamRequests(*ca, address, &s, testing::kCrashPerRound);
        if (replica == victim && !s.unanswered.empty()) {
          cut_short = true;
          testing::StreamRequests(*ca, other, &s, 0);  // the same request ids, through the replica still up
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    auto killed = replicas[victim]->Stop(SIGKILL);
    EXPECT_EQ(killed.exit_code, -1) << "round " << round << ": the replica was not killed: " << killed.output;
    for (auto& c : clients) c.join();
    killed_with_work_unanswered += cut_short ? 1 : 0;
    for (const Station& s : stations) {
      EXPECT_TRUE(s.unanswered.empty()) << "round " << round << ": " << s.identity << " left with "
                                        << s.unanswered.size() << " unanswered through the surviving replica";
    }
    ASSERT_TRUE(testing::StillRunning(survivor->pid())) << "round " << round << ": the surviving replica died";
    auto restarted = ServerProcess::Start({"--config", config_path});
    ASSERT_TRUE(restarted.ok()) << "round " << round << ": the killed replica did not start again: "
                                << restarted.status();
    replicas[victim] = *std::move(restarted);
  }
  // Every id once more, half through each replica: each is a replay of the serial its station holds.
  for (size_t i = 0; i < stations.size(); ++i) {
    testing::ExpectEveryIdReplayed(*ca, replicas[i % 2]->address(), &stations[i]);
  }
  for (auto& replica : replicas) {
    auto stopped = replica->Stop(SIGTERM);
    EXPECT_EQ(stopped.exit_code, 0) << stopped.output;
  }

  const testing::StoreCheck check = CheckStore(*db, stations);
  EXPECT_GT(killed_with_work_unanswered, testing::kCrashRounds / 2) << "the kills did not land under load";
  std::cout << testing::CrashSummary(" (2 replicas on PostgreSQL, one killed a round)", testing::kCrashRounds,
                                     killed_with_work_unanswered, check)
            << std::endl;
  testing::DropTestDatabase(*cluster, *db);
}

// SignOnce signs one fresh CSR with request id `id` as station `identity` through unary SignCsr.
grpc::Status SignOnce(const TestCa& ca, const std::string& address, const std::string& identity,
                      const std::string& id, v1::SignCsrResponse* response) {
  v1::SignCsrRequest request;
  request.set_csr_der(testing::Csr("ec-p256", "/CN=" + id));
  request.set_request_id(id);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  return v1::CertificateAuthority::NewStub(ca.Channel(address, identity))->SignCsr(&ctx, request, response);
}

// PostgreSQL stopped (pg_ctl stop -m fast: every session ended, new ones refused) and started again while three
// stations stream requests with request ids, resending the unanswered ones. Each certificate is registered with
// AWS IoT, so its row comes with an outbox item and a pending registration written in the same transaction (the
// endpoint answers nothing: they stay), which a half-recorded batch would show.
TEST(PostgresOutageTest, RestartUnderLoadIsUnavailableThenResumesInTheSameProcessHalfRecordingNothing) {
  auto ca = TestCa::Create("ec-p256");
  ASSERT_TRUE(ca.ok()) << ca.status();
  auto pg = testing::PrivatePgCluster::Start(ca->dir);
  ASSERT_TRUE(pg.ok()) << pg.status();
  auto db = testing::CreateTestDatabase((*pg)->cluster());
  ASSERT_TRUE(db.ok()) << db.status();
  v1::ServerConfig config = ConfigOn(*ca, *db);
  config.set_health_check_interval_ms(100);
  v1::IotTarget* target = config.mutable_iot()->add_targets();
  target->set_name("main");
  target->set_region("us-east-1");
  target->set_endpoint(absl::StrCat("http://127.0.0.1:", testing::FreeLoopbackPort()));
  config.mutable_iot()->set_retry_base_ms(600000);
  config.mutable_iot()->set_retry_max_ms(600000);
  v1::ProfileIotConfig* iot = (*config.mutable_profiles())["device"].mutable_iot();
  iot->set_register_("without_ca");
  iot->add_targets("main");
  setenv("AWS_ACCESS_KEY_ID", "AKIDLINESIGNPGOUTAGE1", 1);
  setenv("AWS_SECRET_ACCESS_KEY", "linesignPgOutage/K7MDENG+bPxRfiCYzzSecret", 1);
  unsetenv("AWS_SESSION_TOKEN");
  auto server = ServerProcess::Start({"--config", testing::WriteConfig(ca->dir, config::ToYaml(config))});
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string address = (*server)->address();
  const pid_t pid = (*server)->pid();
  auto channel = ca->Channel(address);
  auto health_is = [&](HealthCheckResponse::ServingStatus want) {
    return testing::WaitUntil([&] { return testing::HealthStatus(channel) == want; });
  };
  ASSERT_TRUE(health_is(HealthCheckResponse::SERVING));
  ASSERT_EQ(testing::Readyz((*server)->http_address()), 200);

  // The load: each station streams its unanswered requests and up to 25 new ones, again and again. The main
  // thread watches its progress through the counters only.
  std::vector<Station> stations = testing::CrashStations();
  std::atomic<bool> stop{false};
  std::vector<std::atomic<int64_t>> certified(stations.size()), refused(stations.size());
  std::vector<std::thread> load;
  for (size_t i = 0; i < stations.size(); ++i) {
    load.emplace_back([&, i] {
      Station& s = stations[i];
      while (!stop) {
        const size_t refused_before = s.refusals.size();
        testing::StreamRequests(*ca, address, &s, s.unanswered.size() < 50 ? 25 : 0);
        certified[i] = s.answers;
        refused[i] = static_cast<int64_t>(s.refusals.size());
        // Refused: a station's retry comes a little later, not in a tight loop.
        if (s.refusals.size() > refused_before) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    });
  }
  auto every_station = [&](const std::vector<std::atomic<int64_t>>& counter, std::vector<int64_t> above) {
    return testing::WaitUntil([&] {
      for (size_t i = 0; i < counter.size(); ++i) {
        if (counter[i] <= above[i]) return false;
      }
      return true;
    });
  };
  EXPECT_TRUE(every_station(certified, std::vector<int64_t>(stations.size(), 25))) << "the load did not start";

  std::vector<int64_t> refused_at_pause;
  for (const auto& r : refused) refused_at_pause.push_back(r);
  ASSERT_TRUE((*pg)->Pause().ok());
  v1::SignCsrResponse away;
  grpc::Status st = SignOnce(*ca, address, "line9-st9", "probe-away", &away);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
  EXPECT_THAT(st.error_message(), HasSubstr("certificate not issued: store: postgres: cannot connect: "));
  EXPECT_TRUE(away.certificate_der().empty());
  EXPECT_TRUE(health_is(HealthCheckResponse::NOT_SERVING)) << "still SERVING without PostgreSQL";
  std::string body;
  EXPECT_TRUE(testing::WaitUntil([&] { return testing::Readyz((*server)->http_address(), &body) == 503; }));
  EXPECT_THAT(body, StartsWith("not ready: store: "));
  EXPECT_TRUE(every_station(refused, refused_at_pause)) << "not every station was refused while PostgreSQL was away";

  ASSERT_TRUE((*pg)->Resume().ok());
  EXPECT_TRUE(health_is(HealthCheckResponse::SERVING)) << "not SERVING again after PostgreSQL came back";
  EXPECT_EQ(testing::Readyz((*server)->http_address()), 200);
  v1::SignCsrResponse back;
  st = SignOnce(*ca, address, "line9-st9", "probe-back", &back);
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_FALSE(back.replayed());
  std::vector<int64_t> certified_at_resume;
  for (const auto& c : certified) certified_at_resume.push_back(c + 25);
  EXPECT_TRUE(every_station(certified, certified_at_resume)) << "the stations did not get certificates again";
  stop = true;
  for (auto& t : load) t.join();
  EXPECT_TRUE(testing::StillRunning(pid)) << "linesign-server did not survive the outage";

  // Every refusal was UNAVAILABLE saying no certificate was issued, and why (a refusal carries no certificate:
  // an answer is one or the other).
  int64_t refusals = 0;
  for (Station& s : stations) {
    for (const std::string& r : s.refusals) {
      const bool not_issued = absl::StrContains(r, ": 14 certificate not issued: store: ") ||
                              absl::StrContains(r, ": 14 store lookup failed: store: ");
      EXPECT_TRUE(not_issued) << s.identity << " " << r;
    }
    refusals += static_cast<int64_t>(s.refusals.size());
    s.refusals.clear();
  }

  // Nothing half-recorded. Now, with the load stopped: every row is a certificate its station received, or the
  // record of a request still unanswered (committed, but its answer lost with the connection) ...
  const std::string not_probes = " WHERE request_id NOT LIKE 'probe-%'";
  auto rows = testing::PgMap(*db, absl::StrCat(kCertificateRows, not_probes));
  ASSERT_TRUE(rows.ok()) << rows.status();
  std::map<std::string, std::string> recorded_unanswered;  // "station request_id" -> serial
  for (const Station& s : stations) {
    for (const auto& [id, serial] : s.serial_by_id) {
      auto it = rows->find(s.identity + " " + id);
      EXPECT_TRUE(it != rows->end() && it->second == serial) << s.identity << " " << id << " received " << serial;
    }
    for (const std::string& id : s.unanswered) {
      auto it = rows->find(s.identity + " " + id);
      if (it != rows->end()) recorded_unanswered.insert(*it);
    }
  }
  size_t received = 0;
  for (const Station& s : stations) received += s.serial_by_id.size();
  EXPECT_EQ(rows->size(), received + recorded_unanswered.size()) << "rows nobody asked for";
  // ... whose retry replays exactly that row; the others are issued now.
  for (Station& s : stations) testing::StreamRequests(*ca, address, &s, 0);
  std::map<std::string, std::string> received_now;  // "station request_id" -> serial
  for (const Station& s : stations) {
    for (const auto& [id, serial] : s.serial_by_id) received_now[s.identity + " " + id] = serial;
  }
  for (const auto& [key, serial] : recorded_unanswered) EXPECT_EQ(received_now[key], serial) << key;
  int64_t replays_before_final_check = 0;
  for (const Station& s : stations) replays_before_final_check += s.replays;
  for (Station& s : stations) testing::ExpectEveryIdReplayed(*ca, address, &s);

  // The store holds exactly what the stations were told, and the probes: the refused one not at all.
  EXPECT_EQ(Scalar(*db, "SELECT count(*) FROM certificates WHERE request_id = 'probe-away'"), 0);
  EXPECT_EQ(*testing::PgQuery(*db, "SELECT serial FROM certificates WHERE request_id = 'probe-back'"),
            back.serial_hex());
  const testing::StoreCheck check = CheckStore(*db, stations, not_probes);
  EXPECT_EQ(Scalar(*db, absl::StrCat("SELECT count(DISTINCT (station, request_id)) FROM certificates", not_probes)),
            static_cast<int64_t>(check.received));
  // Each certificate's outbox item and registration, once each, and none without its certificate.
  const int64_t certificates = Scalar(*db, "SELECT count(*) FROM certificates");
  EXPECT_EQ(Scalar(*db, "SELECT count(*) FROM certificates c WHERE (SELECT count(*) FROM outbox o WHERE "
                        "o.kind = 'iot.register' AND convert_from(o.payload, 'UTF8')::json->>'serial' = c.serial) "
                        "<> 1"),
            0);
  EXPECT_EQ(Scalar(*db, "SELECT count(*) FROM certificates c WHERE (SELECT count(*) FROM iot_registrations r "
                        "WHERE r.issuer_id = c.issuer_id AND r.serial = c.serial AND r.target = 'main') <> 1"),
            0);
  EXPECT_EQ(Scalar(*db, "SELECT count(*) FROM outbox WHERE kind = 'iot.register'"), certificates);
  EXPECT_EQ(Scalar(*db, "SELECT count(*) FROM iot_registrations"), certificates);

  auto stopped = (*server)->Stop(SIGTERM);
  EXPECT_EQ(stopped.exit_code, 0) << stopped.output;
  EXPECT_THAT(stopped.output, HasSubstr("health: NOT_SERVING: store: "));
  EXPECT_THAT(stopped.output, HasSubstr("health: SERVING again"));
  std::cout << "postgres outage: " << check.received << " certificates received, " << refusals
            << " requests refused UNAVAILABLE while PostgreSQL was away, " << recorded_unanswered.size()
            << " recorded with the answer lost and still unanswered when the load stopped, "
            << replays_before_final_check
            << " replays before the final check, lost " << check.missing << ", duplicated " << check.duplicated
            << ", " << certificates << " certificates each with its outbox item and registration" << std::endl;
}

}  // namespace
}  // namespace linesign
