#include "server/store/sqlite/sqlite_store.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include <chrono>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/certs.h"
#include "tests/testing/test_ca.h"

namespace linesign::store {
namespace {

CertificateRecord Record(const std::string& serial, const std::string& request_id) {
  CertificateRecord r;
  r.issuer_id = "ISSUER";
  r.serial_hex = serial;
  r.subject = "CN=x";
  r.station = "station-1";
  r.profile = "device";
  r.request_id = request_id;
  r.csr_sha256 = "CSR-" + request_id;
  r.der = std::string("\x30\x00", 2);
  r.not_before = 1;
  r.not_after = 2;
  return r;
}

TEST(SqliteStoreTest, RecordsABatchAndReportsCollisionsPerRecord) {
  std::string dir = linesign::testing::TempDir("store");
  auto store = SqliteStore::Open(dir + "/db");
  ASSERT_TRUE(store.ok()) << store.status();
  std::vector<CertificateRecord> batch = {Record("01", "a"), Record("02", "b")};
  auto out = (*store)->RecordBatch(batch);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)[0], RecordOutcome::kRecorded);
  EXPECT_EQ((*out)[1], RecordOutcome::kRecorded);

  // Same serial, new request: a collision; same request id: a duplicate; a fresh one still goes in.
  std::vector<CertificateRecord> second = {Record("01", "c"), Record("03", "a"), Record("04", "d"),
                                           Record("05", "d")};
  out = (*store)->RecordBatch(second);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ((*out)[0], RecordOutcome::kSerialCollision);
  EXPECT_EQ((*out)[1], RecordOutcome::kDuplicateRequest);
  EXPECT_EQ((*out)[2], RecordOutcome::kRecorded);
  EXPECT_EQ((*out)[3], RecordOutcome::kDuplicateRequest);  // within one batch too
  EXPECT_EQ(*(*store)->Count(), 3);

  auto found = (*store)->FindByRequest("station-1", "a");
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ((*found)->serial_hex, "01");
  EXPECT_EQ((*found)->csr_sha256, "CSR-a");
  EXPECT_FALSE((*(*store)->FindByRequest("station-2", "a")).has_value());
  auto by_serial = (*store)->FindBySerial("ISSUER", "04");
  ASSERT_TRUE(by_serial.ok() && by_serial->has_value());
  EXPECT_EQ((*by_serial)->request_id, "d");
}

TEST(SqliteStoreTest, SurvivesReopen) {
  std::string dir = linesign::testing::TempDir("store");
  {
    auto store = SqliteStore::Open(dir + "/db");
    ASSERT_TRUE((*store)->RecordBatch(std::vector<CertificateRecord>{Record("01", "a")}).ok());
  }
  auto store = SqliteStore::Open(dir + "/db");
  ASSERT_TRUE(store.ok());
  EXPECT_EQ(*(*store)->Count(), 1);
}

// Checkpoints run on the store's own thread once the WAL holds kCheckpointPages pages: the database file itself
// grows while batches keep committing, every row is there, and reads and writes go on throughout.
TEST(SqliteStoreTest, CheckpointsInTheBackground) {
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
      batch.push_back(Record("0" + n, "r" + n));
      batch.back().der = der;
    }
    auto out = (*store)->RecordBatch(batch);
    ASSERT_TRUE(out.ok()) << out.status();
  }
  // The thread may still be finishing the one it was asked for: wait for it.
  for (int i = 0; i < 3000 && (*store)->checkpoints() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GT((*store)->checkpoints(), 0) << "no background checkpoint after " << batches << " batches";
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
  CertificateRecord r = Record("0A", "sans");
  r.sans = {{"DNS", "a.example,IP Address:10.6.6.6"},
            {"DNS", "x.example\nprofile:    server"},
            {"URI", "urn:x\nserial:     00"},
            {"email", std::string("\xFF\xFEq\"@\0x", 7)},
            {"IP Address", "10.1.2.3"}};
  ASSERT_TRUE((*store)->RecordBatch(std::vector<CertificateRecord>{r}).ok());
  auto found = (*store)->FindBySerial("ISSUER", "0A");
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ((*found)->sans, r.sans);
  EXPECT_EQ((*(*store)->FindByRequest("station-1", "sans"))->sans, r.sans);
  // The column is a JSON array of {type, value}; the value that is not UTF-8 is kept as hex.
  std::string column = linesign::testing::SqliteScalar(dir + "/db", "SELECT sans FROM certificates");
  EXPECT_THAT(column, ::testing::StartsWith(R"([{"type":"DNS","value":"a.example,IP Address:10.6.6.6"},)"));
  EXPECT_THAT(column, ::testing::HasSubstr(R"({"type":"email","value_hex":"fffe7122400078"})"));

  CertificateRecord none = Record("0B", "no-sans");
  ASSERT_TRUE((*store)->RecordBatch(std::vector<CertificateRecord>{none}).ok());
  EXPECT_TRUE((*(*store)->FindBySerial("ISSUER", "0B"))->sans.empty());
}

// A row written before SANs were typed holds "DNS:a,IP Address:b": it cannot be split back unambiguously, so it
// reads back as one SAN of type "legacy" with the whole text. An empty legacy column is no SAN.
TEST(SqliteStoreTest, LegacySansColumnReadsBackAsOneLegacyEntry) {
  std::string dir = linesign::testing::TempDir("store");
  auto store = SqliteStore::Open(dir + "/db");
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->RecordBatch(std::vector<CertificateRecord>{Record("01", "old"), Record("02", "old2")}).ok());
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
  ASSERT_TRUE((*store)->RecordBatch(std::vector<CertificateRecord>{Record("01", "a")}).ok());
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

}  // namespace
}  // namespace linesign::store
