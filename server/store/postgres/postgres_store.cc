#include "server/store/postgres/postgres_store.h"

#include <algorithm>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"
#include "common/utf8.h"
#include "nlohmann/json.hpp"
#include "server/store/input_checks.h"
#include "server/store/postgres/connection_string.h"
#include "server/store/postgres/migrations.h"

namespace linesign::store {
namespace {

using postgres::Connection;
using postgres::Params;
using postgres::Result;

constexpr const char* kColumns =
    "id, issuer_id, serial, subject, sans, not_before, not_after, spki_sha256, csr_sha256, station, profile, "
    "request_id, der, issued_at, status, renews_serial, revoked_at, revocation_reason, renewed_by_serial, "
    "renewal_due_at";

constexpr const char* kInsertCertificate =
    "INSERT INTO certificates (id, issuer_id, serial, subject, sans, not_before, not_after, spki_sha256, "
    "csr_sha256, station, profile, request_id, der, issued_at, status, renews_serial, revoked_at, "
    "revocation_reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) "
    "ON CONFLICT DO NOTHING RETURNING id";

constexpr const char* kInsertEvent =
    "INSERT INTO events (id, type, issuer_id, serial, station, profile, time_us, data) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

// The pipelined batch (PostgresStore::RecordBatch) writes an entry's events and outbox items in the same flight as
// its certificate, before knowing whether the certificate went in: they are written only if the row with the
// certificate's id (reserved for this transaction under the log lock, so only this entry can have written it)
// exists.
const std::string kInsertEntryEvent =
    "INSERT INTO events (id, type, issuer_id, serial, station, profile, time_us, data) "
    "SELECT $1::bigint, $2::text, $3::text, $4::text, $5::text, $6::text, $7::bigint, $8::text "
    "WHERE EXISTS (SELECT 1 FROM certificates WHERE id = $9::bigint)";
const std::string kInsertEntryOutbox =
    "INSERT INTO outbox (kind, dedupe_key, payload, created_us, next_attempt_us) "
    "SELECT $1::text, $2::text, $3::bytea, $4::bigint, $5::bigint "
    "WHERE EXISTS (SELECT 1 FROM certificates WHERE id = $6::bigint) ON CONFLICT (kind, dedupe_key) DO NOTHING";

constexpr const char* kInsertOutbox =
    "INSERT INTO outbox (kind, dedupe_key, payload, created_us, next_attempt_us) VALUES ($1, $2, $3, $4, $5) "
    "ON CONFLICT (kind, dedupe_key) DO NOTHING RETURNING id";

// An iot.register item records its registration as pending (new, or again after a failure: completed steps stay
// in its progress), in the statement that writes the item and only if the item went in: the pipelined batch
// cannot look at one statement's result before sending the next.
constexpr char kIotPendingUpsert[] =
    "INSERT INTO iot_registrations (issuer_id, serial, target, state, updated_us) "
    "SELECT $7::text, $8::text, $9::text, 'pending', $4::bigint FROM o "
    "ON CONFLICT (issuer_id, serial, target) DO UPDATE SET state = 'pending', error_code = '', "
    "error_message = '', updated_us = excluded.updated_us RETURNING (SELECT id FROM o)";
const std::string kInsertIotOutbox = absl::StrCat(
    "WITH o AS (INSERT INTO outbox (kind, dedupe_key, payload, created_us, next_attempt_us) "
    "SELECT $1::text, $2::text, $3::bytea, $4::bigint, $5::bigint WHERE $6::bigint = 0 "
    "ON CONFLICT (kind, dedupe_key) DO NOTHING RETURNING id) ",
    kIotPendingUpsert);
// As kInsertIotOutbox, for an entry of the pipelined batch: only if the entry's certificate went in.
const std::string kInsertEntryIotOutbox = absl::StrCat(
    "WITH o AS (INSERT INTO outbox (kind, dedupe_key, payload, created_us, next_attempt_us) "
    "SELECT $1::text, $2::text, $3::bytea, $4::bigint, $5::bigint "
    "WHERE EXISTS (SELECT 1 FROM certificates WHERE id = $6::bigint) "
    "ON CONFLICT (kind, dedupe_key) DO NOTHING RETURNING id) ",
    kIotPendingUpsert);

// The log after a cursor in one statement (one snapshot): recorded certificates as ISSUED events and appended
// events, each walked in id order on its primary key and merged.
constexpr const char* kReadAfter =
    "(SELECT id, 'ISSUED'::text AS type, issuer_id, serial, station, profile, issued_at * 1000000 AS time_us, "
    "''::text AS data FROM certificates WHERE id > $1 ORDER BY id LIMIT $2) UNION ALL "
    "(SELECT id, type, issuer_id, serial, station, profile, time_us, data FROM events WHERE id > $1 "
    "ORDER BY id LIMIT $2) ORDER BY id LIMIT $2";

// Due, free items chosen and leased in one statement; SKIP LOCKED lets another replica's claim running at the
// same moment take the next items instead of waiting for these.
constexpr const char* kClaim =
    "UPDATE outbox SET lease_owner = $1, lease_until_us = $2, attempts = attempts + 1 WHERE id IN ("
    "SELECT id FROM outbox WHERE completed_us IS NULL AND next_attempt_us <= $3 "
    "AND (lease_until_us IS NULL OR lease_until_us <= $3) AND ($4 = '' OR kind = $4) "
    "ORDER BY next_attempt_us, id LIMIT $5 FOR UPDATE SKIP LOCKED) "
    "RETURNING id, kind, dedupe_key, payload, next_attempt_us, attempts, last_error, lease_owner, lease_until_us";

constexpr const char* kComplete =
    "UPDATE outbox SET completed_us = $3, lease_owner = NULL, lease_until_us = NULL "
    "WHERE id = $1 AND lease_owner = $2 AND completed_us IS NULL";

constexpr const char* kReschedule =
    "UPDATE outbox SET next_attempt_us = $3, last_error = $4, lease_owner = NULL, lease_until_us = NULL "
    "WHERE id = $1 AND lease_owner = $2 AND completed_us IS NULL";

constexpr const char* kSupersede =
    "UPDATE certificates SET status = 'superseded', renewed_by_serial = $3 "
    "WHERE issuer_id = $1 AND serial = $2 AND status = 'valid' AND renewed_by_serial IS NULL";

constexpr const char* kMarkDue =
    "UPDATE certificates SET renewal_due_at = $3 "
    "WHERE issuer_id = $1 AND serial = $2 AND status = 'valid' AND renewed_by_serial IS NULL "
    "AND renewal_due_at IS NULL";

// The renewal scan: a range of certificates_renewal_pending. The profile is `= ANY(ARRAY[$1])` (ordered by
// profile first, the same order for one profile) for the reason List's ranges are: with `profile = $1` a custom
// plan walks certificates_not_after filtering by profile when it expects the window to hold many certificates of
// other profiles (0.46 s at a million when this profile has none in it).
constexpr const char* kRenewalPending =
    "SELECT id, issuer_id, serial, subject, sans, not_before, not_after, spki_sha256, csr_sha256, station, profile, "
    "request_id, der, issued_at, status, renews_serial, revoked_at, revocation_reason, renewed_by_serial, "
    "renewal_due_at FROM certificates WHERE profile = ANY(ARRAY[$1]) AND status = 'valid' AND renewal_due_at IS NULL "
    "AND not_after > $2 AND not_after <= $3 AND renewed_by_serial IS NULL ORDER BY profile, not_after, id LIMIT $4";

constexpr int kMaxReadLimit = 1000;
// A valid or renewal_due list merges up to two ranges per profile in one statement, as SqliteStore does (the same
// bound, so both stores plan alike); beyond it, one range bounded by the shortest or longest renew_before.
constexpr size_t kMaxMergedRanges = 400;
constexpr char kPageTokenPrefix[] = "c1.";
constexpr char kOrderedTokenPrefix[] = "c2.";

// The sans column: the same JSON as SQLite's (server/store/sqlite/sqlite_store.cc), so records read back alike.
void PutBytes(nlohmann::json& j, const char* name, const std::string& v) {
  if (IsValidUtf8(v)) {
    j[name] = v;
  } else {
    j[absl::StrCat(name, "_hex")] = absl::BytesToHexString(v);
  }
}

bool GetBytes(const nlohmann::json& j, const char* name, std::string* out) {
  if (auto it = j.find(name); it != j.end() && it->is_string()) {
    *out = it->get<std::string>();
    return true;
  }
  if (auto it = j.find(absl::StrCat(name, "_hex")); it != j.end() && it->is_string()) {
    std::string hex = it->get<std::string>();
    if (hex.size() % 2 != 0 || !std::all_of(hex.begin(), hex.end(), [](char c) { return absl::ascii_isxdigit(c); })) {
      return false;
    }
    *out = absl::HexStringToBytes(hex);
    return true;
  }
  return false;
}

std::string EncodeSans(const std::vector<San>& sans) {
  nlohmann::json array = nlohmann::json::array();
  for (const San& san : sans) {
    nlohmann::json j = nlohmann::json::object();
    PutBytes(j, "type", san.type);
    PutBytes(j, "value", san.value);
    array.push_back(std::move(j));
  }
  return array.dump();
}

std::vector<San> DecodeSans(const std::string& text) {
  if (text.empty()) return {};
  if (text[0] == '[') {
    nlohmann::json array = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    std::vector<San> sans;
    bool ok = array.is_array();
    for (size_t i = 0; ok && i < array.size(); ++i) {
      San san;
      ok = array[i].is_object() && GetBytes(array[i], "type", &san.type) && GetBytes(array[i], "value", &san.value);
      sans.push_back(std::move(san));
    }
    if (ok) return sans;
  }
  return {San{kLegacySanType, text}};
}

int64_t Micros(absl::Time t) { return absl::ToUnixMicros(t); }

CertificateStatus ParseStatus(const std::string& s) {
  if (s == "revoked") return CertificateStatus::kRevoked;
  if (s == "superseded") return CertificateStatus::kSuperseded;
  return CertificateStatus::kValid;
}

CertificateRecord ReadCertificate(const Result& r, int row) {
  CertificateRecord c;
  c.id = r.Int(row, 0);
  c.issuer_id = r.Str(row, 1);
  c.serial_hex = r.Str(row, 2);
  c.subject = r.Str(row, 3);
  c.sans = DecodeSans(r.Str(row, 4));
  c.not_before = r.Int(row, 5);
  c.not_after = r.Int(row, 6);
  c.spki_sha256 = r.Str(row, 7);
  c.csr_sha256 = r.Str(row, 8);
  c.station = r.Str(row, 9);
  c.profile = r.Str(row, 10);
  c.request_id = r.Str(row, 11);
  c.der = r.Str(row, 12);
  c.issued_at = r.Int(row, 13);
  c.status = ParseStatus(r.Str(row, 14));
  c.renews_serial = r.Str(row, 15);
  c.revoked_at = r.Int(row, 16);
  c.revocation_reason = r.IsNull(row, 17) ? -1 : static_cast<int>(r.Int(row, 17));
  c.renewed_by_serial = r.Str(row, 18);
  c.renewal_due_at = r.Int(row, 19);
  return c;
}

std::vector<CertificateRecord> ReadCertificates(const Result& r) {
  std::vector<CertificateRecord> out;
  out.reserve(r.rows());
  for (int i = 0; i < r.rows(); ++i) out.push_back(ReadCertificate(r, i));
  return out;
}

OutboxItem ReadOutbox(const Result& r, int row) {
  OutboxItem o;
  o.id = r.Int(row, 0);
  o.kind = r.Str(row, 1);
  o.dedupe_key = r.Str(row, 2);
  o.payload = r.Str(row, 3);
  o.next_attempt_at = absl::FromUnixMicros(r.Int(row, 4));
  o.attempts = static_cast<int>(r.Int(row, 5));
  o.last_error = r.Str(row, 6);
  o.lease_owner = r.Str(row, 7);
  o.lease_until = absl::FromUnixMicros(r.Int(row, 8));
  return o;
}

// LockLog takes the event log's advisory lock for the rest of the open transaction and returns the last id
// used, so the caller's ids start one past it (postgres_store.h: why a lock and not a sequence).
absl::StatusOr<int64_t> LockLog(Connection& c) {
  LINESIGN_RETURN_IF_ERROR(
      c.Exec("lock the event log", "SELECT pg_advisory_xact_lock($1)", Params().Int(PostgresStore::kLogLockKey))
          .status());
  LINESIGN_ASSIGN_OR_RETURN(Result r, c.Exec("allocate event ids",
                                             "SELECT GREATEST((SELECT COALESCE(MAX(id), 0) FROM certificates), "
                                             "(SELECT COALESCE(MAX(id), 0) FROM events))"));
  return r.Int(0, 0);
}

Params EventParams(const Event& e, int64_t id) {
  Params p;
  p.Int(id).Text(e.type).Text(e.issuer_id).Text(e.serial_hex).Text(e.station).Text(e.profile).Int(Micros(e.time)).Text(
      e.data);
  return p;
}

Params OutboxParams(const OutboxItem& o, absl::Time now) {
  Params p;
  p.Text(o.kind).TextOrNull(o.dedupe_key).Bytes(o.payload).Int(Micros(now)).Int(Micros(o.next_attempt_at));
  return p;
}

// OutboxStatement is the statement that writes item `o` (and, for an iot.register item, its pending
// registration): of an entry whose certificate has id `certificate_id`, or of no entry when that is 0. The
// item's payload was checked (CheckOutboxItem).
Connection::Statement OutboxStatement(const OutboxItem& o, absl::Time now, int64_t certificate_id) {
  static const std::string kOutboxSql = kInsertOutbox;
  Params p = OutboxParams(o, now);
  if (o.kind != kIotRegisterOutboxKind) {
    if (certificate_id == 0) return {&kOutboxSql, std::move(p)};
    p.Int(certificate_id);
    return {&kInsertEntryOutbox, std::move(p)};
  }
  IotRegistrationKey key = ParseIotRegisterPayload(o.payload).value_or(IotRegistrationKey{});
  p.Int(certificate_id).Text(key.issuer_id).Text(key.serial_hex).Text(key.target);
  return {certificate_id == 0 ? &kInsertIotOutbox : &kInsertEntryIotOutbox, std::move(p)};
}

Params CertificateParams(const CertificateRecord& r, int64_t id) {
  Params p;
  p.Int(id)
      .Text(r.issuer_id)
      .Text(r.serial_hex)
      .Text(r.subject)
      .Text(EncodeSans(r.sans))
      .Int(r.not_before)
      .Int(r.not_after)
      .Text(r.spki_sha256)
      .Text(r.csr_sha256)
      .Text(r.station)
      .Text(r.profile)
      .Text(r.request_id)
      .Bytes(r.der)
      .Int(r.issued_at)
      .Text(StatusName(r.status))
      .TextOrNull(r.renews_serial);
  if (r.revoked_at != 0) {
    p.Int(r.revoked_at);
  } else {
    p.Null();
  }
  if (r.revocation_reason >= 0) {
    p.Int(r.revocation_reason);
  } else {
    p.Null();
  }
  return p;
}

absl::Status InsertEvent(Connection& c, const Event& e, int64_t id) {
  return c.Exec("insert event", kInsertEvent, EventParams(e, id)).status();
}

// ClassifyConflict tells why certificate `r`, given id `id`, was not inserted: its request id was taken before it
// (by a row with a lower id: an earlier batch or an earlier entry of this one), or else its serial.
absl::StatusOr<RecordOutcome> ClassifyConflict(Connection& c, const CertificateRecord& r, int64_t id) {
  LINESIGN_ASSIGN_OR_RETURN(
      Result dup, c.Exec("duplicate check",
                         "SELECT 1 FROM certificates WHERE station = $1 AND request_id = $2 AND id < $3",
                         Params().Text(r.station).Text(r.request_id).Int(id)));
  return dup.rows() > 0 ? RecordOutcome::kDuplicateRequest : RecordOutcome::kSerialCollision;
}

// InsertOutbox returns the new item's id, or 0 when (kind, dedupe_key) is already there.
absl::StatusOr<int64_t> InsertOutbox(Connection& c, const OutboxItem& o, absl::Time now) {
  Connection::Statement s = OutboxStatement(o, now, 0);
  LINESIGN_ASSIGN_OR_RETURN(Result r, c.Exec("insert outbox item", *s.sql, s.params));
  return r.rows() == 0 ? 0 : r.Int(0, 0);
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostgresStore>> PostgresStore::Open(const v1::PostgresStoreConfig& config,
                                                                   const Clock* clock) {
  LINESIGN_RETURN_IF_ERROR(postgres::CheckConnectionString("store.postgres.connection", config.connection()));
  postgres::ConnectSettings settings{.connection = config.connection()};
  if (!config.password_file().empty()) {
    LINESIGN_ASSIGN_OR_RETURN(settings.password,
                              postgres::ReadPasswordFile("store.postgres.password_file", config.password_file()));
  }
  std::unique_ptr<PostgresStore> store(new PostgresStore(std::move(settings), clock));
  LINESIGN_ASSIGN_OR_RETURN(std::unique_ptr<Connection> conn, Connection::Connect(store->settings_));
  LINESIGN_RETURN_IF_ERROR(postgres::Migrate(*conn, clock->Now()));
  store->Give(std::move(conn));
  return store;
}

PostgresStore::~PostgresStore() = default;

absl::StatusOr<std::unique_ptr<Connection>> PostgresStore::Take() {
  {
    std::lock_guard<std::mutex> lock(pool_mu_);
    while (!idle_.empty()) {
      std::unique_ptr<Connection> c = std::move(idle_.back());
      idle_.pop_back();
      if (c->Alive()) return c;  // else dropped: the server closed it (a restart) while it was idle
    }
  }
  return Connection::Connect(settings_);
}

void PostgresStore::Give(std::unique_ptr<Connection> conn) {
  if (conn == nullptr || !conn->usable()) return;
  std::lock_guard<std::mutex> lock(pool_mu_);
  if (idle_.size() < kMaxIdle) idle_.push_back(std::move(conn));
}

absl::Status PostgresStore::WithConnection(const std::function<absl::Status(Connection&)>& f) {
  LINESIGN_ASSIGN_OR_RETURN(std::unique_ptr<Connection> c, Take());
  absl::Status st = f(*c);
  Give(std::move(c));
  return st;
}

absl::Status PostgresStore::InTransaction(const std::function<absl::Status(Connection&)>& f) {
  return WithConnection([&](Connection& c) {
    LINESIGN_RETURN_IF_ERROR(c.Command("begin", "BEGIN"));
    absl::Status st = f(c);
    if (st.ok()) st = c.Command("commit", "COMMIT");
    if (!st.ok()) c.Command("rollback", "ROLLBACK").IgnoreError();
    return st;
  });
}

namespace {
// Commit ends a batch's transaction. A COMMIT whose answer never came (the connection was lost once it was sent)
// may have been applied: the error says so, and carries OutcomeUnknown for the signer.
absl::Status Commit(Connection& c) {
  absl::Status st = c.Command("commit", "COMMIT");
  if (st.ok() || c.connected()) return st;
  return OutcomeUnknown(absl::UnavailableError(absl::StrCat(
      st.message(), "; the connection was lost while the commit was under way, so the batch may have been recorded")));
}
}  // namespace

absl::StatusOr<std::vector<RecordOutcome>> PostgresStore::RecordBatch(const Batch& batch) {
  LINESIGN_RETURN_IF_ERROR(CheckBatch(batch));
  std::vector<RecordOutcome> outcomes(batch.entries.size(), RecordOutcome::kRecorded);
  if (batch.entries.empty() && batch.events.empty() && batch.outbox.empty()) return outcomes;
  std::lock_guard<std::mutex> lock(writer_mu_);
  if (writer_ != nullptr && !writer_->Alive()) writer_.reset();
  if (writer_ == nullptr) {
    auto c = Connection::Connect(settings_);
    if (!c.ok()) return c.status();
    writer_ = *std::move(c);
  }
  Connection& c = *writer_;
  const absl::Time now = clock_->Now();
  const bool any_successor = std::any_of(batch.entries.begin(), batch.entries.end(),
                                         [](const BatchEntry& e) { return !e.cert.renews_serial.empty(); });
  // First issues (the line rate) in a pipeline: every certificate, event and outbox item of the batch in a few
  // round trips. Each certificate reserves ids for itself and its events; one that does not go in leaves their
  // ids unused (the log's ids stay increasing, with a gap). Successors need a savepoint each (their predecessor
  // is superseded only if they go in), so a batch holding one is written statement by statement.
  auto pipelined = [&]() -> absl::Status {
    LINESIGN_RETURN_IF_ERROR(c.Command("begin", "BEGIN"));
    LINESIGN_ASSIGN_OR_RETURN(int64_t last_id, LockLog(c));
    static const std::string kCertificateSql = kInsertCertificate;
    static const std::string kEventSql = kInsertEvent;
    std::vector<Connection::Statement> statements;
    std::vector<size_t> certificate_statement(batch.entries.size());
    std::vector<int64_t> certificate_id(batch.entries.size());
    for (size_t i = 0; i < batch.entries.size(); ++i) {
      const BatchEntry& entry = batch.entries[i];
      const int64_t id = ++last_id;
      certificate_id[i] = id;
      certificate_statement[i] = statements.size();
      statements.push_back({&kCertificateSql, CertificateParams(entry.cert, id)});
      for (const Event& e : entry.events) {
        Params p = EventParams(e, ++last_id);
        p.Int(id);
        statements.push_back({&kInsertEntryEvent, std::move(p)});
      }
      for (const OutboxItem& o : entry.outbox) statements.push_back(OutboxStatement(o, now, id));
    }
    for (const Event& e : batch.events) statements.push_back({&kEventSql, EventParams(e, ++last_id)});
    for (const OutboxItem& o : batch.outbox) statements.push_back(OutboxStatement(o, now, 0));
    LINESIGN_ASSIGN_OR_RETURN(std::vector<Result> results, c.ExecPipeline("record the batch", statements));
    for (size_t i = 0; i < batch.entries.size(); ++i) {
      if (results[certificate_statement[i]].rows() == 0) {
        LINESIGN_ASSIGN_OR_RETURN(outcomes[i], ClassifyConflict(c, batch.entries[i].cert, certificate_id[i]));
      }
    }
    return Commit(c);
  };
  auto body = [&]() -> absl::Status {
    if (!any_successor) return pipelined();
    LINESIGN_RETURN_IF_ERROR(c.Command("begin", "BEGIN"));
    LINESIGN_ASSIGN_OR_RETURN(int64_t last_id, LockLog(c));
    for (size_t i = 0; i < batch.entries.size(); ++i) {
      const CertificateRecord& r = batch.entries[i].cert;
      const bool successor = !r.renews_serial.empty();
      if (successor) LINESIGN_RETURN_IF_ERROR(c.Command("savepoint", "SAVEPOINT successor"));
      LINESIGN_ASSIGN_OR_RETURN(Result ins,
                                c.Exec("insert certificate", kInsertCertificate, CertificateParams(r, last_id + 1)));
      if (ins.rows() == 0) {
        // Nothing went in: the request id or the serial is taken (by an earlier batch or this one).
        LINESIGN_ASSIGN_OR_RETURN(outcomes[i], ClassifyConflict(c, r, last_id + 1));
        if (successor) LINESIGN_RETURN_IF_ERROR(c.Command("savepoint", "RELEASE successor"));
        continue;
      }
      if (successor) {
        // Only a valid predecessor without a successor is superseded; else this entry is undone.
        LINESIGN_ASSIGN_OR_RETURN(Result up, c.Exec("supersede", kSupersede,
                                                    Params().Text(r.issuer_id).Text(r.renews_serial).Text(r.serial_hex)));
        if (up.affected() != 1) {
          LINESIGN_RETURN_IF_ERROR(c.Command("savepoint", "ROLLBACK TO SAVEPOINT successor; RELEASE successor"));
          outcomes[i] = RecordOutcome::kPredecessorNotValid;
          continue;
        }
        LINESIGN_RETURN_IF_ERROR(c.Command("savepoint", "RELEASE successor"));
      }
      ++last_id;
      for (const Event& e : batch.entries[i].events) LINESIGN_RETURN_IF_ERROR(InsertEvent(c, e, ++last_id));
      for (const OutboxItem& o : batch.entries[i].outbox) LINESIGN_RETURN_IF_ERROR(InsertOutbox(c, o, now).status());
    }
    for (const Event& e : batch.events) LINESIGN_RETURN_IF_ERROR(InsertEvent(c, e, ++last_id));
    for (const OutboxItem& o : batch.outbox) LINESIGN_RETURN_IF_ERROR(InsertOutbox(c, o, now).status());
    return Commit(c);
  };
  absl::Status st = body();
  if (!st.ok()) {
    if (!c.usable()) c.Command("rollback", "ROLLBACK").IgnoreError();
    if (!c.usable()) writer_.reset();  // lost: the next batch connects again
    return st;
  }
  return outcomes;
}

absl::StatusOr<std::optional<CertificateRecord>> PostgresStore::FindByRequest(const std::string& station,
                                                                              const std::string& request_id) {
  std::optional<CertificateRecord> out;
  LINESIGN_RETURN_IF_ERROR(WithConnection([&](Connection& c) -> absl::Status {
    LINESIGN_ASSIGN_OR_RETURN(
        Result r, c.Exec("find by request",
                         absl::StrCat("SELECT ", kColumns, " FROM certificates WHERE station = $1 AND request_id = $2"),
                         Params().Text(station).Text(request_id)));
    if (r.rows() > 0) out = ReadCertificate(r, 0);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::optional<CertificateRecord>> PostgresStore::FindBySerial(const std::string& issuer_id,
                                                                             const std::string& serial_hex) {
  std::optional<CertificateRecord> out;
  LINESIGN_RETURN_IF_ERROR(WithConnection([&](Connection& c) -> absl::Status {
    LINESIGN_ASSIGN_OR_RETURN(
        Result r, c.Exec("find by serial",
                         absl::StrCat("SELECT ", kColumns, " FROM certificates WHERE issuer_id = $1 AND serial = $2"),
                         Params().Text(issuer_id).Text(serial_hex)));
    if (r.rows() > 0) out = ReadCertificate(r, 0);
    return absl::OkStatus();
  }));
  return out;
}

namespace {

// Binder numbers parameters while the SQL is written.
struct Binder {
  Params params;
  int n = 0;
  std::string Int(int64_t v) {
    params.Int(v);
    return absl::StrCat("$", ++n);
  }
  std::string Text(const std::string& v) {
    params.Text(v);
    return absl::StrCat("$", ++n);
  }
};

std::string RenewBeforeSql(const CertificateQuery& q, Binder& b) {
  std::string sql = "(CASE profile";
  for (const auto& [profile, seconds] : q.renew_before_seconds) {
    absl::StrAppend(&sql, " WHEN ", b.Text(profile), " THEN ", b.Int(seconds), "::bigint");
  }
  absl::StrAppend(&sql, " ELSE ", b.Int(kDefaultRenewBeforeSeconds), "::bigint END)");
  return sql;
}

// Profiles returns, in order, the distinct profiles of the certificates in certificates_renewal_marked
// (`marked`) or certificates_renewal_pending: one index seek per profile (a loose index scan), whatever the number
// of certificates.
absl::StatusOr<std::vector<std::string>> Profiles(Connection& c, bool marked) {
  const std::string in_index =
      absl::StrCat("status = 'valid' AND renewal_due_at ", marked ? "IS NOT NULL" : "IS NULL");
  LINESIGN_ASSIGN_OR_RETURN(
      Result r, c.Exec("list profiles",
                       absl::StrCat("WITH RECURSIVE p(name) AS (SELECT (SELECT min(profile) FROM certificates WHERE ",
                                    in_index, ") UNION ALL SELECT (SELECT min(profile) FROM certificates WHERE ",
                                    in_index, " AND profile > p.name) FROM p WHERE p.name IS NOT NULL) ",
                                    "SELECT name FROM p WHERE name IS NOT NULL")));
  std::vector<std::string> out;
  out.reserve(r.rows());
  for (int i = 0; i < r.rows(); ++i) out.push_back(r.Str(i, 0));
  return out;
}

}  // namespace

absl::StatusOr<CertificatePage> PostgresStore::List(const CertificateQuery& q) {
  enum class Order { kId, kExpiry, kIssued };
  const int page_size = q.page_size == 0 ? 100 : q.page_size;
  if (page_size < 1 || page_size > kMaxPageSize) {
    return absl::InvalidArgumentError(absl::StrCat("store: page size ", q.page_size, " is outside 1..", kMaxPageSize));
  }
  // The same orders and page tokens as SqliteStore: expiry for the status and expiry filters, issue time for an
  // issued range, else recording order.
  const bool by_expiry = q.expiring_before.has_value() ||
                         (q.status.has_value() && (*q.status == ListStatus::kValid ||
                                                   *q.status == ListStatus::kRenewalDue ||
                                                   *q.status == ListStatus::kExpired));
  const bool by_issue = !by_expiry && (q.issued_from.has_value() || q.issued_before.has_value());
  const Order order = by_expiry ? Order::kExpiry : by_issue ? Order::kIssued : Order::kId;
  const char* key_column = by_expiry ? "not_after" : "issued_at";
  const char order_letter = by_expiry ? 'e' : 'i';

  int64_t after = 0;
  std::optional<int64_t> key;
  auto bad_token = [&] {
    return absl::InvalidArgumentError(absl::StrCat("store: page token '", q.page_token,
                                                   "' is not one this store returned for these filters"));
  };
  if (!q.page_token.empty()) {
    absl::string_view t = q.page_token;
    if (order == Order::kId) {
      if (!absl::ConsumePrefix(&t, kPageTokenPrefix) || !absl::SimpleAtoi(t, &after) || after < 0) return bad_token();
    } else {
      std::vector<absl::string_view> parts = absl::StrSplit(t, '.');
      int64_t k = 0;
      if (parts.size() != 4 || absl::StrCat(parts[0], ".") != kOrderedTokenPrefix ||
          parts[1] != absl::string_view(&order_letter, 1) || !absl::SimpleAtoi(parts[2], &k) ||
          !absl::SimpleAtoi(parts[3], &after) || after < 0) {
        return bad_token();
      }
      key = k;
    }
  }

  CertificatePage page;
  std::optional<int64_t> scan_upto;
  LINESIGN_RETURN_IF_ERROR(WithConnection([&](Connection& c) -> absl::Status {
    // valid and renewal_due are ranges per profile (below) in certificates_renewal_pending (unmarked) and
    // certificates_renewal_marked (marked), as in SqliteStore: the query's profile in both, or each profile each
    // index holds.
    std::optional<std::vector<std::pair<std::string, bool>>> range_profiles;
    if (q.status == ListStatus::kRenewalDue || q.status == ListStatus::kValid) {
      std::vector<std::pair<std::string, bool>> ranges;
      for (bool marked : {false, true}) {
        if (!q.profile.empty()) {
          ranges.emplace_back(q.profile, marked);
          continue;
        }
        LINESIGN_ASSIGN_OR_RETURN(std::vector<std::string> profiles, Profiles(c, marked));
        for (std::string& p : profiles) ranges.emplace_back(std::move(p), marked);
      }
      if (ranges.empty()) ranges.emplace_back("", false);  // no valid certificate at all: one empty range
      if (ranges.size() <= kMaxMergedRanges) range_profiles = std::move(ranges);
    }

    Binder b;
    std::vector<std::string> where;
    // The ordered key's lower bound for the merged ranges and their fallback: the token's key, raised by a
    // status's own bound, is one term PostgreSQL seeks with.
    std::optional<int64_t> from;
    auto raise = [](std::optional<int64_t>& bound, int64_t v) {
      if (!bound.has_value() || v > *bound) bound = v;
    };
    if (order == Order::kId) {
      where.push_back(absl::StrCat("id > ", b.Int(after)));
    } else if (key.has_value()) {
      where.push_back(
          absl::StrCat("(", key_column, ", id) > (", b.Int(*key), "::bigint, ", b.Int(after), "::bigint)"));
      raise(from, *key);
    }
    if (!q.profile.empty() && !range_profiles.has_value()) {
      where.push_back(absl::StrCat("profile = ", b.Text(q.profile)));  // else each range names its profile
    }
    if (!q.station.empty()) where.push_back(absl::StrCat("station = ", b.Text(q.station)));
    if (q.issued_from) where.push_back(absl::StrCat("issued_at >= ", b.Int(*q.issued_from)));
    if (q.issued_before) where.push_back(absl::StrCat("issued_at < ", b.Int(*q.issued_before)));
    if (q.expiring_before) where.push_back(absl::StrCat("not_after < ", b.Int(*q.expiring_before)));
    if (q.status.has_value()) {
      int64_t min_rb = kDefaultRenewBeforeSeconds, max_rb = kDefaultRenewBeforeSeconds;
      for (const auto& [profile, seconds] : q.renew_before_seconds) {
        min_rb = std::min(min_rb, seconds);
        max_rb = std::max(max_rb, seconds);
      }
      switch (*q.status) {
        case ListStatus::kSuperseded:
        case ListStatus::kRevoked:
          where.push_back(absl::StrCat("status = ", b.Text(ListStatusName(*q.status)), " AND status <> 'valid'"));
          break;
        case ListStatus::kExpired:
          where.push_back(absl::StrCat("status = 'valid' AND not_after <= ", b.Int(q.now)));
          break;
        case ListStatus::kRenewalDue:
          if (!range_profiles.has_value()) {
            // Too many profiles for one statement: one range up to the longest renew_before, each row checked
            // against its own profile's (correct, but it walks the shorter-window profiles' not-due rows).
            raise(from, q.now + 1);
            where.push_back(absl::StrCat("status = 'valid' AND not_after >= ", b.Int(*from), " AND not_after <= ",
                                         b.Int(q.now + max_rb), " AND not_after - ", RenewBeforeSql(q, b),
                                         " <= ", b.Int(q.now)));
          }
          break;
        case ListStatus::kValid:
          if (range_profiles.has_value()) break;
          // Too many profiles for one statement: one range from the shortest renew_before, each row checked
          // against its own profile's (correct, but it walks the longer-window profiles' due rows).
          raise(from, q.now + min_rb + 1);
          where.push_back(absl::StrCat("status = 'valid' AND not_after >= ", b.Int(*from), " AND not_after - ",
                                       RenewBeforeSql(q, b), " > ", b.Int(q.now)));
          break;
      }
    }
    if (!q.subject_contains.empty()) {
      where.push_back(absl::StrCat("strpos(subject, ", b.Text(q.subject_contains), ") > 0"));
      const bool alone = order == Order::kId && q.profile.empty() && q.station.empty() && !q.status.has_value();
      if (alone) {
        scan_upto = after + kSubjectScanIds;
        where.push_back(absl::StrCat("id <= ", b.Int(*scan_upto)));
      }
    }
    const std::string order_by =
        order == Order::kId ? " ORDER BY id" : absl::StrCat(" ORDER BY ", key_column, ", id");
    const std::string limit = b.Int(page_size + 1);  // one more tells whether there is a next page
    std::string sql;
    if (range_profiles.has_value()) {
      // For each range (a profile, marked or not), its certificates recorded valid with
      // now < not_after <= now + its renew_before (renewal_due) or not_after > now + its renew_before (valid): the
      // unmarked ones from certificates_renewal_pending, the marked ones from certificates_renewal_marked (a
      // marked certificate is valid again only if its profile's renew_before was shortened since). Each range is
      // its own SELECT ... ORDER BY profile, not_after, id LIMIT page_size + 1, an Index Scan of its partial index
      // with Index Cond on (profile, not_after) (an Incremental Sort orders equal not_after by id), and the outer
      // ORDER BY sorts at most page_size + 1 rows a range: a page reads about that many rows per range, never one
      // of another profile or status. The profile is `profile = ANY(ARRAY[$n])`, not `profile = $n`: with an
      // equality PostgreSQL takes the profile for a constant, reads the range's order from any not_after index
      // and, estimating the profile's rows spread evenly over not_after, walks certificates_valid_not_after or
      // certificates_not_after filtering by profile (all of the other profiles' rows when this one's range is
      // empty: 0.4-1.5 s a page at a million). No other index gives the (profile, not_after) order, and the btree
      // still seeks the one profile and ends at the range's bound. The keyset terms in `where` apply to every
      // range alike: the token is a position in the merged order.
      std::vector<std::string> arms;
      for (const auto& [profile, marked] : *range_profiles) {
        auto it = q.renew_before_seconds.find(profile);
        const int64_t rb = it == q.renew_before_seconds.end() ? kDefaultRenewBeforeSeconds : it->second;
        std::vector<std::string> arm = {absl::StrCat("profile = ANY(ARRAY[", b.Text(profile), "])"),
                                        "status = 'valid'",
                                        absl::StrCat("renewal_due_at ", marked ? "IS NOT NULL" : "IS NULL")};
        std::optional<int64_t> arm_from = from;
        if (*q.status == ListStatus::kRenewalDue) {
          raise(arm_from, q.now + 1);
          arm.push_back(absl::StrCat("not_after <= ", b.Int(q.now + rb)));
        } else {
          raise(arm_from, q.now + rb + 1);
        }
        arm.push_back(absl::StrCat("not_after >= ", b.Int(*arm_from)));
        arm.insert(arm.end(), where.begin(), where.end());
        arms.push_back(absl::StrCat("(SELECT ", kColumns, " FROM certificates WHERE ", absl::StrJoin(arm, " AND "),
                                    " ORDER BY profile, not_after, id LIMIT ", limit, ")"));
      }
      sql = absl::StrJoin(arms, " UNION ALL ");
    } else {
      sql = absl::StrCat("SELECT ", kColumns, " FROM certificates");
      if (!where.empty()) absl::StrAppend(&sql, " WHERE ", absl::StrJoin(where, " AND "));
    }
    absl::StrAppend(&sql, order_by, " LIMIT ", limit);

    LINESIGN_ASSIGN_OR_RETURN(Result r, c.Exec("list", sql, b.params, /*prepare=*/false));
    page.records = ReadCertificates(r);
    if (page.records.size() > static_cast<size_t>(page_size)) {
      page.records.pop_back();
      const CertificateRecord& last = page.records.back();
      switch (order) {
        case Order::kId:
          page.next_page_token = absl::StrCat(kPageTokenPrefix, last.id);
          break;
        case Order::kExpiry:
          page.next_page_token = absl::StrCat(kOrderedTokenPrefix, "e.", last.not_after, ".", last.id);
          break;
        case Order::kIssued:
          page.next_page_token = absl::StrCat(kOrderedTokenPrefix, "i.", last.issued_at, ".", last.id);
          break;
      }
    } else if (scan_upto.has_value()) {
      // The subject scan stopped at its bound: more certificates beyond it are still to be looked at.
      LINESIGN_ASSIGN_OR_RETURN(Result m, c.Exec("list", "SELECT COALESCE(MAX(id), 0) FROM certificates"));
      if (m.Int(0, 0) > *scan_upto) page.next_page_token = absl::StrCat(kPageTokenPrefix, *scan_upto);
    }
    return absl::OkStatus();
  }));
  return page;
}

absl::StatusOr<int64_t> PostgresStore::Count() {
  int64_t n = 0;
  LINESIGN_RETURN_IF_ERROR(WithConnection([&](Connection& c) -> absl::Status {
    LINESIGN_ASSIGN_OR_RETURN(Result r, c.Exec("count", "SELECT COUNT(*) FROM certificates"));
    n = r.Int(0, 0);
    return absl::OkStatus();
  }));
  return n;
}

absl::StatusOr<std::vector<Event>> PostgresStore::ReadAfter(int64_t cursor, int limit) {
  if (limit < 1 || limit > kMaxReadLimit) {
    return absl::InvalidArgumentError(absl::StrCat("store: event read limit ", limit, " is outside 1..",
                                                   kMaxReadLimit));
  }
  std::vector<Event> events;
  LINESIGN_RETURN_IF_ERROR(WithConnection([&](Connection& c) -> absl::Status {
    LINESIGN_ASSIGN_OR_RETURN(Result r, c.Exec("read events", kReadAfter, Params().Int(cursor).Int(limit)));
    events.reserve(r.rows());
    for (int i = 0; i < r.rows(); ++i) {
      events.push_back(Event{.id = r.Int(i, 0),
                             .type = r.Str(i, 1),
                             .issuer_id = r.Str(i, 2),
                             .serial_hex = r.Str(i, 3),
                             .station = r.Str(i, 4),
                             .profile = r.Str(i, 5),
                             .time = absl::FromUnixMicros(r.Int(i, 6)),
                             .data = r.Str(i, 7)});
    }
    return absl::OkStatus();
  }));
  return events;
}

absl::StatusOr<std::vector<int64_t>> PostgresStore::Enqueue(absl::Span<const OutboxItem> items) {
  for (const auto& o : items) LINESIGN_RETURN_IF_ERROR(CheckOutboxItem(o));
  std::vector<int64_t> ids;
  if (items.empty()) return ids;
  const absl::Time now = clock_->Now();
  LINESIGN_RETURN_IF_ERROR(InTransaction([&](Connection& c) -> absl::Status {
    ids.clear();
    for (const auto& o : items) {
      LINESIGN_ASSIGN_OR_RETURN(int64_t id, InsertOutbox(c, o, now));
      ids.push_back(id);
    }
    return absl::OkStatus();
  }));
  return ids;
}

absl::StatusOr<std::vector<OutboxItem>> PostgresStore::Claim(const ClaimRequest& r) {
  if (r.owner.empty()) return absl::InvalidArgumentError("store: an outbox claim needs an owner");
  if (r.limit < 1 || r.limit > kMaxReadLimit) {
    return absl::InvalidArgumentError(absl::StrCat("store: claim limit ", r.limit, " is outside 1..", kMaxReadLimit));
  }
  if (r.lease <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("store: claim lease ", absl::FormatDuration(r.lease), " is not positive"));
  }
  std::vector<OutboxItem> items;
  LINESIGN_RETURN_IF_ERROR(WithConnection([&](Connection& c) -> absl::Status {
    LINESIGN_ASSIGN_OR_RETURN(Result res, c.Exec("claim outbox items", kClaim,
                                                 Params()
                                                     .Text(r.owner)
                                                     .Int(Micros(r.now + r.lease))
                                                     .Int(Micros(r.now))
                                                     .Text(r.kind)
                                                     .Int(r.limit)));
    for (int i = 0; i < res.rows(); ++i) items.push_back(ReadOutbox(res, i));
    return absl::OkStatus();
  }));
  // RETURNING gives no order.
  std::sort(items.begin(), items.end(), [](const OutboxItem& a, const OutboxItem& b) {
    return std::tie(a.next_attempt_at, a.id) < std::tie(b.next_attempt_at, b.id);
  });
  return items;
}

namespace {

// ExplainLeaseMiss explains why an update of item `id` by `owner` under its lease (Complete, Reschedule, an AWS
// IoT registration's writes) changed nothing.
absl::Status ExplainLeaseMiss(Connection& c, int64_t id, const std::string& owner, absl::string_view what) {
  LINESIGN_ASSIGN_OR_RETURN(Result r, c.Exec(what, "SELECT lease_owner, completed_us IS NOT NULL FROM outbox WHERE id = $1",
                                             Params().Int(id)));
  if (r.rows() == 0) return absl::NotFoundError(absl::StrCat("store: no outbox item ", id));
  std::string holder = r.Str(0, 0);
  std::string state = r.Int(0, 1) != 0 ? "it is already complete"
                      : holder.empty() ? "nobody holds it"
                                       : absl::StrCat("'", holder, "' holds it");
  return absl::FailedPreconditionError(absl::StrCat("store: cannot ", what, " outbox item ", id, ": '", owner,
                                                    "' does not hold its lease (", state, ")"));
}

}  // namespace

absl::Status PostgresStore::Complete(int64_t id, const std::string& owner, absl::Time now) {
  return WithConnection([&](Connection& c) -> absl::Status {
    LINESIGN_ASSIGN_OR_RETURN(Result r, c.Exec("complete", kComplete, Params().Int(id).Text(owner).Int(Micros(now))));
    if (r.affected() == 1) return absl::OkStatus();
    return ExplainLeaseMiss(c, id, owner, "complete");
  });
}

absl::Status PostgresStore::Reschedule(int64_t id, const std::string& owner, absl::Time next_attempt_at,
                                       const std::string& last_error) {
  return WithConnection([&](Connection& c) -> absl::Status {
    LINESIGN_ASSIGN_OR_RETURN(
        Result r, c.Exec("reschedule", kReschedule,
                         Params().Int(id).Text(owner).Int(Micros(next_attempt_at)).Text(last_error)));
    if (r.affected() == 1) return absl::OkStatus();
    return ExplainLeaseMiss(c, id, owner, "reschedule");
  });
}

absl::StatusOr<std::vector<CertificateRecord>> PostgresStore::FindRenewalPending(const DueQuery& q) {
  if (q.limit < 1 || q.limit > kMaxReadLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("store: renewal scan limit ", q.limit, " is outside 1..", kMaxReadLimit));
  }
  std::vector<CertificateRecord> out;
  LINESIGN_RETURN_IF_ERROR(WithConnection([&](Connection& c) -> absl::Status {
    LINESIGN_ASSIGN_OR_RETURN(Result r, c.Exec("renewal scan", kRenewalPending,
                                               Params().Text(q.profile).Int(q.live_after).Int(q.due_before).Int(q.limit)));
    out = ReadCertificates(r);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<int> PostgresStore::MarkRenewalDue(absl::Span<const DueMark> marks, absl::Time now) {
  for (const DueMark& m : marks) {
    if (m.event.type.empty()) return absl::InvalidArgumentError("store: an event needs a type");
    if (m.outbox.has_value()) LINESIGN_RETURN_IF_ERROR(CheckOutboxItem(*m.outbox));
  }
  if (marks.empty()) return 0;
  const absl::Time created = clock_->Now();
  int marked = 0;
  LINESIGN_RETURN_IF_ERROR(InTransaction([&](Connection& c) -> absl::Status {
    marked = 0;
    LINESIGN_ASSIGN_OR_RETURN(int64_t last_id, LockLog(c));
    for (const DueMark& m : marks) {
      LINESIGN_ASSIGN_OR_RETURN(
          Result r, c.Exec("mark renewal due", kMarkDue,
                           Params().Text(m.issuer_id).Text(m.serial_hex).Int(absl::ToUnixSeconds(now))));
      if (r.affected() != 1) continue;  // marked by another process, renewed or revoked meanwhile
      ++marked;
      LINESIGN_RETURN_IF_ERROR(InsertEvent(c, m.event, ++last_id));
      if (m.outbox.has_value()) LINESIGN_RETURN_IF_ERROR(InsertOutbox(c, *m.outbox, created).status());
    }
    return absl::OkStatus();
  }));
  return marked;
}

absl::StatusOr<StoreStats> PostgresStore::Stats(absl::Time now, const std::vector<absl::Duration>& expiry_bounds) {
  StoreStats stats;
  const int64_t now_s = absl::ToUnixSeconds(now);
  LINESIGN_RETURN_IF_ERROR(WithConnection([&](Connection& c) -> absl::Status {
    stats = StoreStats();  // a retry on a new connection starts over
    if (!expiry_bounds.empty()) {
      // One pass over the unexpired range of certificates_not_after, a filtered count per bound.
      std::string sql = "SELECT COUNT(*)";
      Params params;
      params.Int(now_s);
      for (size_t i = 0; i < expiry_bounds.size(); ++i) {
        absl::StrAppend(&sql, ", COUNT(*) FILTER (WHERE not_after <= $", i + 2, ")");
        const absl::Duration bound = expiry_bounds[i];
        params.Int(bound == absl::InfiniteDuration() ? INT64_MAX : absl::ToUnixSeconds(now + bound));
      }
      absl::StrAppend(&sql, " FROM certificates WHERE not_after > $1");
      LINESIGN_ASSIGN_OR_RETURN(Result r, c.Exec("count expiring", sql, std::move(params)));
      stats.unexpired = r.Int(0, 0);
      for (size_t i = 0; i < expiry_bounds.size(); ++i) stats.expiring.push_back(r.Int(0, static_cast<int>(i) + 1));
    }
    LINESIGN_ASSIGN_OR_RETURN(Result o, c.Exec("outbox backlog",
                                               "SELECT kind, COUNT(*), MIN(created_us) FROM outbox "
                                               "WHERE completed_us IS NULL GROUP BY kind ORDER BY kind"));
    for (int i = 0; i < o.rows(); ++i) {
      stats.outbox.push_back(OutboxBacklog{
          .kind = o.Str(i, 0), .pending = o.Int(i, 1), .oldest_created = absl::FromUnixMicros(o.Int(i, 2))});
    }
    return absl::OkStatus();
  }));
  return stats;
}

absl::Status PostgresStore::Ping() {
  return WithConnection([&](Connection& c) -> absl::Status {
    LINESIGN_ASSIGN_OR_RETURN(Result r, c.Exec("ping", "SELECT pg_is_in_recovery()"));
    if (r.Int(0, 0) != 0) {
      return absl::UnavailableError(
          absl::StrCat("store: ping: PostgreSQL ", c.Describe(), " is in recovery (a read-only standby)"));
    }
    return absl::OkStatus();
  });
}

// ---- Revocation and CRLs (revocation_store.h) ----

absl::StatusOr<RevokeResult> PostgresStore::Revoke(const RevokeRequest& request) {
  RevokeResult result;
  const int64_t at = absl::ToUnixSeconds(request.at);
  LINESIGN_RETURN_IF_ERROR(InTransaction([&](Connection& c) -> absl::Status {
    // The log lock first (this appends an event), then the row: every writer takes them in this order.
    LINESIGN_ASSIGN_OR_RETURN(int64_t last_id, LockLog(c));
    LINESIGN_ASSIGN_OR_RETURN(
        Result r, c.Exec("revoke: look-up",
                         absl::StrCat("SELECT ", kColumns,
                                      " FROM certificates WHERE issuer_id = $1 AND serial = $2 FOR UPDATE"),
                         Params().Text(request.issuer_id).Text(request.serial_hex)));
    if (r.rows() == 0) {
      return absl::NotFoundError(
          absl::StrCat("store: no certificate with serial ", request.serial_hex, " from this issuer"));
    }
    result.record = ReadCertificate(r, 0);
    if (result.record.status == CertificateStatus::kRevoked) {
      result.already_revoked = true;
      return absl::OkStatus();
    }
    LINESIGN_RETURN_IF_ERROR(
        c.Exec("revoke",
               "UPDATE certificates SET status = 'revoked', revoked_at = $2, revocation_reason = $3 WHERE id = $1",
               Params().Int(result.record.id).Int(at).Int(request.reason))
            .status());
    Event event{.type = kEventRevoked,
                .issuer_id = request.issuer_id,
                .serial_hex = result.record.serial_hex,
                .station = result.record.station,
                .profile = result.record.profile,
                .time = request.at,
                .data = request.data};
    LINESIGN_RETURN_IF_ERROR(InsertEvent(c, event, last_id + 1));
    return c.Exec("count the revocation",
                  "INSERT INTO crl_state (issuer_id, revocations) VALUES ($1, 1) "
                  "ON CONFLICT (issuer_id) DO UPDATE SET revocations = crl_state.revocations + 1",
                  Params().Text(request.issuer_id))
        .status();
  }));
  if (!result.already_revoked) {
    result.record.status = CertificateStatus::kRevoked;
    result.record.revoked_at = at;
    result.record.revocation_reason = request.reason;
  }
  return result;
}

absl::StatusOr<CrlSnapshot> PostgresStore::BeginCrl(const std::string& issuer_id) {
  CrlSnapshot snap;
  LINESIGN_RETURN_IF_ERROR(InTransaction([&](Connection& c) -> absl::Status {
    // The upsert locks the issuer's crl_state row until the commit; a revocation counts itself on that row, so
    // none commits between the number and the read below (which, in READ COMMITTED, sees every one before).
    LINESIGN_ASSIGN_OR_RETURN(Result n, c.Exec("allocate a CRL number",
                                               "INSERT INTO crl_state (issuer_id, last_number) VALUES ($1, 1) "
                                               "ON CONFLICT (issuer_id) DO UPDATE SET last_number = "
                                               "crl_state.last_number + 1 RETURNING last_number, revocations",
                                               Params().Text(issuer_id)));
    snap.number = n.Int(0, 0);
    snap.revocations = n.Int(0, 1);
    LINESIGN_ASSIGN_OR_RETURN(Result r, c.Exec("read the revoked certificates",
                                               "SELECT serial, revoked_at, revocation_reason FROM certificates "
                                               "WHERE issuer_id = $1 AND status = 'revoked'",
                                               Params().Text(issuer_id)));
    snap.entries.clear();
    for (int i = 0; i < r.rows(); ++i) {
      snap.entries.push_back(RevokedEntry{
          .serial_hex = r.Str(i, 0), .revoked_at = r.Int(i, 1), .reason = static_cast<int>(r.Int(i, 2))});
    }
    return absl::OkStatus();
  }));
  return snap;
}

absl::StatusOr<bool> PostgresStore::SaveCrl(const std::string& issuer_id, const StoredCrl& crl) {
  bool saved = false;
  LINESIGN_RETURN_IF_ERROR(InTransaction([&](Connection& c) -> absl::Status {
    saved = false;
    // One saver per issuer at a time, so "is a newer one saved?" and the insert are one step.
    LINESIGN_RETURN_IF_ERROR(c.Exec("lock the issuer's CRLs", "SELECT pg_advisory_xact_lock(hashtextextended($1, $2))",
                                    Params().Text(issuer_id).Int(kCrlLockKey))
                                 .status());
    LINESIGN_ASSIGN_OR_RETURN(Result newer, c.Exec("save the CRL",
                                                   "SELECT 1 FROM crls WHERE issuer_id = $1 AND number >= $2",
                                                   Params().Text(issuer_id).Int(crl.number)));
    if (newer.rows() > 0) return absl::OkStatus();
    LINESIGN_RETURN_IF_ERROR(
        c.Exec("save the CRL",
               "INSERT INTO crls (issuer_id, number, revocations, this_update_us, next_update_us, der) "
               "VALUES ($1, $2, $3, $4, $5, $6)",
               Params()
                   .Text(issuer_id)
                   .Int(crl.number)
                   .Int(crl.revocations)
                   .Int(Micros(crl.this_update))
                   .Int(Micros(crl.next_update))
                   .Bytes(crl.der))
            .status());
    LINESIGN_RETURN_IF_ERROR(c.Exec("drop older CRLs", "DELETE FROM crls WHERE issuer_id = $1 AND number < $2",
                                    Params().Text(issuer_id).Int(crl.number))
                                 .status());
    saved = true;
    return absl::OkStatus();
  }));
  return saved;
}

absl::StatusOr<CrlState> PostgresStore::GetCrlState(const std::string& issuer_id) {
  CrlState state;
  LINESIGN_RETURN_IF_ERROR(WithConnection([&](Connection& c) -> absl::Status {
    LINESIGN_ASSIGN_OR_RETURN(Result r, c.Exec("read the CRL state",
                                               "SELECT (SELECT revocations FROM crl_state WHERE issuer_id = $1), "
                                               "(SELECT MAX(number) FROM crls WHERE issuer_id = $1)",
                                               Params().Text(issuer_id)));
    state.revocations = r.Int(0, 0);
    state.latest_number = r.Int(0, 1);
    return absl::OkStatus();
  }));
  return state;
}

absl::StatusOr<std::optional<StoredCrl>> PostgresStore::LatestCrl(const std::string& issuer_id) {
  std::optional<StoredCrl> out;
  LINESIGN_RETURN_IF_ERROR(WithConnection([&](Connection& c) -> absl::Status {
    LINESIGN_ASSIGN_OR_RETURN(Result r, c.Exec("read the latest CRL",
                                               "SELECT number, revocations, this_update_us, next_update_us, der "
                                               "FROM crls WHERE issuer_id = $1 ORDER BY number DESC LIMIT 1",
                                               Params().Text(issuer_id)));
    if (r.rows() > 0) {
      out = StoredCrl{.number = r.Int(0, 0),
                      .revocations = r.Int(0, 1),
                      .this_update = absl::FromUnixMicros(r.Int(0, 2)),
                      .next_update = absl::FromUnixMicros(r.Int(0, 3)),
                      .der = r.Str(0, 4)};
    }
    return absl::OkStatus();
  }));
  return out;
}

// ---- The webhook's delivery cursor (cursor_store.h) ----

namespace {

}  // namespace

absl::StatusOr<std::optional<int64_t>> PostgresStore::TakeCursor(const std::string& name, const std::string& owner,
                                                                 absl::Time now, absl::Duration lease) {
  LINESIGN_RETURN_IF_ERROR(CheckCursorLease(name, owner, lease));
  std::optional<int64_t> out;
  LINESIGN_RETURN_IF_ERROR(WithConnection([&](Connection& c) -> absl::Status {
    LINESIGN_ASSIGN_OR_RETURN(
        Result r, c.Exec("take the delivery cursor",
                         "INSERT INTO webhook_cursor AS w (name, cursor, lease_owner, lease_until_us) "
                         "VALUES ($1, 0, $2, $3) ON CONFLICT (name) DO UPDATE SET lease_owner = excluded.lease_owner, "
                         "lease_until_us = excluded.lease_until_us WHERE w.lease_owner IS NULL OR "
                         "w.lease_owner = excluded.lease_owner OR w.lease_until_us <= $4 RETURNING cursor",
                         Params().Text(name).Text(owner).Int(Micros(now + lease)).Int(Micros(now))));
    if (r.rows() > 0) out = r.Int(0, 0);
    return absl::OkStatus();
  }));
  return out;
}

absl::Status PostgresStore::AdvanceCursor(const std::string& name, const std::string& owner, int64_t cursor,
                                          absl::Time now, absl::Duration lease) {
  LINESIGN_RETURN_IF_ERROR(CheckCursorLease(name, owner, lease));
  return WithConnection([&](Connection& c) -> absl::Status {
    LINESIGN_ASSIGN_OR_RETURN(
        Result r, c.Exec("advance the delivery cursor",
                         "UPDATE webhook_cursor SET cursor = $3, lease_until_us = $4 "
                         "WHERE name = $1 AND lease_owner = $2 AND cursor < $3",
                         Params().Text(name).Text(owner).Int(cursor).Int(Micros(now + lease))));
    if (r.affected() == 1) return absl::OkStatus();
    LINESIGN_ASSIGN_OR_RETURN(Result q, c.Exec("advance the delivery cursor",
                                               "SELECT lease_owner, cursor FROM webhook_cursor WHERE name = $1",
                                               Params().Text(name)));
    if (q.rows() == 0) return absl::FailedPreconditionError(absl::StrCat("store: no delivery cursor '", name, "'"));
    std::string holder = q.Str(0, 0);
    if (holder != owner) {
      return absl::FailedPreconditionError(absl::StrCat(
          "store: cannot advance delivery cursor '", name, "': '", owner, "' does not hold its lease (",
          holder.empty() ? std::string("nobody holds it") : absl::StrCat("'", holder, "' holds it"), ")"));
    }
    return absl::FailedPreconditionError(absl::StrCat("store: cannot move delivery cursor '", name, "' from ",
                                                      q.Int(0, 1), " to ", cursor, ": it only moves forward"));
  });
}

absl::Status PostgresStore::ReleaseCursor(const std::string& name, const std::string& owner) {
  return WithConnection([&](Connection& c) -> absl::Status {
    return c.Exec("release the delivery cursor",
                  "UPDATE webhook_cursor SET lease_owner = NULL, lease_until_us = 0 WHERE name = $1 AND lease_owner = $2",
                  Params().Text(name).Text(owner))
        .status();
  });
}

// ---- AWS IoT registrations (iot_registration_store.h) ----

namespace {

constexpr const char* kIotColumns =
    "issuer_id, serial, target, state, progress, certificate_id, certificate_arn, thing_name, policy, "
    "already_present, error_code, error_message, attempts, updated_us";

constexpr int kMaxEnqueueSerials = 10000;

IotRegistrationState ParseIotState(const std::string& s) {
  if (s == "registered") return IotRegistrationState::kRegistered;
  if (s == "failed") return IotRegistrationState::kFailed;
  return IotRegistrationState::kPending;
}

IotRegistration ReadIot(const Result& r, int row) {
  IotRegistration out;
  out.key = IotRegistrationKey{r.Str(row, 0), r.Str(row, 1), r.Str(row, 2)};
  out.state = ParseIotState(r.Str(row, 3));
  out.progress = r.Str(row, 4);
  out.certificate_id = r.Str(row, 5);
  out.certificate_arn = r.Str(row, 6);
  out.thing_name = r.Str(row, 7);
  out.policy = r.Str(row, 8);
  out.already_present = r.Int(row, 9) != 0;
  out.error_code = r.Str(row, 10);
  out.error_message = r.Str(row, 11);
  out.attempts = static_cast<int>(r.Int(row, 12));
  out.updated_at = absl::FromUnixMicros(r.Int(row, 13));
  return out;
}

// WriteIotRow stores the lease holder's fields of w.registration with `state`, adding `add_attempts`; NotFound
// when there is no such registration.
absl::Status WriteIotRow(Connection& c, const IotRegistrationWrite& w, IotRegistrationState state, int add_attempts) {
  const IotRegistration& r = w.registration;
  LINESIGN_ASSIGN_OR_RETURN(
      Result u, c.Exec("write the AWS IoT registration",
                       "UPDATE iot_registrations SET state = $4, progress = $5, certificate_id = $6, "
                       "certificate_arn = $7, thing_name = $8, policy = $9, already_present = ($10::integer <> 0), "
                       "error_code = $11, error_message = $12, attempts = attempts + $13::integer, updated_us = $14 "
                       "WHERE issuer_id = $1 AND serial = $2 AND target = $3",
                       Params()
                           .Text(r.key.issuer_id)
                           .Text(r.key.serial_hex)
                           .Text(r.key.target)
                           .Text(IotRegistrationStateName(state))
                           .Text(r.progress)
                           .Text(r.certificate_id)
                           .Text(r.certificate_arn)
                           .Text(r.thing_name)
                           .Text(r.policy)
                           .Int(r.already_present ? 1 : 0)
                           .Text(r.error_code)
                           .Text(r.error_message)
                           .Int(add_attempts)
                           .Int(Micros(w.now))));
  if (u.affected() != 1) {
    return absl::NotFoundError(absl::StrCat("store: no AWS IoT registration of ", r.key.serial_hex, " with target '",
                                            r.key.target, "'"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::optional<IotRegistration>> PostgresStore::GetIotRegistration(const IotRegistrationKey& key) {
  std::optional<IotRegistration> out;
  LINESIGN_RETURN_IF_ERROR(WithConnection([&](Connection& c) -> absl::Status {
    LINESIGN_ASSIGN_OR_RETURN(
        Result r, c.Exec("read the AWS IoT registration",
                         absl::StrCat("SELECT ", kIotColumns,
                                      " FROM iot_registrations WHERE issuer_id = $1 AND serial = $2 AND target = $3"),
                         Params().Text(key.issuer_id).Text(key.serial_hex).Text(key.target)));
    if (r.rows() > 0) out = ReadIot(r, 0);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<IotRegistration>> PostgresStore::ListIotRegistrations(const IotRegistrationQuery& q) {
  if (q.limit < 1 || q.limit > kMaxReadLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("store: AWS IoT registration list limit ", q.limit, " is outside 1..", kMaxReadLimit));
  }
  if (q.target.empty()) return absl::InvalidArgumentError("store: an AWS IoT registration list needs a target");
  const std::string state = q.state.has_value() ? IotRegistrationStateName(*q.state) : "";
  std::vector<IotRegistration> out;
  LINESIGN_RETURN_IF_ERROR(WithConnection([&](Connection& c) -> absl::Status {
    LINESIGN_ASSIGN_OR_RETURN(
        Result r, c.Exec("list AWS IoT registrations",
                         absl::StrCat("SELECT ", kIotColumns,
                                      " FROM iot_registrations WHERE target = $1 AND ($2 = '' OR state = $2) "
                                      "AND serial > $3 AND ($4 = '' OR issuer_id = $4) ORDER BY serial LIMIT $5"),
                         Params().Text(q.target).Text(state).Text(q.after_serial).Text(q.issuer_id).Int(q.limit)));
    for (int i = 0; i < r.rows(); ++i) out.push_back(ReadIot(r, i));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<IotTargetCounts>> PostgresStore::CountIotRegistrations() {
  std::vector<IotTargetCounts> out;
  LINESIGN_RETURN_IF_ERROR(WithConnection([&](Connection& c) -> absl::Status {
    LINESIGN_ASSIGN_OR_RETURN(
        Result r, c.Exec("count AWS IoT registrations",
                         "SELECT target, state, CASE state WHEN 'failed' THEN error_code ELSE '' END, COUNT(*) "
                         "FROM iot_registrations GROUP BY 1, 2, 3 ORDER BY 1"));
    out.clear();
    for (int i = 0; i < r.rows(); ++i) {
      std::string target = r.Str(i, 0);
      if (out.empty() || out.back().target != target) out.push_back(IotTargetCounts{.target = target});
      IotTargetCounts& counts = out.back();
      const int64_t n = r.Int(i, 3);
      switch (ParseIotState(r.Str(i, 1))) {
        case IotRegistrationState::kPending:
          counts.pending += n;
          break;
        case IotRegistrationState::kRegistered:
          counts.registered += n;
          break;
        case IotRegistrationState::kFailed:
          counts.failed += n;
          counts.failed_by_code[r.Str(i, 2)] += n;
          break;
      }
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<IotEnqueueResult> PostgresStore::EnqueueIotRegistrations(const std::string& issuer_id,
                                                                        const std::string& target,
                                                                        absl::Span<const std::string> serials,
                                                                        absl::Time now) {
  if (issuer_id.empty() || target.empty()) {
    return absl::InvalidArgumentError("store: enqueueing AWS IoT registrations needs an issuer and a target");
  }
  if (serials.size() > static_cast<size_t>(kMaxEnqueueSerials)) {
    return absl::InvalidArgumentError(absl::StrCat("store: ", serials.size(), " serials in one enqueue; at most ",
                                                   kMaxEnqueueSerials));
  }
  std::vector<std::string> unique(serials.begin(), serials.end());
  std::sort(unique.begin(), unique.end());
  unique.erase(std::unique(unique.begin(), unique.end()), unique.end());
  IotEnqueueResult result;
  if (unique.empty()) return result;
  const absl::Time created = clock_->Now();
  LINESIGN_RETURN_IF_ERROR(InTransaction([&](Connection& c) -> absl::Status {
    result = IotEnqueueResult{};
    LINESIGN_RETURN_IF_ERROR(c.Exec("lock the target's enqueues", "SELECT pg_advisory_xact_lock(hashtextextended($1, $2))",
                                    Params().Text(target).Int(kIotEnqueueLockKey))
                                 .status());
    for (const std::string& serial : unique) {
      LINESIGN_ASSIGN_OR_RETURN(
          Result r, c.Exec("read an AWS IoT registration",
                           "SELECT EXISTS (SELECT 1 FROM certificates WHERE issuer_id = $1 AND serial = $2), "
                           "(SELECT state FROM iot_registrations WHERE issuer_id = $1 AND serial = $2 AND target = $3)",
                           Params().Text(issuer_id).Text(serial).Text(target)));
      if (r.Int(0, 0) == 0) {
        ++result.unknown_serial;
        continue;
      }
      if (!r.IsNull(0, 1)) {
        const IotRegistrationState st = ParseIotState(r.Str(0, 1));
        if (st == IotRegistrationState::kRegistered) {
          ++result.already_registered;
          continue;
        }
        if (st == IotRegistrationState::kPending) {
          ++result.already_pending;
          continue;
        }
      }
      LINESIGN_RETURN_IF_ERROR(
          InsertOutbox(c, IotRegisterItem(IotRegistrationKey{issuer_id, serial, target}, now), created).status());
      ++result.enqueued;
    }
    return absl::OkStatus();
  }));
  return result;
}

absl::Status PostgresStore::SaveIotProgress(const IotRegistrationWrite& w, absl::Duration lease) {
  LINESIGN_RETURN_IF_ERROR(CheckIotWrite(w));
  if (lease <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("store: lease ", absl::FormatDuration(lease), " is not positive"));
  }
  return InTransaction([&](Connection& c) -> absl::Status {
    LINESIGN_ASSIGN_OR_RETURN(Result r, c.Exec("renew the lease",
                                               "UPDATE outbox SET lease_until_us = $3 WHERE id = $1 AND "
                                               "lease_owner = $2 AND completed_us IS NULL",
                                               Params().Int(w.outbox_id).Text(w.owner).Int(Micros(w.now + lease))));
    if (r.affected() != 1) return ExplainLeaseMiss(c, w.outbox_id, w.owner, "save the progress of");
    return WriteIotRow(c, w, IotRegistrationState::kPending, 0);
  });
}

absl::Status PostgresStore::FinishIotRegistration(const IotRegistrationWrite& w, const Event& event) {
  LINESIGN_RETURN_IF_ERROR(CheckIotWrite(w));
  LINESIGN_RETURN_IF_ERROR(CheckEvent(event));
  const IotRegistrationState state = w.registration.state;
  if (state == IotRegistrationState::kPending) {
    return absl::InvalidArgumentError("store: a finished AWS IoT registration is registered or failed, not pending");
  }
  return InTransaction([&](Connection& c) -> absl::Status {
    // The log lock first (this appends an event), then the rows: every writer takes them in this order.
    LINESIGN_ASSIGN_OR_RETURN(int64_t last_id, LockLog(c));
    LINESIGN_ASSIGN_OR_RETURN(Result r,
                              c.Exec("complete", kComplete, Params().Int(w.outbox_id).Text(w.owner).Int(Micros(w.now))));
    if (r.affected() != 1) return ExplainLeaseMiss(c, w.outbox_id, w.owner, "complete");
    LINESIGN_RETURN_IF_ERROR(WriteIotRow(c, w, state, state == IotRegistrationState::kFailed ? 1 : 0));
    return InsertEvent(c, event, last_id + 1);
  });
}

absl::Status PostgresStore::RetryIotRegistration(const IotRegistrationWrite& w, absl::Time next_attempt_at) {
  LINESIGN_RETURN_IF_ERROR(CheckIotWrite(w));
  return InTransaction([&](Connection& c) -> absl::Status {
    const std::string last_error = absl::StrCat(w.registration.error_code, ": ", w.registration.error_message);
    LINESIGN_ASSIGN_OR_RETURN(
        Result r, c.Exec("reschedule", kReschedule,
                         Params().Int(w.outbox_id).Text(w.owner).Int(Micros(next_attempt_at)).Text(last_error)));
    if (r.affected() != 1) return ExplainLeaseMiss(c, w.outbox_id, w.owner, "reschedule");
    return WriteIotRow(c, w, IotRegistrationState::kPending, 1);
  });
}

}  // namespace linesign::store
