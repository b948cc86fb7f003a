// SqliteStore: the embedded store. One database file in WAL mode with synchronous=FULL, so a committed batch
// survives power loss; writes are serialised by one connection, and reads use a second one, so a query (a replay
// look-up, GetCertificate, GetStats) never waits behind a batch that is waiting for the database.
#ifndef LINESIGN_SERVER_STORE_SQLITE_SQLITE_STORE_H_
#define LINESIGN_SERVER_STORE_SQLITE_SQLITE_STORE_H_

#include <sqlite3.h>

#include <memory>
#include <mutex>
#include <string>

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

 private:
  explicit SqliteStore(sqlite3* db) : db_(db) {}
  absl::Status Exec(const char* sql);
  absl::StatusOr<std::optional<CertificateRecord>> FindOne(const char* sql, const std::string& a,
                                                           const std::string& b);

  std::mutex mu_;
  sqlite3* db_;  // owned; guarded by mu_; the writer
  std::mutex read_mu_;
  sqlite3* reader_ = nullptr;  // owned; guarded by read_mu_; read-only, sees every committed batch (WAL)
};

}  // namespace linesign::store

#endif  // LINESIGN_SERVER_STORE_SQLITE_SQLITE_STORE_H_
