// Schema migrations of the PostgreSQL store: forward-only, numbered, compiled into the binary, with their own
// version table (schema_migrations: version, name, applied_at). PostgreSQL's numbering is its own: version 1 is
// the logical schema SQLite reached at its version 7 (server/store/sqlite/migrations.cc), in PostgreSQL types.
#ifndef LINESIGN_SERVER_STORE_POSTGRES_MIGRATIONS_H_
#define LINESIGN_SERVER_STORE_POSTGRES_MIGRATIONS_H_

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "server/store/postgres/connection.h"

namespace linesign::store::postgres {

// Migration is one step: `sql` takes a database at version - 1 to `version`.
struct Migration {
  int version;
  const char* name;
  const char* sql;
};

// Migrations returns every migration, in order, 1..LatestVersion() without gaps. Never edit a released one.
absl::Span<const Migration> Migrations();
int LatestVersion();

// kMigrationLockKey is the advisory lock Migrate holds (pg_advisory_xact_lock) while it checks and applies.
inline constexpr int64_t kMigrationLockKey = 0x6c6e7367'6d696772;  // "lnsgmigr"

// Migrate brings the database on `conn` up to LatestVersion() in ONE transaction holding the advisory lock
// kMigrationLockKey, so of several replicas starting at once one migrates and the others wait and then find
// nothing to do (PostgreSQL's DDL is transactional: a failed migration leaves nothing behind). A database newer
// than this binary is FailedPrecondition naming both versions and is left untouched; a failure is Unavailable.
// `now` dates the applied rows.
absl::Status Migrate(Connection& conn, absl::Time now);

}  // namespace linesign::store::postgres

#endif  // LINESIGN_SERVER_STORE_POSTGRES_MIGRATIONS_H_
