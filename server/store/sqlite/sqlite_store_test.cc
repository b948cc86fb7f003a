#include "server/store/sqlite/sqlite_store.h"

#include <sys/stat.h>

#include <chrono>
#include <thread>

#include "gtest/gtest.h"
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

TEST(SqliteStoreTest, OpenFailsWithThePath) {
  auto store = SqliteStore::Open("/nonexistent-dir/x.db");
  EXPECT_EQ(store.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(store.status().message().find("/nonexistent-dir/x.db"), std::string::npos);
}

}  // namespace
}  // namespace linesign::store
