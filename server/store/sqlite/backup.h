// BackupDatabase: a consistent copy of a live SQLite store, made with SQLite's online backup API while the server
// keeps recording (WAL: the copy is one read transaction's snapshot; the writer is never blocked).
#ifndef LINESIGN_SERVER_STORE_SQLITE_BACKUP_H_
#define LINESIGN_SERVER_STORE_SQLITE_BACKUP_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace linesign::store::sqlite {

struct BackupResult {
  int64_t certificates = 0;   // rows in the copy's certificates table
  int64_t schema_version = 0; // the copy's schema version
};

// BackupDatabase copies the database at `db_path` into a new file `out_path` (mode 0600, created exclusively: an
// existing file is never overwritten). The copy is written beside `out_path` under a temporary name, checked
// (PRAGMA quick_check), synced and then renamed, so `out_path` is either absent or complete. FailedPrecondition
// when `out_path` exists; Unavailable with SQLite's reason otherwise.
absl::StatusOr<BackupResult> BackupDatabase(const std::string& db_path, const std::string& out_path);

}  // namespace linesign::store::sqlite

#endif  // LINESIGN_SERVER_STORE_SQLITE_BACKUP_H_
