#include "server/store/sqlite/sqlite_store.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include <chrono>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/testing/fake_clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/store/sqlite/migrations.h"
#include "server/store/testing/store_conformance.h"
#include "tests/testing/certs.h"
#include "tests/testing/test_ca.h"

namespace linesign::store {
namespace {

using ::testing::HasSubstr;
using testing::Certificate;
using testing::StoreConformanceTest;

// SqliteBackend: a fresh database file in a temporary directory.
class SqliteBackend final : public testing::StoreBackend {
 public:
  SqliteBackend() : path_(linesign::testing::TempDir("store") + "/db") {}
  absl::StatusOr<std::unique_ptr<Store>> Open(const Clock* clock) override {
    auto store = SqliteStore::Open(path_, clock);
    if (!store.ok()) return store.status();
    return std::unique_ptr<Store>(*std::move(store));
  }
  absl::Status FailOutboxInserts(const std::string& kind) override {
    sqlite3* db = nullptr;
    sqlite3_open(path_.c_str(), &db);
    sqlite3_busy_timeout(db, 5000);
    std::string sql = absl::StrCat("CREATE TRIGGER fail_", kind, " BEFORE INSERT ON outbox WHEN NEW.kind = '", kind,
                                   "' BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
    char* err = nullptr;
    int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
    std::string msg = err != nullptr ? err : "";
    sqlite3_free(err);
    sqlite3_close(db);
    return rc == SQLITE_OK ? absl::OkStatus() : absl::InternalError(msg);
  }

 private:
  std::string path_;
};

INSTANTIATE_TEST_SUITE_P(Sqlite, StoreConformanceTest,
                         ::testing::Values(testing::StoreBackendFactory{
                             "Sqlite", [] { return std::make_unique<SqliteBackend>(); }}),
                         testing::StoreBackendName);

}  // namespace

namespace {

Batch Certificates(std::vector<CertificateRecord> records) {
  Batch b;
  for (auto& r : records) b.entries.push_back(BatchEntry{.cert = std::move(r)});
  return b;
}

// Query runs `sql` on its own connection and returns the first column of each row, joined by ",".
std::string Query(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_stmt* s = nullptr;
  std::string out;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK) {
    while (sqlite3_step(s) == SQLITE_ROW) {
      if (!out.empty()) out += ",";
      const char* t = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
      out += t != nullptr ? t : "NULL";
    }
  } else {
    out = absl::StrCat("error: ", sqlite3_errmsg(db));
  }
  sqlite3_finalize(s);
  sqlite3_close(db);
  return out;
}

void Exec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  char* err = nullptr;
  ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
  sqlite3_close(db);
}

TEST(SqliteStoreTest, SurvivesReopen) {
  std::string dir = linesign::testing::TempDir("store");
  {
    auto store = SqliteStore::Open(dir + "/db");
    ASSERT_TRUE((*store)->RecordBatch(Certificates({Certificate("01", "a")})).ok());
  }
  auto store = SqliteStore::Open(dir + "/db");
  ASSERT_TRUE(store.ok());
  EXPECT_EQ(*(*store)->Count(), 1);
}

// A new database gets every migration, recorded with its date, and is stamped with the latest version.
// The webhook's delivery cursor (migration 6): one lease holder at a time, taken over when it expires or is
// released; only the holder moves it, and only forward; it survives a reopen.
TEST(SqliteStoreTest, DeliveryCursorIsHeldUnderALease) {
  std::string path = linesign::testing::TempDir("store") + "/db";
  const absl::Time t0 = absl::FromUnixSeconds(1760000000);
  const absl::Duration lease = absl::Seconds(10);
  {
    auto store = SqliteStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    SqliteStore& s = **store;
    auto a = s.TakeCursor("webhook", "a", t0, lease);
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ(*a, std::optional<int64_t>(0));
    auto b = s.TakeCursor("webhook", "b", t0 + absl::Seconds(5), lease);
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(*b, std::nullopt);  // a holds it
    ASSERT_TRUE(s.AdvanceCursor("webhook", "a", 7, t0 + absl::Seconds(1), lease).ok());
    EXPECT_EQ(s.AdvanceCursor("webhook", "a", 7, t0, lease).code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(s.AdvanceCursor("webhook", "a", 3, t0, lease).message(), HasSubstr("it only moves forward"));
    b = s.TakeCursor("webhook", "b", t0 + absl::Seconds(11), lease);  // a's renewed lease runs to t0 + 11 s
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(*b, std::optional<int64_t>(7));
    absl::Status st = s.AdvanceCursor("webhook", "a", 8, t0 + absl::Seconds(12), lease);
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(st.message(), HasSubstr("'a' does not hold its lease ('b' holds it)"));
    ASSERT_TRUE(s.AdvanceCursor("webhook", "b", 9, t0 + absl::Seconds(12), lease).ok());
    ASSERT_TRUE(s.ReleaseCursor("webhook", "b").ok());
    EXPECT_EQ(s.TakeCursor("", "a", t0, lease).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(s.TakeCursor("webhook", "a", t0, absl::ZeroDuration()).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  auto store = SqliteStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  auto a = (*store)->TakeCursor("webhook", "a", t0 + absl::Seconds(13), lease);  // released: no wait
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(*a, std::optional<int64_t>(9));
}

TEST(SqliteStoreTest, MigratesANewDatabaseAndRecordsEachMigration) {
  std::string path = linesign::testing::TempDir("store") + "/db";
  linesign::testing::FakeClock clock(absl::FromUnixSeconds(1750000000));
  ASSERT_TRUE(SqliteStore::Open(path, &clock).ok());
  EXPECT_EQ(Query(path, "PRAGMA user_version"), absl::StrCat(sqlite::LatestVersion()));
  std::vector<std::string> applied;
  for (const auto& m : sqlite::Migrations()) applied.push_back(absl::StrCat(m.version, " 1750000000"));
  EXPECT_EQ(Query(path, "SELECT version || ' ' || applied_at FROM schema_migrations ORDER BY version"),
            absl::StrJoin(applied, ","));
  // Opening again applies nothing.
  clock.Advance(absl::Hours(1));
  ASSERT_TRUE(SqliteStore::Open(path, &clock).ok());
  EXPECT_EQ(Query(path, "SELECT COUNT(*) || ' ' || MAX(applied_at) FROM schema_migrations"),
            absl::StrCat(sqlite::Migrations().size(), " 1750000000"));
}

// Several processes starting on one new file at once: each waits for the write lock, the first migrates, the
// others find the work done; every one of them opens.
TEST(SqliteStoreTest, ConcurrentOpensMigrateOnce) {
  std::string path = linesign::testing::TempDir("store") + "/db";
  std::vector<absl::Status> results(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      auto s = SqliteStore::Open(path);
      results[i] = s.status();
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& st : results) EXPECT_TRUE(st.ok()) << st;
  std::vector<int> versions;
  for (const auto& m : sqlite::Migrations()) versions.push_back(m.version);
  EXPECT_EQ(Query(path, "SELECT version FROM schema_migrations ORDER BY version"), absl::StrJoin(versions, ","));
}

// A database written by a newer linesign-server (by its user_version or its schema_migrations table) is refused
// with both versions named, and left as it was.
TEST(SqliteStoreTest, RefusesADatabaseNewerThanTheBinary) {
  std::string dir = linesign::testing::TempDir("store");
  for (const char* how : {"PRAGMA user_version = 99", "INSERT INTO schema_migrations VALUES (77, 'future', 0)"}) {
    std::string path = absl::StrCat(dir, "/", how[0] == 'P' ? "pragma" : "table", ".db");
    ASSERT_TRUE(SqliteStore::Open(path).ok());
    Exec(path, how);
    std::string version = how[0] == 'P' ? "99" : "77";
    auto store = SqliteStore::Open(path);
    ASSERT_FALSE(store.ok());
    EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(store.status().message(),
              absl::StrCat("store: database ", path, " has schema version ", version,
                           " but this linesign-server knows up to ", sqlite::LatestVersion(),
                           "; upgrade linesign-server (a database is never downgraded)"));
    EXPECT_EQ(Query(path, "SELECT COUNT(*) FROM schema_migrations"),
              absl::StrCat(sqlite::Migrations().size() + (how[0] == 'P' ? 0 : 1)));
  }
}

// A migration that fails leaves the database exactly as it was: still version 1, nothing half-applied.
TEST(SqliteStoreTest, AFailedMigrationChangesNothing) {
  std::string path = linesign::testing::TempDir("store") + "/db";
  // A version-1 database as the server wrote it before migrations, plus a table in migration 2's way.
  Exec(path, absl::StrCat(sqlite::Migrations()[0].sql, "PRAGMA user_version = 1; CREATE TABLE events (x);"));
  auto store = SqliteStore::Open(path);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(store.status().message(), HasSubstr("migration 2"));
  EXPECT_THAT(store.status().message(), HasSubstr(path));
  EXPECT_EQ(Query(path, "PRAGMA user_version"), "1");
  EXPECT_EQ(Query(path, "SELECT name FROM sqlite_master WHERE name IN ('schema_migrations', 'outbox')"), "");
  EXPECT_EQ(Query(path, "SELECT COUNT(*) FROM pragma_table_info('certificates') WHERE name = 'status'"), "0");
}

// A version-2 database (ISSUED events stored as rows) is carried to version 3: the ISSUED rows go, the
// certificates read back as the log's ISSUED events, other events keep their order after every certificate, and
// ids stay one sequence for what is written next.
TEST(SqliteStoreTest, Version2EventRowsBecomeOneSequenceWithTheCertificates) {
  std::string path = linesign::testing::TempDir("store") + "/db";
  Exec(path, absl::StrCat(sqlite::Migrations()[0].sql, sqlite::Migrations()[1].sql, R"sql(
    INSERT INTO certificates (id, issuer_id, serial, subject, sans, not_before, not_after, spki_sha256, csr_sha256,
        station, profile, request_id, der, issued_at)
      VALUES (1, 'I', 'A1', 'CN=a', '[]', 1, 2, 's', 'c', 'st', 'p', 'r1', x'3000', 100),
             (2, 'I', 'A2', 'CN=b', '[]', 1, 2, 's', 'c', 'st', 'p', 'r2', x'3000', 101);
    INSERT INTO events (id, type, issuer_id, serial, station, profile, time_us, data)
      VALUES (1, 'ISSUED', 'I', 'A1', 'st', 'p', 100000000, ''), (2, 'NOTE', 'I', 'A1', 'st', 'p', 100000001, 'x'),
             (3, 'ISSUED', 'I', 'A2', 'st', 'p', 101000000, ''), (4, 'NOTE', 'I', 'A2', 'st', 'p', 101000001, 'y');
    PRAGMA user_version = 2;)sql"));
  linesign::testing::FakeClock clock(absl::FromUnixSeconds(1750000000));
  auto store = SqliteStore::Open(path, &clock);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(Query(path, "SELECT group_concat(id || ' ' || type || ' ' || serial || ' ' || data) FROM events"),
            "4 NOTE A1 x,6 NOTE A2 y");
  auto events = (*store)->ReadAfter(0, 100);
  ASSERT_TRUE(events.ok()) << events.status();
  std::vector<std::string> log;
  for (const auto& e : *events) log.push_back(absl::StrCat(e.id, " ", e.type, " ", e.serial_hex));
  EXPECT_EQ(absl::StrJoin(log, ","), "1 ISSUED A1,2 ISSUED A2,4 NOTE A1,6 NOTE A2");
  EXPECT_EQ((*events)[0].time, absl::FromUnixSeconds(100));
  CertificateRecord r;
  r.issuer_id = "I";
  r.serial_hex = "A3";
  r.station = "st";
  r.request_id = "r3";
  ASSERT_TRUE((*store)->RecordBatch(Batch{.entries = {BatchEntry{.cert = r}}}).ok());
  EXPECT_EQ(Query(path, "SELECT id FROM certificates WHERE serial = 'A3'"), "7");
}

// Checkpoint (the server's store-checkpoint task calls it every few hundred milliseconds) copies the WAL once it
// holds kCheckpointPages pages, and not before: the database file itself grows while batches keep committing,
// and every row is there.
TEST(SqliteStoreTest, CheckpointsOnceTheWalIsLarge) {
  std::string dir = linesign::testing::TempDir("store");
  auto store = SqliteStore::Open(dir + "/db");
  ASSERT_TRUE(store.ok()) << store.status();
  struct stat before;
  ASSERT_EQ(stat((dir + "/db").c_str(), &before), 0);
  std::string der(1500, 'x');  // a large certificate: ~1,000 WAL pages within a few hundred batches
  int batches = 0;
  for (; batches < 2000 && (*store)->checkpoints() == 0; ++batches) {
    std::vector<CertificateRecord> batch;
    for (int i = 0; i < 16; ++i) {
      std::string n = std::to_string(batches * 16 + i);
      batch.push_back(Certificate("0" + n, "r" + n));
      batch.back().der = der;
    }
    auto out = (*store)->RecordBatch(Certificates(std::move(batch)));
    ASSERT_TRUE(out.ok()) << out.status();
    ASSERT_TRUE((*store)->Checkpoint().ok());
    if (batches == 0) {
      EXPECT_EQ((*store)->checkpoints(), 0) << "a checkpoint for a WAL of one batch";
    }
  }
  ASSERT_GT((*store)->checkpoints(), 0) << "no checkpoint after " << batches << " batches";
  struct stat after;
  ASSERT_EQ(stat((dir + "/db").c_str(), &after), 0);
  EXPECT_GT(after.st_size, before.st_size + 1000 * 1024) << "the WAL was not copied into the database file";
  EXPECT_EQ(*(*store)->Count(), batches * 16);
  store->reset();
  auto reopened = SqliteStore::Open(dir + "/db");
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ(*(*reopened)->Count(), batches * 16);
}

// SANs are stored typed, byte for byte: a comma, a text that looks like another SAN, a newline and bytes that are
// not UTF-8 all read back as exactly the SANs recorded (the old comma-joined column read this back as 4 SANs).
TEST(SqliteStoreTest, SansRoundTripExactlyWhateverTheyHold) {
  std::string dir = linesign::testing::TempDir("store");
  auto store = SqliteStore::Open(dir + "/db");
  ASSERT_TRUE(store.ok()) << store.status();
  CertificateRecord r = Certificate("0A", "sans");
  r.sans = {{"DNS", "a.example,IP Address:10.6.6.6"},
            {"DNS", "x.example\nprofile:    server"},
            {"URI", "urn:x\nserial:     00"},
            {"email", std::string("\xFF\xFEq\"@\0x", 7)},
            {"IP Address", "10.1.2.3"}};
  ASSERT_TRUE((*store)->RecordBatch(Certificates({r})).ok());
  auto found = (*store)->FindBySerial("ISSUER", "0A");
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ((*found)->sans, r.sans);
  EXPECT_EQ((*(*store)->FindByRequest("station-1", "sans"))->sans, r.sans);
  // The column is a JSON array of {type, value}; the value that is not UTF-8 is kept as hex.
  std::string column = linesign::testing::SqliteScalar(dir + "/db", "SELECT sans FROM certificates");
  EXPECT_THAT(column, ::testing::StartsWith(R"([{"type":"DNS","value":"a.example,IP Address:10.6.6.6"},)"));
  EXPECT_THAT(column, ::testing::HasSubstr(R"({"type":"email","value_hex":"fffe7122400078"})"));

  CertificateRecord none = Certificate("0B", "no-sans");
  none.sans.clear();
  ASSERT_TRUE((*store)->RecordBatch(Certificates({none})).ok());
  EXPECT_TRUE((*(*store)->FindBySerial("ISSUER", "0B"))->sans.empty());
}

// A row written before SANs were typed holds "DNS:a,IP Address:b": it cannot be split back unambiguously, so it
// reads back as one SAN of type "legacy" with the whole text. An empty legacy column is no SAN.
TEST(SqliteStoreTest, LegacySansColumnReadsBackAsOneLegacyEntry) {
  std::string dir = linesign::testing::TempDir("store");
  auto store = SqliteStore::Open(dir + "/db");
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->RecordBatch(Certificates({Certificate("01", "old"), Certificate("02", "old2")})).ok());
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir + "/db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "UPDATE certificates SET sans = 'DNS:a.example,IP Address:10.6.6.6' WHERE serial = '01';"
                         "UPDATE certificates SET sans = '' WHERE serial = '02';",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto legacy = (*store)->FindBySerial("ISSUER", "01");
  ASSERT_TRUE(legacy.ok() && legacy->has_value());
  EXPECT_EQ((*legacy)->sans, (std::vector<San>{{"legacy", "DNS:a.example,IP Address:10.6.6.6"}}));
  EXPECT_TRUE((*(*store)->FindBySerial("ISSUER", "02"))->sans.empty());
}

// The database, its WAL and its shared-memory file are created owner-only, whatever the umask (they were 0644).
TEST(SqliteStoreTest, CreatesDatabaseWalAndShmOwnerOnly) {
  std::string dir = linesign::testing::TempDir("store");
  mode_t old = umask(022);
  auto store = SqliteStore::Open(dir + "/db");
  umask(old);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->RecordBatch(Certificates({Certificate("01", "a")})).ok());
  ASSERT_TRUE((*store)->FindBySerial("ISSUER", "01").ok());
  for (const char* file : {"/db", "/db-wal", "/db-shm"}) {
    struct stat st;
    ASSERT_EQ(stat((dir + file).c_str(), &st), 0) << file;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << file;
  }
}

// An existing database that group or others can read is reported at start-up, and left as the operator set it.
TEST(SqliteStoreTest, WarnsAboutAnExistingDatabaseOthersCanRead) {
  std::string dir = linesign::testing::TempDir("store");
  ASSERT_TRUE(SqliteStore::Open(dir + "/db").ok());
  ASSERT_EQ(chmod((dir + "/db").c_str(), 0644), 0);
  ::testing::internal::CaptureStderr();
  auto store = SqliteStore::Open(dir + "/db");
  std::string err = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_THAT(err, ::testing::HasSubstr(dir + "/db has mode 0644: group or others can read"));
  EXPECT_THAT(err, ::testing::HasSubstr("chmod 600"));
  struct stat st;
  ASSERT_EQ(stat((dir + "/db").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
}

TEST(SqliteStoreTest, OpenFailsWithThePath) {
  auto store = SqliteStore::Open("/nonexistent-dir/x.db");
  EXPECT_EQ(store.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(store.status().message().find("/nonexistent-dir/x.db"), std::string::npos);
}

TEST(StoreOpenTest, OpensTheConfiguredBackendAndRefusesNone) {
  v1::StoreConfig config;
  auto none = store::Open(config, RealClock::Get());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  config.mutable_sqlite()->set_path(linesign::testing::TempDir("store") + "/db");
  auto store = store::Open(config, RealClock::Get());
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(*(*store)->Count(), 0);
}

// Ping needs the write lock: another process holding the database past the ping's busy timeout makes it
// Unavailable with SQLite's reason, and once the lock is released it is OK again. Writes meanwhile are untouched.
TEST(SqliteStoreTest, PingFailsWhileAnotherConnectionHoldsTheWriteLock) {
  std::string dir = linesign::testing::TempDir("store");
  auto store = SqliteStore::Open(dir + "/db");
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE((*store)->Ping().ok());
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open((dir + "/db").c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  absl::Status st = (*store)->Ping();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  EXPECT_THAT(st.message(), HasSubstr("store: ping: database is locked"));
  ASSERT_EQ(sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);
  EXPECT_TRUE((*store)->Ping().ok());
  auto out = (*store)->RecordBatch(Certificates({Certificate("0a", "after-ping")}));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*(*store)->Count(), 1);
}


// Every ListCertificates filter, alone, and the renewal scan walk an index (or the primary key) in the page's own
// order: no full scan of the table and no sort of its matches, so a page costs about page_size rows however many
// millions of certificates there are. (Without ANALYZE statistics SQLite's plan does not depend on the table's
// size, so a small table shows the plan a large one gets.)
TEST(SqliteStoreTest, EachListFilterAndTheRenewalScanUseAnIndex) {
  auto store = SqliteStore::Open(linesign::testing::TempDir("store") + "/db");
  ASSERT_TRUE(store.ok()) << store.status();
  // Two profiles recorded, one certificate of each marked due: a valid or renewal_due list has one range per
  // profile in each of certificates_renewal_pending and certificates_renewal_marked.
  std::vector<CertificateRecord> records;
  for (int i = 0; i < 4; ++i) {
    records.push_back(Certificate(absl::StrCat("0", i), absl::StrCat("r", i)));
    records.back().profile = i % 2 == 0 ? "device" : "short";
  }
  ASSERT_TRUE((*store)->RecordBatch(Certificates(records)).ok());
  auto marked = (*store)->MarkRenewalDue(
      {DueMark{.issuer_id = "ISSUER", .serial_hex = "00", .event = Event{.type = kEventRenewalDue}},
       DueMark{.issuer_id = "ISSUER", .serial_hex = "01", .event = Event{.type = kEventRenewalDue}}},
      absl::FromUnixSeconds(10));
  ASSERT_TRUE(marked.ok()) << marked.status();
  ASSERT_EQ(*marked, 2);
  const std::map<std::string, int64_t> rb = {{"device", 86400}, {"short", 60}};
  struct Case {
    const char* name;
    CertificateQuery query;
    const char* uses;  // what the plan must name
  };
  const Case cases[] = {
      {"none", {}, "USING INTEGER PRIMARY KEY"},
      {"profile", {.profile = "device"}, "USING INDEX certificates_profile"},
      {"station", {.station = "line1-st1"}, "USING INDEX certificates_station"},
      {"issued range", {.issued_from = 100, .issued_before = 200}, "USING INDEX certificates_issued_at"},
      {"issued after", {.issued_from = 100}, "USING INDEX certificates_issued_at"},
      {"expiring before", {.expiring_before = 100}, "USING INDEX certificates_not_after"},
      {"status valid", {.status = ListStatus::kValid, .now = 50, .renew_before_seconds = rb},
       "USING INDEX certificates_renewal_pending (profile=? AND not_after>?)"},
      {"status valid (marked)", {.status = ListStatus::kValid, .now = 50, .renew_before_seconds = rb},
       "USING INDEX certificates_renewal_marked (profile=? AND not_after>?)"},
      {"status valid page 2",
       {.status = ListStatus::kValid, .now = 50, .renew_before_seconds = rb, .page_token = "c2.e.60.7"},
       "USING INDEX certificates_renewal_pending (profile=? AND not_after>?)"},
      {"status renewal_due", {.status = ListStatus::kRenewalDue, .now = 50, .renew_before_seconds = rb},
       "USING INDEX certificates_renewal_pending (profile=? AND not_after>? AND not_after<?)"},
      {"status renewal_due (marked)", {.status = ListStatus::kRenewalDue, .now = 50, .renew_before_seconds = rb},
       "USING INDEX certificates_renewal_marked (profile=? AND not_after>? AND not_after<?)"},
      {"status renewal_due page 2",
       {.status = ListStatus::kRenewalDue, .now = 50, .renew_before_seconds = rb, .page_token = "c2.e.60.7"},
       "USING INDEX certificates_renewal_pending (profile=? AND not_after>? AND not_after<?)"},
      {"profile + status renewal_due",
       {.profile = "short", .status = ListStatus::kRenewalDue, .now = 50, .renew_before_seconds = rb},
       "USING INDEX certificates_renewal_marked (profile=? AND not_after>? AND not_after<?)"},
      {"status expired", {.status = ListStatus::kExpired, .now = 50}, "USING INDEX certificates_valid_not_after"},
      {"status superseded", {.status = ListStatus::kSuperseded}, "USING INDEX certificates_lifecycle"},
      {"status revoked", {.status = ListStatus::kRevoked}, "USING INDEX certificates_lifecycle"},
      {"subject", {.subject_contains = "CN=DEV"}, "USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)"},
      {"profile page 2", {.profile = "device", .page_token = "c1.500"}, "USING INDEX certificates_profile"},
      {"expiry page 2", {.status = ListStatus::kExpired, .page_token = "c2.e.40.7"},
       "USING INDEX certificates_valid_not_after"},
      {"issued page 2", {.issued_from = 100, .page_token = "c2.i.150.7"}, "USING INDEX certificates_issued_at"},
  };
  for (const Case& c : cases) {
    auto plan = (*store)->ExplainList(c.query);
    ASSERT_TRUE(plan.ok()) << c.name << ": " << plan.status();
    EXPECT_THAT(*plan, HasSubstr(absl::StrCat("SEARCH certificates ", c.uses))) << c.name;
    EXPECT_THAT(*plan, ::testing::Not(HasSubstr("SCAN certificates"))) << c.name;
    EXPECT_THAT(*plan, ::testing::Not(HasSubstr("TEMP B-TREE"))) << c.name;
    if (c.query.status == ListStatus::kRenewalDue || c.query.status == ListStatus::kValid) {
      // One range per profile and per mark, merged in order: 2 profiles, 2 ranges each; 1 with the profile.
      EXPECT_THAT(*plan, HasSubstr("MERGE (UNION ALL)")) << c.name;
      const size_t ranges = c.query.profile.empty() ? 4 : 2;
      size_t n = 0;
      for (size_t at = plan->find("SEARCH certificates"); at != std::string::npos;
           at = plan->find("SEARCH certificates", at + 1)) {
        ++n;
      }
      EXPECT_EQ(n, ranges) << c.name << ":\n" << *plan;
    }
  }
  auto scan = (*store)->ExplainRenewalPending();
  ASSERT_TRUE(scan.ok()) << scan.status();
  EXPECT_THAT(*scan, HasSubstr("SEARCH certificates USING INDEX certificates_renewal_pending (profile=? AND "
                               "not_after>? AND not_after<?)"));
  EXPECT_THAT(*scan, ::testing::Not(HasSubstr("TEMP B-TREE")));
}

// With more ranges than one statement merges (400), renewal_due and valid walk one range bounded by the longest
// or shortest renew_before and check each certificate against its own profile's: slower, still exactly the
// certificates of that status in order.
TEST(SqliteStoreTest, ValidAndRenewalDueWithMoreProfilesThanOneStatementMergesListEachOnce) {
  auto store = SqliteStore::Open(linesign::testing::TempDir("store") + "/db");
  ASSERT_TRUE(store.ok()) << store.status();
  std::vector<CertificateRecord> records;
  CertificateQuery q{.status = ListStatus::kRenewalDue, .now = 1000, .page_size = 7};
  std::vector<std::string> due;
  for (int i = 0; i < 401; ++i) {
    CertificateRecord r = Certificate(absl::StrFormat("%04X", i), absl::StrCat("r", i));
    r.profile = absl::StrFormat("p%03d", i);
    r.not_after = 1000 + 100 + i % 5;
    q.renew_before_seconds[r.profile] = i % 2 == 0 ? 1000 : 10;  // the even ones are due
    records.push_back(std::move(r));
  }
  for (int k = 0; k < 5; ++k) {
    for (int i = k; i < 401; i += 5) {
      if (i % 2 == 0) due.push_back(absl::StrFormat("%04X", i));
    }
  }
  ASSERT_TRUE((*store)->RecordBatch(Certificates(records)).ok());
  auto plan = (*store)->ExplainList(q);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(*plan, HasSubstr("SEARCH certificates USING INDEX certificates_valid_not_after"));
  EXPECT_THAT(*plan, ::testing::Not(HasSubstr("MERGE")));
  std::vector<std::string> listed;
  for (int pages = 0; pages < 100; ++pages) {
    auto page = (*store)->List(q);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const auto& r : page->records) listed.push_back(r.serial_hex);
    if (page->next_page_token.empty()) break;
    q.page_token = page->next_page_token;
  }
  EXPECT_EQ(listed, due);

  // valid likewise: the odd ones, from one range starting at the shortest renew_before.
  q.status = ListStatus::kValid;
  q.page_token.clear();
  plan = (*store)->ExplainList(q);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(*plan, HasSubstr("SEARCH certificates USING INDEX certificates_valid_not_after"));
  listed.clear();
  for (int pages = 0; pages < 100; ++pages) {
    auto page = (*store)->List(q);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const auto& r : page->records) listed.push_back(r.serial_hex);
    if (page->next_page_token.empty()) break;
    q.page_token = page->next_page_token;
  }
  std::vector<std::string> valid;
  for (int k = 0; k < 5; ++k) {
    for (int i = k; i < 401; i += 5) {
      if (i % 2 == 1) valid.push_back(absl::StrFormat("%04X", i));
    }
  }
  EXPECT_EQ(listed, valid);
}

}  // namespace
}  // namespace linesign::store
