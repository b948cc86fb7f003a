// The PostgreSQL store against a real PostgreSQL server (the ctest fixture `postgres`, tests/pg/): the whole
// conformance suite, then what only several processes on one server show — event ids in commit order with two
// writers, migrations by replicas starting together, a newer schema refused, passwords kept out of the
// configuration and of every message, and a PostgreSQL restart between two calls.
#include "server/store/postgres/postgres_store.h"

#include <atomic>
#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/testing/fake_clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/store/postgres/migrations.h"
#include "server/store/testing/store_conformance.h"
#include "tests/pg/pg_test_server.h"
#include "tests/testing/certs.h"
#include "tests/testing/test_ca.h"

namespace linesign::store {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using linesign::testing::PgCluster;
using linesign::testing::PgQuery;
using testing::Certificate;
using testing::StoreConformanceTest;

// PostgresBackend: a fresh database on the fixture's server, dropped afterwards.
class PostgresBackend final : public testing::StoreBackend {
 public:
  PostgresBackend() {
    auto cluster = linesign::testing::SharedPgCluster();
    if (!cluster.ok()) {
      db_ = cluster.status();
      return;
    }
    cluster_ = *cluster;
    db_ = linesign::testing::CreateTestDatabase(cluster_);
  }
  ~PostgresBackend() override {
    if (db_.ok()) linesign::testing::DropTestDatabase(cluster_, *db_);
  }
  absl::StatusOr<std::unique_ptr<Store>> Open(const Clock* clock) override {
    if (!db_.ok()) return db_.status();
    auto store = PostgresStore::Open(*db_, clock);
    if (!store.ok()) return store.status();
    return std::unique_ptr<Store>(*std::move(store));
  }
  absl::Status FailOutboxInserts(const std::string& kind) override {
    if (!db_.ok()) return db_.status();
    return PgQuery(*db_, absl::StrCat("CREATE FUNCTION fail_", kind,
                                      "() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.kind = '", kind,
                                      "' THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$; "
                                      "CREATE TRIGGER fail_", kind, " BEFORE INSERT ON outbox FOR EACH ROW "
                                      "EXECUTE FUNCTION fail_", kind, "()"))
        .status();
  }
  const absl::StatusOr<v1::PostgresStoreConfig>& db() const { return db_; }

 private:
  PgCluster cluster_;
  absl::StatusOr<v1::PostgresStoreConfig> db_;
};

INSTANTIATE_TEST_SUITE_P(Postgres, StoreConformanceTest,
                         ::testing::Values(testing::StoreBackendFactory{
                             "Postgres", [] { return std::make_unique<PostgresBackend>(); }}),
                         testing::StoreBackendName);

class PostgresStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(backend_.db().ok()) << backend_.db().status();
  }
  std::unique_ptr<PostgresStore> OpenStore() {
    auto store = PostgresStore::Open(*backend_.db(), &clock_);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }
  linesign::testing::FakeClock clock_;
  PostgresBackend backend_;
};

Batch OneCertificate(const std::string& name) {
  Batch b;
  b.entries.push_back(BatchEntry{.cert = Certificate(name, name)});
  return b;
}

// Two replicas write the log at once (certificates, and standalone events) while a reader follows it with a
// cursor: every id the reader ever sees is above the cursor it had, and at the end the reader has seen every
// event exactly once. Without ids allocated under the log lock, an id committed after a higher one would appear
// below the cursor and be skipped.
TEST_F(PostgresStoreTest, EventIdsBecomeVisibleInCommitOrderWithTwoWriters) {
  auto reader = OpenStore();
  std::unique_ptr<PostgresStore> writers[2] = {OpenStore(), OpenStore()};
  ASSERT_TRUE(reader && writers[0] && writers[1]);
  constexpr int kBatches = 150;
  std::atomic<int> done{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      for (int i = 0; i < kBatches; ++i) {
        Batch b = OneCertificate(absl::StrCat("w", w, "-", i));
        b.entries.push_back(BatchEntry{.cert = Certificate(absl::StrCat("w", w, "-", i, "b"),
                                                           absl::StrCat("w", w, "-", i, "b"))});
        b.events.push_back(Event{.type = "NOTED", .serial_hex = absl::StrCat("w", w, "-", i)});
        auto out = writers[w]->RecordBatch(b);
        EXPECT_TRUE(out.ok()) << out.status();
      }
      ++done;
    });
  }
  std::set<int64_t> seen;
  int64_t cursor = 0;
  int below = 0;
  while (true) {
    const bool finished = done.load() == 2;
    auto events = reader->ReadAfter(cursor, 7);
    ASSERT_TRUE(events.ok()) << events.status();
    for (const Event& e : *events) {
      if (e.id <= cursor) ++below;
      EXPECT_TRUE(seen.insert(e.id).second) << "event " << e.id << " read twice";
      cursor = std::max(cursor, e.id);
    }
    if (finished && events->empty()) break;
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(below, 0);
  std::set<int64_t> all;
  for (int64_t c = 0;;) {
    auto events = reader->ReadAfter(c, 1000);
    ASSERT_TRUE(events.ok());
    if (events->empty()) break;
    for (const Event& e : *events) all.insert(e.id);
    c = events->back().id;
  }
  EXPECT_EQ(all.size(), 2u * kBatches * 3);
  EXPECT_EQ(seen, all) << "the follower skipped " << all.size() - seen.size() << " events";
}

// Replicas starting together on an empty database: one migrates, the others wait for it and find nothing to do.
TEST_F(PostgresStoreTest, ReplicasStartingTogetherMigrateOnce) {
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      auto s = PostgresStore::Open(*backend_.db(), &clock_);
      EXPECT_TRUE(s.ok()) << s.status();
      if (s.ok()) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 4);
  EXPECT_EQ(*PgQuery(*backend_.db(), "SELECT count(*) FROM schema_migrations"),
            absl::StrCat(postgres::LatestVersion()));
  EXPECT_EQ(*PgQuery(*backend_.db(), "SELECT max(version) FROM schema_migrations"),
            absl::StrCat(postgres::LatestVersion()));
}

// A database at schema version 1 (written before AWS IoT registrations were on PostgreSQL) migrates to version 2
// on open: its certificates stay, and one of them can then be enqueued for registration and read back pending.
TEST_F(PostgresStoreTest, ADatabaseAtVersionOneMigratesToTwoKeepingItsCertificates) {
  const postgres::Migration& v1 = postgres::Migrations()[0];
  ASSERT_EQ(v1.version, 1);
  ASSERT_TRUE(PgQuery(*backend_.db(),
                      absl::StrCat("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                                   "applied_at BIGINT NOT NULL); ",
                                   v1.sql, "; INSERT INTO schema_migrations VALUES (1, 'v1', 0); ",
                                   "INSERT INTO certificates (id, issuer_id, serial, subject, sans, not_before, "
                                   "not_after, spki_sha256, csr_sha256, station, profile, request_id, der, issued_at) "
                                   "VALUES (1, 'issuer-1', '0A1B', 'CN=old', '[]', 0, 4102444800, '', '', 's', "
                                   "'device', 'r-1', '\\x3000'::bytea, 0)"))
                  .ok());
  ASSERT_EQ(*PgQuery(*backend_.db(), "SELECT to_regclass('iot_registrations') IS NULL"), "t");

  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(*PgQuery(*backend_.db(), "SELECT max(version) FROM schema_migrations"), "2");
  auto old = store->FindBySerial("issuer-1", "0A1B");
  ASSERT_TRUE(old.ok()) << old.status();
  ASSERT_TRUE(old->has_value());
  EXPECT_EQ((*old)->subject, "CN=old");
  const std::vector<std::string> serials = {"0A1B"};
  auto enqueued = store->EnqueueIotRegistrations("issuer-1", "main", serials, clock_.Now());
  ASSERT_TRUE(enqueued.ok()) << enqueued.status();
  EXPECT_EQ(enqueued->enqueued, 1);
  auto reg = store->GetIotRegistration(IotRegistrationKey{"issuer-1", "0A1B", "main"});
  ASSERT_TRUE(reg.ok()) << reg.status();
  ASSERT_TRUE(reg->has_value());
  EXPECT_EQ((*reg)->state, IotRegistrationState::kPending);
}

TEST_F(PostgresStoreTest, ADatabaseNewerThanThisBinaryIsRefusedAndLeftAlone) {
  ASSERT_NE(OpenStore(), nullptr);
  const int future = postgres::LatestVersion() + 5;
  ASSERT_TRUE(PgQuery(*backend_.db(), absl::StrCat("INSERT INTO schema_migrations VALUES (", future,
                                                   ", 'from the future', 0)"))
                  .ok());
  auto s = PostgresStore::Open(*backend_.db(), &clock_);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition) << s.status();
  EXPECT_THAT(s.status().message(), HasSubstr(absl::StrCat("schema version ", future)));
  EXPECT_THAT(s.status().message(), HasSubstr(absl::StrCat("knows up to ", postgres::LatestVersion())));
  EXPECT_EQ(*PgQuery(*backend_.db(), "SELECT count(*) FROM schema_migrations"),
            absl::StrCat(postgres::LatestVersion() + 1));
}

// A password in the connection string (keyword or URI) is refused without being repeated; a wrong password
// from the file is Unavailable without it either.
TEST_F(PostgresStoreTest, PasswordsStayOutOfTheConfigurationAndEveryMessage) {
  for (const std::string& connection :
       {absl::StrCat(backend_.db()->connection(), " password=Sw0rdf1sh-in-config"),
        std::string("postgresql://linesign:Sw0rdf1sh-in-config@127.0.0.1:1/linesign")}) {
    v1::PostgresStoreConfig config = *backend_.db();
    config.set_connection(connection);
    auto s = PostgresStore::Open(config, &clock_);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.status().message(), HasSubstr("store.postgres.connection: holds a password"));
    EXPECT_THAT(s.status().message(), Not(HasSubstr("Sw0rdf1sh")));
  }
  v1::PostgresStoreConfig config = *backend_.db();
  config.set_connection(absl::StrCat(config.connection(), " '"));
  auto unparsable = PostgresStore::Open(config, &clock_);
  EXPECT_EQ(unparsable.status().code(), absl::StatusCode::kInvalidArgument) << unparsable.status();

  std::string wrong = linesign::testing::TempDir("pgpw") + "/password";
  {
    std::ofstream(wrong) << "Wr0ng-Passw0rd\n";
  }
  config = *backend_.db();
  config.set_password_file(wrong);
  auto s = PostgresStore::Open(config, &clock_);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kUnavailable) << s.status();
  EXPECT_THAT(s.status().message(), HasSubstr("password authentication failed"));
  EXPECT_THAT(s.status().message(), Not(HasSubstr("Wr0ng")));
}

// PostgreSQL stops between two calls: the call while it is away is Unavailable; once it is back the same store
// serves again — the batch writer's connection and the pooled ones are replaced, nothing is reopened.
TEST(PostgresRestartTest, ACallDuringAnOutageIsUnavailableAndTheStoreRecovers) {
  auto server = linesign::testing::PrivatePgCluster::Start(linesign::testing::TempDir("pgrestart"));
  ASSERT_TRUE(server.ok()) << server.status();
  auto db = linesign::testing::CreateTestDatabase((*server)->cluster());
  ASSERT_TRUE(db.ok()) << db.status();
  linesign::testing::FakeClock clock;
  auto store = PostgresStore::Open(*db, &clock);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->RecordBatch(OneCertificate("before")).ok());
  ASSERT_TRUE((*store)->FindBySerial("ISSUER", "before")->has_value());

  ASSERT_TRUE((*server)->Pause().ok());
  auto during = (*store)->RecordBatch(OneCertificate("during"));
  EXPECT_EQ(during.status().code(), absl::StatusCode::kUnavailable) << during.status();
  EXPECT_EQ((*store)->FindBySerial("ISSUER", "before").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ((*store)->Ping().code(), absl::StatusCode::kUnavailable);

  ASSERT_TRUE((*server)->Resume().ok());
  EXPECT_TRUE((*store)->Ping().ok()) << (*store)->Ping();
  auto after = (*store)->RecordBatch(OneCertificate("after"));
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_THAT(*after, ::testing::ElementsAre(RecordOutcome::kRecorded));
  EXPECT_EQ(*(*store)->Count(), 2);
  EXPECT_FALSE((*store)->FindBySerial("ISSUER", "during")->has_value());
}

// A restart while the store's connections sit idle: the first calls afterwards already succeed (a connection
// the server closed is noticed before it is used).
TEST(PostgresRestartTest, IdleConnectionsClosedByARestartAreNotUsed) {
  auto server = linesign::testing::PrivatePgCluster::Start(linesign::testing::TempDir("pgrestart"));
  ASSERT_TRUE(server.ok()) << server.status();
  auto db = linesign::testing::CreateTestDatabase((*server)->cluster());
  ASSERT_TRUE(db.ok()) << db.status();
  linesign::testing::FakeClock clock;
  auto store = PostgresStore::Open(*db, &clock);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->RecordBatch(OneCertificate("before")).ok());
  ASSERT_TRUE((*store)->Count().ok());
  ASSERT_TRUE((*server)->Pause().ok());
  ASSERT_TRUE((*server)->Resume().ok());
  EXPECT_TRUE((*store)->Count().ok()) << (*store)->Count().status();
  auto after = (*store)->RecordBatch(OneCertificate("after"));
  EXPECT_TRUE(after.ok()) << after.status();
}

// Not a pass/fail figure: the RecordBatch rate on this machine's loopback server (fsync on), for the report.
TEST_F(PostgresStoreTest, RecordBatchRate) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  constexpr int kBatches = 40, kPerBatch = 64;
  const auto start = std::chrono::steady_clock::now();
  for (int b = 0; b < kBatches; ++b) {
    Batch batch;
    for (int i = 0; i < kPerBatch; ++i) {
      std::string n = absl::StrCat("rate-", b, "-", i);
      batch.entries.push_back(BatchEntry{.cert = Certificate(n, n)});
    }
    ASSERT_TRUE(store->RecordBatch(batch).ok());
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "RecordBatch: " << kBatches << " batches of " << kPerBatch << " in " << s << " s = "
            << kBatches * kPerBatch / s << " certificates/s, " << s / kBatches * 1000 << " ms per batch\n";
  EXPECT_EQ(*store->Count(), kBatches * kPerBatch);
}

}  // namespace
}  // namespace linesign::store
