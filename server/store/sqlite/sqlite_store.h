// SqliteStore: the embedded store. One database file in WAL mode with synchronous=FULL, so a committed batch
// survives power loss; writes are serialised by one connection, and reads use a second one, so a query (a replay
// look-up, GetCertificate, GetStats) never waits behind a batch that is waiting for the database. Checkpoints
// (copying the WAL into the database file, with its own fsync) run on a thread and connection of their own once
// the WAL holds kCheckpointPages pages, instead of inside whichever commit crossed the threshold, so no batch
// waits for one.
#ifndef LINESIGN_SERVER_STORE_SQLITE_SQLITE_STORE_H_
#define LINESIGN_SERVER_STORE_SQLITE_SQLITE_STORE_H_

#include <sqlite3.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "server/store/store.h"

namespace linesign::store {

class SqliteStore final : public IssuanceStore, public CertificateReader {
 public:
  // Open opens (creating when missing) the database at `path` and brings its schema up to date. Unavailable
  // with the path and SQLite's reason when the file cannot be opened or written.
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(const std::string& path);
  ~SqliteStore() override;

  absl::StatusOr<std::vector<RecordOutcome>> RecordBatch(absl::Span<const CertificateRecord> records) override;
  absl::StatusOr<std::optional<CertificateRecord>> FindByRequest(const std::string& station,
                                                                 const std::string& request_id) override;
  absl::StatusOr<std::optional<CertificateRecord>> FindBySerial(const std::string& issuer_id,
                                                                const std::string& serial_hex) override;
  absl::StatusOr<int64_t> Count() override;

  // checkpoints returns how many checkpoints the background thread has completed.
  int64_t checkpoints() const;

  static constexpr int kCheckpointPages = 1000;  // SQLite's own default threshold

 private:
  explicit SqliteStore(sqlite3* db) : db_(db) {}
  absl::Status Exec(const char* sql);
  absl::StatusOr<std::optional<CertificateRecord>> FindOne(const char* sql, const std::string& a,
                                                           const std::string& b);

  std::mutex mu_;
  sqlite3* db_;  // owned; guarded by mu_; the writer
  std::mutex read_mu_;
  sqlite3* reader_ = nullptr;  // owned; guarded by read_mu_; read-only, sees every committed batch (WAL)

  // CheckpointLoop runs on checkpointer_ with its own connection until stop_.
  void CheckpointLoop(sqlite3* db);
  static int OnWalCommit(void* self, sqlite3* db, const char* name, int pages);
  mutable std::mutex ck_mu_;
  std::condition_variable ck_cv_;
  bool ck_wanted_ = false;   // guarded by ck_mu_
  bool stop_ = false;        // guarded by ck_mu_
  int64_t checkpoints_ = 0;  // guarded by ck_mu_
  std::thread checkpointer_;
};

}  // namespace linesign::store

#endif  // LINESIGN_SERVER_STORE_SQLITE_SQLITE_STORE_H_
