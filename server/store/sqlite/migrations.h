// Schema migrations of the SQLite store: forward-only, numbered, compiled into the binary.
#ifndef LINESIGN_SERVER_STORE_SQLITE_MIGRATIONS_H_
#define LINESIGN_SERVER_STORE_SQLITE_MIGRATIONS_H_

#include <sqlite3.h>

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace linesign::store::sqlite {

// Migration is one step: `sql` takes a database at version - 1 to `version`.
struct Migration {
  int version;
  const char* name;
  const char* sql;
};

// Migrations returns every migration, in order, versions 1..LatestVersion() without gaps. A migration, once
// released, is never edited: a change is a new migration.
absl::Span<const Migration> Migrations();
int LatestVersion();

// Migrate brings the database on `db` (a read-write connection of its own, outside any transaction) up to
// LatestVersion(). It holds the database's write lock (BEGIN IMMEDIATE) throughout, so of two processes opening
// the same file at once the second waits and then finds nothing left to do. The version is the larger of
// PRAGMA user_version (which a database written before migrations existed carries, as 1) and the highest row of
// the schema_migrations table (version, name, applied_at), which records each migration applied, dated by `now`.
// A database newer than this binary is FailedPrecondition naming both versions and is left untouched; a failed
// migration is Unavailable and leaves the database as it was.
absl::Status Migrate(sqlite3* db, const std::string& path, absl::Time now);

}  // namespace linesign::store::sqlite

#endif  // LINESIGN_SERVER_STORE_SQLITE_MIGRATIONS_H_
