#include "server/store/postgres/migrations.h"

#include <array>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace linesign::store::postgres {
namespace {

// Version 1: SQLite's schema at its version 7, table for table and index for index. Text is COLLATE "C" (byte
// order, like SQLite's); times of certificates are Unix seconds and of events, outbox items, CRLs and leases Unix
// microseconds, as in SQLite; certificates and events share one id sequence (each certificate is its own ISSUED
// event), allocated max + 1 under an advisory lock (postgres_store.h explains why not a sequence).
constexpr const char* kV1Initial = R"sql(
CREATE TABLE certificates (
  id                BIGINT PRIMARY KEY,
  issuer_id         TEXT COLLATE "C" NOT NULL,
  serial            TEXT COLLATE "C" NOT NULL,
  subject           TEXT COLLATE "C" NOT NULL,
  sans              TEXT COLLATE "C" NOT NULL,
  not_before        BIGINT NOT NULL,
  not_after         BIGINT NOT NULL,
  spki_sha256       TEXT COLLATE "C" NOT NULL,
  csr_sha256        TEXT COLLATE "C" NOT NULL,
  station           TEXT COLLATE "C" NOT NULL,
  profile           TEXT COLLATE "C" NOT NULL,
  request_id        TEXT COLLATE "C" NOT NULL,
  der               BYTEA NOT NULL,
  issued_at         BIGINT NOT NULL,
  status            TEXT COLLATE "C" NOT NULL DEFAULT 'valid' CHECK (status IN ('valid', 'revoked', 'superseded')),
  renews_serial     TEXT COLLATE "C",
  revoked_at        BIGINT,
  revocation_reason INTEGER,
  renewed_by_serial TEXT COLLATE "C",
  renewal_due_at    BIGINT,
  CONSTRAINT certificates_issuer_serial UNIQUE (issuer_id, serial),
  CONSTRAINT certificates_station_request UNIQUE (station, request_id)
);
CREATE INDEX certificates_not_after ON certificates (not_after);
CREATE INDEX certificates_renews ON certificates (issuer_id, renews_serial) WHERE renews_serial IS NOT NULL;
CREATE INDEX certificates_revoked ON certificates (issuer_id) WHERE status = 'revoked';
CREATE INDEX certificates_profile ON certificates (profile, id);
CREATE INDEX certificates_station ON certificates (station, id);
CREATE INDEX certificates_issued_at ON certificates (issued_at, id);
CREATE INDEX certificates_lifecycle ON certificates (status, id) WHERE status <> 'valid';
CREATE INDEX certificates_valid_not_after ON certificates (not_after, id) WHERE status = 'valid';
CREATE INDEX certificates_renewal_pending ON certificates (profile, not_after)
  WHERE status = 'valid' AND renewal_due_at IS NULL;
CREATE INDEX certificates_renewal_marked ON certificates (profile, not_after)
  WHERE status = 'valid' AND renewal_due_at IS NOT NULL;

CREATE TABLE events (
  id        BIGINT PRIMARY KEY,  -- shares the sequence with certificates.id
  type      TEXT COLLATE "C" NOT NULL,
  issuer_id TEXT COLLATE "C" NOT NULL,
  serial    TEXT COLLATE "C" NOT NULL,
  station   TEXT COLLATE "C" NOT NULL,
  profile   TEXT COLLATE "C" NOT NULL,
  time_us   BIGINT NOT NULL,
  data      TEXT COLLATE "C" NOT NULL
);

CREATE TABLE outbox (
  id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  kind            TEXT COLLATE "C" NOT NULL,
  dedupe_key      TEXT COLLATE "C",
  payload         BYTEA NOT NULL,
  created_us      BIGINT NOT NULL,
  next_attempt_us BIGINT NOT NULL,
  attempts        INTEGER NOT NULL DEFAULT 0,
  last_error      TEXT COLLATE "C" NOT NULL DEFAULT '',
  lease_owner     TEXT COLLATE "C",
  lease_until_us  BIGINT,
  completed_us    BIGINT,
  CONSTRAINT outbox_kind_dedupe UNIQUE (kind, dedupe_key)
);
CREATE INDEX outbox_due ON outbox (next_attempt_us, id) WHERE completed_us IS NULL;

CREATE TABLE crl_state (
  issuer_id   TEXT COLLATE "C" PRIMARY KEY,
  last_number BIGINT NOT NULL DEFAULT 0,
  revocations BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE crls (
  issuer_id      TEXT COLLATE "C" NOT NULL,
  number         BIGINT NOT NULL,
  revocations    BIGINT NOT NULL,
  this_update_us BIGINT NOT NULL,
  next_update_us BIGINT NOT NULL,
  der            BYTEA NOT NULL,
  PRIMARY KEY (issuer_id, number)
);

CREATE TABLE webhook_cursor (
  name           TEXT COLLATE "C" PRIMARY KEY,
  cursor         BIGINT NOT NULL DEFAULT 0,
  lease_owner    TEXT COLLATE "C",
  lease_until_us BIGINT NOT NULL DEFAULT 0
);
)sql";

// Version 2: SQLite's version 8, AWS IoT registrations per certificate and target; already_present is a
// BOOLEAN where SQLite has 0/1.
constexpr const char* kV2IotRegistrations = R"sql(
CREATE TABLE iot_registrations (
  issuer_id       TEXT COLLATE "C" NOT NULL,
  serial          TEXT COLLATE "C" NOT NULL,
  target          TEXT COLLATE "C" NOT NULL,
  state           TEXT COLLATE "C" NOT NULL CHECK (state IN ('pending', 'registered', 'failed')),
  progress        TEXT COLLATE "C" NOT NULL DEFAULT '',
  certificate_id  TEXT COLLATE "C" NOT NULL DEFAULT '',
  certificate_arn TEXT COLLATE "C" NOT NULL DEFAULT '',
  thing_name      TEXT COLLATE "C" NOT NULL DEFAULT '',
  policy          TEXT COLLATE "C" NOT NULL DEFAULT '',
  already_present BOOLEAN NOT NULL DEFAULT FALSE,
  error_code      TEXT COLLATE "C" NOT NULL DEFAULT '',
  error_message   TEXT COLLATE "C" NOT NULL DEFAULT '',
  attempts        INTEGER NOT NULL DEFAULT 0,
  updated_us      BIGINT NOT NULL,
  PRIMARY KEY (issuer_id, serial, target)
);
CREATE INDEX iot_registrations_by_state ON iot_registrations (target, state, serial);
)sql";

constexpr std::array<Migration, 2> kMigrations = {{
    {1, "the schema of SQLite version 7: certificates, events, outbox, CRLs, webhook cursor", kV1Initial},
    {2, "AWS IoT registrations per certificate and target", kV2IotRegistrations},
}};

absl::Status MigrateLocked(Connection& conn, absl::Time now) {
  LINESIGN_RETURN_IF_ERROR(conn.Command("migrate: lock", "SELECT pg_advisory_xact_lock(7813309291588839282)"));
  LINESIGN_RETURN_IF_ERROR(conn.Command("migrate: version table",
                                        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                                        "name TEXT NOT NULL, applied_at BIGINT NOT NULL)"));
  LINESIGN_ASSIGN_OR_RETURN(Result r,
                            conn.Exec("migrate: read the version",
                                      "SELECT COALESCE(MAX(version), 0)::bigint FROM schema_migrations", {}, false));
  const int64_t current = r.Int(0, 0);
  if (current > LatestVersion()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "store: PostgreSQL ", conn.Describe(), " has schema version ", current,
        " but this linesign-server knows up to ", LatestVersion(),
        "; upgrade linesign-server (a database is never downgraded)"));
  }
  for (const Migration& m : kMigrations) {
    if (m.version <= current) continue;
    LINESIGN_RETURN_IF_ERROR(conn.Command(absl::StrCat("migration ", m.version, " (", m.name, ")"), m.sql));
    LINESIGN_RETURN_IF_ERROR(conn.Exec(absl::StrCat("record migration ", m.version),
                                       "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                                       Params().Int(m.version).Text(m.name).Int(absl::ToUnixSeconds(now)), false)
                                 .status());
  }
  return absl::OkStatus();
}

}  // namespace

static_assert(kMigrationLockKey == 7813309291588839282, "the lock statement spells the key out");

absl::Span<const Migration> Migrations() { return kMigrations; }

int LatestVersion() { return kMigrations.back().version; }

absl::Status Migrate(Connection& conn, absl::Time now) {
  LINESIGN_RETURN_IF_ERROR(conn.Command("migrate: begin", "BEGIN"));
  absl::Status st = MigrateLocked(conn, now);
  if (st.ok()) st = conn.Command("migrate: commit", "COMMIT");
  if (!st.ok()) conn.Command("migrate: rollback", "ROLLBACK").IgnoreError();
  return st;
}

}  // namespace linesign::store::postgres
