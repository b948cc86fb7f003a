#include "server/store/sqlite/migrations.h"

#include <algorithm>
#include <array>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace linesign::store::sqlite {
namespace {

// Version 1 is the schema linesign-server created before migrations existed, exactly (it stamped
// PRAGMA user_version = 1), so a database written then is recognised as version 1.
constexpr const char* kV1Initial = R"sql(
CREATE TABLE IF NOT EXISTS certificates (
  id          INTEGER PRIMARY KEY,
  issuer_id   TEXT NOT NULL,
  serial      TEXT NOT NULL,
  subject     TEXT NOT NULL,
  sans        TEXT NOT NULL,
  not_before  INTEGER NOT NULL,
  not_after   INTEGER NOT NULL,
  spki_sha256 TEXT NOT NULL,
  csr_sha256  TEXT NOT NULL,
  station     TEXT NOT NULL,
  profile     TEXT NOT NULL,
  request_id  TEXT NOT NULL,
  der         BLOB NOT NULL,
  issued_at   INTEGER NOT NULL,
  UNIQUE (issuer_id, serial),
  UNIQUE (station, request_id)
);
CREATE INDEX IF NOT EXISTS certificates_not_after ON certificates (not_after);
)sql";

// Version 2: the event log, the outbox, and the lifecycle columns renewal and revocation will fill. Times of
// events and outbox items are Unix microseconds (leases need sub-second precision); certificates keep seconds.
constexpr const char* kV2EventsOutboxLifecycle = R"sql(
ALTER TABLE certificates ADD COLUMN status TEXT NOT NULL DEFAULT 'valid'
  CHECK (status IN ('valid', 'revoked', 'superseded'));
ALTER TABLE certificates ADD COLUMN renews_serial TEXT;
ALTER TABLE certificates ADD COLUMN revoked_at INTEGER;
ALTER TABLE certificates ADD COLUMN revocation_reason INTEGER;
CREATE INDEX certificates_renews ON certificates (issuer_id, renews_serial) WHERE renews_serial IS NOT NULL;
-- No index for the list filters (profile, station, issued_at) yet: each is a page written per commit on the
-- issuing path (measured: bench/compare.sh), and keyset paging walks the primary key. The lifecycle work adds
-- the indexes its queries need, with their measured cost.

CREATE TABLE events (
  id        INTEGER PRIMARY KEY,  -- rowid: max + 1; events are never deleted, so ids only grow
  type      TEXT NOT NULL,
  issuer_id TEXT NOT NULL,
  serial    TEXT NOT NULL,
  station   TEXT NOT NULL,
  profile   TEXT NOT NULL,
  time_us   INTEGER NOT NULL,
  data      TEXT NOT NULL
);
-- No index by serial: its keys are random, so it would cost a random page write per certificate on the
-- issuing path; events are read by cursor (id). A later migration adds one with the first query that needs it.

CREATE TABLE outbox (
  id              INTEGER PRIMARY KEY AUTOINCREMENT,
  kind            TEXT NOT NULL,
  dedupe_key      TEXT,
  payload         BLOB NOT NULL,
  created_us      INTEGER NOT NULL,
  next_attempt_us INTEGER NOT NULL,
  attempts        INTEGER NOT NULL DEFAULT 0,
  last_error      TEXT NOT NULL DEFAULT '',
  lease_owner     TEXT,
  lease_until_us  INTEGER,
  completed_us    INTEGER,
  UNIQUE (kind, dedupe_key)
);
CREATE INDEX outbox_due ON outbox (next_attempt_us, id) WHERE completed_us IS NULL;
)sql";

// Version 3: a certificate row is its own ISSUED event (one row less written per certificate on the issuing
// path: bench/README.md), so certificates and events share one id sequence and the log is read as both tables
// merged by id. The ISSUED rows version 2 appended are dropped (the certificates say the same), and any other
// event is renumbered past every certificate so the sequence stays one; their order among themselves is kept.
constexpr const char* kV3IssuedImplied = R"sql(
CREATE TABLE events_v3 (
  id        INTEGER PRIMARY KEY,  -- shares the sequence with certificates.id: max of both + 1
  type      TEXT NOT NULL,
  issuer_id TEXT NOT NULL,
  serial    TEXT NOT NULL,
  station   TEXT NOT NULL,
  profile   TEXT NOT NULL,
  time_us   INTEGER NOT NULL,
  data      TEXT NOT NULL
);
INSERT INTO events_v3 (id, type, issuer_id, serial, station, profile, time_us, data)
  SELECT id + (SELECT coalesce(max(id), 0) FROM certificates), type, issuer_id, serial, station, profile,
         time_us, data
  FROM events WHERE type <> 'ISSUED' ORDER BY id;
DROP TABLE events;
ALTER TABLE events_v3 RENAME TO events;
)sql";

// Version 4: revocation and CRLs. crl_state holds, per issuer, the last CRL number allocated (numbers only grow,
// across restarts and processes) and a counter of revocations (a publisher regenerates when it moved); crls keeps
// the latest signed CRL so a restarted server serves it at once. The partial index holds only revoked rows, so
// recording a (valid) certificate writes nothing to it.
constexpr const char* kV4Revocation = R"sql(
CREATE TABLE crl_state (
  issuer_id   TEXT PRIMARY KEY,
  last_number INTEGER NOT NULL DEFAULT 0,
  revocations INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE crls (
  issuer_id      TEXT NOT NULL,
  number         INTEGER NOT NULL,
  revocations    INTEGER NOT NULL,
  this_update_us INTEGER NOT NULL,
  next_update_us INTEGER NOT NULL,
  der            BLOB NOT NULL,
  PRIMARY KEY (issuer_id, number)
);
CREATE INDEX certificates_revoked ON certificates (issuer_id) WHERE status = 'revoked';
)sql";

// Version 5 (issue 11): renewal links and marks, and the indexes of the list filters and the renewal scan. Every
// index here except certificates_lifecycle takes a write per certificate on the issuing path; their keys grow
// with time within a profile or station, so each write lands on a right-most page already in cache.
// bench/README.md, "Indexes of the lifecycle queries", has their measured cost.
constexpr const char* kV5Renewal = R"sql(
ALTER TABLE certificates ADD COLUMN renewed_by_serial TEXT;
ALTER TABLE certificates ADD COLUMN renewal_due_at INTEGER;
-- ListCertificates: equality filters walk (value, id) in id order; issued ranges walk (issued_at, id).
CREATE INDEX certificates_profile ON certificates (profile);
CREATE INDEX certificates_station ON certificates (station);
CREATE INDEX certificates_issued_at ON certificates (issued_at);
-- Revoked and superseded certificates only: new certificates are valid, so this one costs the issuing path nothing.
CREATE INDEX certificates_lifecycle ON certificates (status) WHERE status <> 'valid';
-- Valid certificates by expiry: the valid / renewal_due / expired list filters.
CREATE INDEX certificates_valid_not_after ON certificates (not_after) WHERE status = 'valid';
-- The renewal scan: valid certificates not yet marked due, per profile by expiry. A marked certificate leaves it.
CREATE INDEX certificates_renewal_pending ON certificates (profile, not_after)
  WHERE status = 'valid' AND renewal_due_at IS NULL;
)sql";

// Version 6 (issue 11): the webhook's delivery cursor over the event log, one row per follower, held under a
// lease so that one process delivers at a time. Nothing on the issuing path writes it.
constexpr const char* kV6WebhookCursor = R"sql(
CREATE TABLE webhook_cursor (
  name           TEXT PRIMARY KEY,
  cursor         INTEGER NOT NULL DEFAULT 0,
  lease_owner    TEXT,
  lease_until_us INTEGER NOT NULL DEFAULT 0
);
)sql";

// Version 7: the renewal_due list filter walks, per profile, the valid certificates within that profile's own
// renew_before of expiry: unmarked ones in certificates_renewal_pending, marked ones (renewal_due_at set) here.
// New certificates are unmarked, so this index costs the issuing path nothing; marking a certificate moves its
// entry from certificates_renewal_pending to this one, and superseding or revoking it removes the entry.
constexpr const char* kV7RenewalMarked = R"sql(
CREATE INDEX certificates_renewal_marked ON certificates (profile, not_after)
  WHERE status = 'valid' AND renewal_due_at IS NOT NULL;
)sql";

// Version 8: each certificate's registration with each AWS IoT target (issue 10): its state, the step machine's
// progress and what AWS answered. Written only for certificates of registering profiles, so other profiles cost
// the issuing path nothing; the (target, state, serial) index serves the counts and the per-state lists.
constexpr const char* kV8IotRegistrations = R"sql(
CREATE TABLE iot_registrations (
  issuer_id       TEXT NOT NULL,
  serial          TEXT NOT NULL,
  target          TEXT NOT NULL,
  state           TEXT NOT NULL CHECK (state IN ('pending', 'registered', 'failed')),
  progress        TEXT NOT NULL DEFAULT '',
  certificate_id  TEXT NOT NULL DEFAULT '',
  certificate_arn TEXT NOT NULL DEFAULT '',
  thing_name      TEXT NOT NULL DEFAULT '',
  policy          TEXT NOT NULL DEFAULT '',
  already_present INTEGER NOT NULL DEFAULT 0,
  error_code      TEXT NOT NULL DEFAULT '',
  error_message   TEXT NOT NULL DEFAULT '',
  attempts        INTEGER NOT NULL DEFAULT 0,
  updated_us      INTEGER NOT NULL,
  PRIMARY KEY (issuer_id, serial, target)
) WITHOUT ROWID;
CREATE INDEX iot_registrations_by_state ON iot_registrations (target, state, serial);
)sql";

constexpr std::array<Migration, 8> kMigrations = {{
    {1, "initial: certificates", kV1Initial},
    {2, "events, outbox, certificate lifecycle columns", kV2EventsOutboxLifecycle},
    {3, "ISSUED events implied by certificates, one id sequence", kV3IssuedImplied},
    {4, "revocation: CRL numbers and the latest CRL", kV4Revocation},
    {5, "renewal links and marks, list filter and renewal scan indexes", kV5Renewal},
    {6, "webhook delivery cursor", kV6WebhookCursor},
    {7, "marked renewal-due certificates by profile and expiry", kV7RenewalMarked},
    {8, "AWS IoT registrations per certificate and target", kV8IotRegistrations},
}};

absl::Status Exec(sqlite3* db, const std::string& sql, absl::string_view what) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err != nullptr ? err : sqlite3_errmsg(db);
    sqlite3_free(err);
    return absl::UnavailableError(absl::StrCat(what, ": ", msg));
  }
  return absl::OkStatus();
}

// QueryInt returns the first column of the first row of `sql`, or 0 for no row.
absl::StatusOr<int64_t> QueryInt(sqlite3* db, const char* sql) {
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &s, nullptr) != SQLITE_OK) {
    return absl::UnavailableError(absl::StrCat(sql, ": ", sqlite3_errmsg(db)));
  }
  int rc = sqlite3_step(s);
  int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
  sqlite3_finalize(s);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return absl::UnavailableError(absl::StrCat(sql, ": ", sqlite3_errmsg(db)));
  return v;
}

absl::Status MigrateLocked(sqlite3* db, const std::string& path, absl::Time now) {
  auto user_version = QueryInt(db, "PRAGMA user_version");
  if (!user_version.ok()) return user_version.status();
  auto has_table = QueryInt(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'");
  if (!has_table.ok()) return has_table.status();
  int64_t recorded = 0;
  if (*has_table != 0) {
    auto max = QueryInt(db, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
    if (!max.ok()) return max.status();
    recorded = *max;
  }
  const int64_t current = std::max(*user_version, recorded);
  if (current > LatestVersion()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "store: database ", path, " has schema version ", current, " but this linesign-server knows up to ",
        LatestVersion(), "; upgrade linesign-server (a database is never downgraded)"));
  }
  if (*has_table == 0) {
    if (auto st = Exec(db,
                       "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                       "applied_at INTEGER NOT NULL)",
                       "create schema_migrations");
        !st.ok()) {
      return st;
    }
  }
  const int64_t applied_at = absl::ToUnixSeconds(now);
  for (const Migration& m : kMigrations) {
    // Versions reached before the table existed are recorded as found now.
    if (m.version > current) {
      if (auto st = Exec(db, m.sql, absl::StrCat("migration ", m.version, " (", m.name, ")")); !st.ok()) return st;
    }
    if (m.version > recorded) {
      sqlite3_stmt* s = nullptr;
      sqlite3_prepare_v2(db, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)", -1,
                         &s, nullptr);
      sqlite3_bind_int(s, 1, m.version);
      sqlite3_bind_text(s, 2, m.name, -1, SQLITE_STATIC);
      sqlite3_bind_int64(s, 3, applied_at);
      int rc = sqlite3_step(s);
      sqlite3_finalize(s);
      if (rc != SQLITE_DONE) {
        return absl::UnavailableError(absl::StrCat("record migration ", m.version, ": ", sqlite3_errmsg(db)));
      }
    }
  }
  if (current < LatestVersion()) {
    if (auto st = Exec(db, absl::StrCat("PRAGMA user_version = ", LatestVersion()), "stamp the schema version");
        !st.ok()) {
      return st;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Span<const Migration> Migrations() { return kMigrations; }

int LatestVersion() { return kMigrations.back().version; }

absl::Status Migrate(sqlite3* db, const std::string& path, absl::Time now) {
  // The write lock for the whole check-and-apply: another process opening the same file waits here (busy
  // timeout) and then sees the version already applied.
  if (auto st = Exec(db, "BEGIN IMMEDIATE", "store: lock the database to migrate it"); !st.ok()) {
    return absl::UnavailableError(absl::StrCat("store.sqlite.path ", path, ": ", st.message()));
  }
  absl::Status st = MigrateLocked(db, path, now);
  if (!st.ok()) {
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    if (absl::IsFailedPrecondition(st)) return st;
    return absl::UnavailableError(absl::StrCat("store.sqlite.path ", path, ": ", st.message()));
  }
  if (auto c = Exec(db, "COMMIT", "commit the migrations"); !c.ok()) {
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    return absl::UnavailableError(absl::StrCat("store.sqlite.path ", path, ": ", c.message()));
  }
  return absl::OkStatus();
}

}  // namespace linesign::store::sqlite
