#include "server/store/sqlite/sqlite_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "common/utf8.h"
#include "nlohmann/json.hpp"
#include "server/store/input_checks.h"
#include "server/store/sqlite/migrations.h"

namespace linesign::store {
namespace {

constexpr const char* kColumns =
    "id, issuer_id, serial, subject, sans, not_before, not_after, spki_sha256, csr_sha256, station, profile, "
    "request_id, der, issued_at, status, renews_serial, revoked_at, revocation_reason, renewed_by_serial, "
    "renewal_due_at";

// The event log's id sequence, shared by certificates (each one an ISSUED event) and appended events: the next id
// is one past the larger of the two tables' largest ids, read inside the writing transaction (two seeks to the
// last page of each primary key), so ids stay in commit order whichever process writes.
#define LINESIGN_NEXT_LOG_ID                                                          \
  "(SELECT max(coalesce((SELECT max(id) FROM certificates), 0), "                     \
  "coalesce((SELECT max(id) FROM events), 0)) + 1)"

constexpr const char* kInsertCertificate =
    "INSERT INTO certificates (id, issuer_id, serial, subject, sans, not_before, not_after, spki_sha256, "
    "csr_sha256, station, profile, request_id, der, issued_at, status, renews_serial, revoked_at, "
    "revocation_reason) VALUES (" LINESIGN_NEXT_LOG_ID
    ", ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)";

constexpr const char* kInsertEvent =
    "INSERT INTO events (id, type, issuer_id, serial, station, profile, time_us, data) "
    "VALUES (" LINESIGN_NEXT_LOG_ID ", ?1, ?2, ?3, ?4, ?5, ?6, ?7)";
#undef LINESIGN_NEXT_LOG_ID

// The log after a cursor: recorded certificates as ISSUED events, and appended events, each in id order; the
// two are merged by the caller.
constexpr const char* kReadIssuedAfter =
    "SELECT id, 'ISSUED', issuer_id, serial, station, profile, issued_at * 1000000, '' FROM certificates "
    "WHERE id > ?1 ORDER BY id LIMIT ?2";
constexpr const char* kReadEventsAfter =
    "SELECT id, type, issuer_id, serial, station, profile, time_us, data FROM events "
    "WHERE id > ?1 ORDER BY id LIMIT ?2";

constexpr const char* kInsertOutbox =
    "INSERT INTO outbox (kind, dedupe_key, payload, created_us, next_attempt_us) VALUES (?1, ?2, ?3, ?4, ?5) "
    "ON CONFLICT (kind, dedupe_key) DO NOTHING";

// An iot.register item records its registration as pending (new, or again after a failure: completed steps
// stay in its progress).
constexpr const char* kUpsertIotPending =
    "INSERT INTO iot_registrations (issuer_id, serial, target, state, updated_us) VALUES (?1, ?2, ?3, 'pending', ?4) "
    "ON CONFLICT (issuer_id, serial, target) DO UPDATE SET state = 'pending', error_code = '', error_message = '', "
    "updated_us = excluded.updated_us";

constexpr const char* kOutboxColumns =
    "id, kind, dedupe_key, payload, next_attempt_us, attempts, last_error, lease_owner, lease_until_us";

// One statement, so it maps onto PostgreSQL as it is (with FOR UPDATE SKIP LOCKED in the sub-select): the due,
// free items are chosen and leased atomically; under SQLite's single writer no two claimers can interleave.
constexpr const char* kClaim =
    "UPDATE outbox SET lease_owner = ?1, lease_until_us = ?2, attempts = attempts + 1 WHERE id IN ("
    "SELECT id FROM outbox WHERE completed_us IS NULL AND next_attempt_us <= ?3 "
    "AND (lease_until_us IS NULL OR lease_until_us <= ?3) AND (?4 = '' OR kind = ?4) "
    "ORDER BY next_attempt_us, id LIMIT ?5) "
    "RETURNING id, kind, dedupe_key, payload, next_attempt_us, attempts, last_error, lease_owner, lease_until_us";

constexpr const char* kComplete =
    "UPDATE outbox SET completed_us = ?3, lease_owner = NULL, lease_until_us = NULL "
    "WHERE id = ?1 AND lease_owner = ?2 AND completed_us IS NULL";

constexpr const char* kReschedule =
    "UPDATE outbox SET next_attempt_us = ?3, last_error = ?4, lease_owner = NULL, lease_until_us = NULL "
    "WHERE id = ?1 AND lease_owner = ?2 AND completed_us IS NULL";

// A successor supersedes its predecessor in the successor's transaction, and only a valid one without a
// successor: at most one successor per certificate, whoever (scanner, administrator, re-keying station) asks.
constexpr const char* kSupersede =
    "UPDATE certificates SET status = 'superseded', renewed_by_serial = ?3 "
    "WHERE issuer_id = ?1 AND serial = ?2 AND status = 'valid' AND renewed_by_serial IS NULL";

constexpr const char* kMarkDue =
    "UPDATE certificates SET renewal_due_at = ?3 "
    "WHERE issuer_id = ?1 AND serial = ?2 AND status = 'valid' AND renewed_by_serial IS NULL "
    "AND renewal_due_at IS NULL";

// The renewal scan: its conditions are certificates_renewal_pending's, so only unmarked valid rows are walked.
constexpr const char* kRenewalPending =
    "SELECT id, issuer_id, serial, subject, sans, not_before, not_after, spki_sha256, csr_sha256, station, profile, "
    "request_id, der, issued_at, status, renews_serial, revoked_at, revocation_reason, renewed_by_serial, "
    "renewal_due_at FROM certificates WHERE profile = ?1 AND status = 'valid' AND renewal_due_at IS NULL "
    "AND not_after > ?2 AND not_after <= ?3 AND renewed_by_serial IS NULL ORDER BY not_after LIMIT ?4";

constexpr int kMaxReadLimit = 1000;
// A valid or renewal_due list merges up to two ranges per profile in one statement; SQLite allows 500 terms in a
// compound SELECT. Beyond this many ranges it walks one range bounded by the shortest or longest renew_before.
constexpr size_t kMaxMergedRanges = 400;
constexpr char kPageTokenPrefix[] = "c1.";
// Expiry-ordered and issue-ordered pages: "c2.e.<not_after>.<id>", "c2.i.<issued_at>.<id>".
constexpr char kOrderedTokenPrefix[] = "c2.";

struct Stmt {
  sqlite3_stmt* s = nullptr;
  Stmt() = default;
  Stmt(Stmt&& other) noexcept : s(other.s) { other.s = nullptr; }
  Stmt& operator=(Stmt&&) = delete;
  ~Stmt() { sqlite3_finalize(s); }
};

// Using resets a cached statement when the scope ends, so it holds no read snapshot between uses.
struct Using {
  explicit Using(sqlite3_stmt* s) : s(s) { sqlite3_reset(s); }
  ~Using() { sqlite3_reset(s); }
  sqlite3_stmt* s;
};

void BindText(sqlite3_stmt* s, int i, const std::string& v) {
  sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
}

void BindTextOrNull(sqlite3_stmt* s, int i, const std::string& v) {
  if (v.empty()) {
    sqlite3_bind_null(s, i);
  } else {
    BindText(s, i, v);
  }
}

void BindBlob(sqlite3_stmt* s, int i, const std::string& v) {
  sqlite3_bind_blob(s, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
}

std::string ColumnText(sqlite3_stmt* s, int i) {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_blob(s, i));
  return p == nullptr ? "" : std::string(p, sqlite3_column_bytes(s, i));
}

// The sans column holds a JSON array of {"type": .., "value": ..}; a field whose bytes are not valid UTF-8 is
// stored as "<name>_hex" (hex of the exact bytes) instead, so every value round-trips byte for byte.
// Rows written before (a comma-joined "DNS:a,IP Address:b" text, never starting with '[') read back as one
// San of type kLegacySanType with that text.
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
  std::string hex_name = absl::StrCat(name, "_hex");
  if (auto it = j.find(hex_name); it != j.end() && it->is_string()) {
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
  return array.dump();  // every string in it is valid UTF-8: dump cannot throw
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
absl::Time FromMicros(int64_t us) { return absl::FromUnixMicros(us); }

CertificateStatus ParseStatus(const std::string& s) {
  if (s == "revoked") return CertificateStatus::kRevoked;
  if (s == "superseded") return CertificateStatus::kSuperseded;
  return CertificateStatus::kValid;
}

CertificateRecord ReadCertificate(sqlite3_stmt* s) {
  CertificateRecord r;
  r.id = sqlite3_column_int64(s, 0);
  r.issuer_id = ColumnText(s, 1);
  r.serial_hex = ColumnText(s, 2);
  r.subject = ColumnText(s, 3);
  r.sans = DecodeSans(ColumnText(s, 4));
  r.not_before = sqlite3_column_int64(s, 5);
  r.not_after = sqlite3_column_int64(s, 6);
  r.spki_sha256 = ColumnText(s, 7);
  r.csr_sha256 = ColumnText(s, 8);
  r.station = ColumnText(s, 9);
  r.profile = ColumnText(s, 10);
  r.request_id = ColumnText(s, 11);
  r.der = ColumnText(s, 12);
  r.issued_at = sqlite3_column_int64(s, 13);
  r.status = ParseStatus(ColumnText(s, 14));
  r.renews_serial = ColumnText(s, 15);
  r.revoked_at = sqlite3_column_int64(s, 16);
  r.revocation_reason = sqlite3_column_type(s, 17) == SQLITE_NULL ? -1 : sqlite3_column_int(s, 17);
  r.renewed_by_serial = ColumnText(s, 18);
  r.renewal_due_at = sqlite3_column_int64(s, 19);
  return r;
}

OutboxItem ReadOutbox(sqlite3_stmt* s) {
  OutboxItem o;
  o.id = sqlite3_column_int64(s, 0);
  o.kind = ColumnText(s, 1);
  o.dedupe_key = ColumnText(s, 2);
  o.payload = ColumnText(s, 3);
  o.next_attempt_at = FromMicros(sqlite3_column_int64(s, 4));
  o.attempts = sqlite3_column_int(s, 5);
  o.last_error = ColumnText(s, 6);
  o.lease_owner = ColumnText(s, 7);
  o.lease_until = FromMicros(sqlite3_column_int64(s, 8));
  return o;
}

absl::Status Unavailable(sqlite3* db, absl::string_view what) {
  return absl::UnavailableError(absl::StrCat("store: ", what, ": ", sqlite3_errmsg(db)));
}

// Explain returns the query plan of the prepared statement `s` on `db` (EXPLAIN QUERY PLAN of its expanded SQL).
absl::StatusOr<std::string> Explain(sqlite3* db, sqlite3_stmt* s) {
  char* expanded = sqlite3_expanded_sql(s);
  if (expanded == nullptr) return absl::InternalError("store: cannot expand the statement");
  std::string explain = absl::StrCat("EXPLAIN QUERY PLAN ", expanded);
  sqlite3_free(expanded);
  Stmt e;
  if (sqlite3_prepare_v2(db, explain.c_str(), -1, &e.s, nullptr) != SQLITE_OK) {
    return absl::UnavailableError(absl::StrCat("store: explain: ", sqlite3_errmsg(db)));
  }
  std::string out;
  while (sqlite3_step(e.s) == SQLITE_ROW) absl::StrAppend(&out, ColumnText(e.s, 3), "\n");
  return out;
}

// PrepareFileModes creates a missing database file 0600 before SQLite does (SQLite would create it 0644 less the
// umask), and warns about an existing database, WAL or shared-memory file that group or others may read: the
// records name every station and device. SQLite's unix VFS gives the -wal and -shm files it creates the database
// file's mode, so a 0600 database keeps all three private. Existing modes are not changed: an operator may have
// chosen them (a backup group); the warning says how to tighten them.
absl::Status PrepareFileModes(const std::string& path) {
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd >= 0) {
    fchmod(fd, 0600);  // whatever the umask
    close(fd);
  } else if (errno != EEXIST) {
    return absl::UnavailableError(absl::StrCat("store.sqlite.path ", path, ": cannot create: ", std::strerror(errno)));
  }
  for (const std::string& file : {path, path + "-wal", path + "-shm"}) {
    struct stat st;
    if (stat(file.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
      LogWarning("store.sqlite.path: ", file, " has mode ", absl::StrFormat("%04o", st.st_mode & 07777),
                 ": group or others can read the certificate records; run: chmod 600 ", path, " ", path, "-wal ",
                 path, "-shm");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& path, const Clock* clock) {
  LINESIGN_RETURN_IF_ERROR(PrepareFileModes(path));
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("store.sqlite.path ", path, ": ", msg));
  }
  std::unique_ptr<SqliteStore> store(new SqliteStore(db, clock));
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  sqlite3_extended_result_codes(db, 1);
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA foreign_keys=ON"}) {
    if (auto st = store->Exec(pragma); !st.ok()) {
      return absl::UnavailableError(absl::StrCat("store.sqlite.path ", path, ": ", st.message()));
    }
  }
  LINESIGN_RETURN_IF_ERROR(sqlite::Migrate(db, path, clock->Now()));
  if (auto st = store->Prepare(); !st.ok()) {
    return absl::UnavailableError(absl::StrCat("store.sqlite.path ", path, ": ", st.message()));
  }
  for (sqlite3** reader : {&store->reader_, &store->scanner_}) {
    rc = sqlite3_open_v2(path.c_str(), reader, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
      return absl::UnavailableError(absl::StrCat("store.sqlite.path ", path, ": ", sqlite3_errmsg(*reader)));
    }
    sqlite3_busy_timeout(*reader, kBusyTimeoutMs);
    sqlite3_extended_result_codes(*reader, 1);
  }

  // The checkpointer and the ping: connections of their own, so neither waits behind the writer's mutex.
  for (sqlite3** extra : {&store->ck_, &store->ping_}) {
    rc = sqlite3_open_v2(path.c_str(), extra, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
      return absl::UnavailableError(absl::StrCat("store.sqlite.path ", path, ": ",
                                                 *extra != nullptr ? sqlite3_errmsg(*extra) : sqlite3_errstr(rc)));
    }
    sqlite3_extended_result_codes(*extra, 1);
  }
  sqlite3_busy_timeout(store->ck_, kBusyTimeoutMs);
  sqlite3_exec(store->ck_, "PRAGMA synchronous=FULL", nullptr, nullptr, nullptr);  // the checkpoint's fsync
  sqlite3_busy_timeout(store->ping_, kPingBusyTimeoutMs);
  // Replaces SQLite's automatic checkpoint in the committing connection.
  sqlite3_wal_hook(store->db_, &SqliteStore::OnWalCommit, store.get());
  return store;
}

absl::Status SqliteStore::Prepare() {
  std::string find_request =
      absl::StrCat("SELECT 1 FROM certificates WHERE station = ?1 AND request_id = ?2");
  struct {
    sqlite3_stmt** stmt;
    const char* sql;
  } all[] = {{&find_request_, find_request.c_str()}, {&insert_certificate_, kInsertCertificate},
             {&insert_event_, kInsertEvent},         {&insert_outbox_, kInsertOutbox},
             {&claim_, kClaim},                      {&complete_, kComplete},
             {&reschedule_, kReschedule},            {&supersede_, kSupersede},
             {&mark_due_, kMarkDue},                 {&upsert_iot_pending_, kUpsertIotPending}};
  for (auto& [stmt, sql] : all) {
    if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, stmt, nullptr) != SQLITE_OK) {
      return Unavailable(db_, absl::StrCat("prepare ", sql));
    }
  }
  return absl::OkStatus();
}

SqliteStore::~SqliteStore() {
  for (sqlite3_stmt* s :
       {find_request_, insert_certificate_, insert_event_, insert_outbox_, claim_, complete_, reschedule_,
        supersede_, mark_due_, upsert_iot_pending_}) {
    sqlite3_finalize(s);
  }
  sqlite3_close(reader_);
  sqlite3_close(scanner_);
  sqlite3_close(ck_);
  sqlite3_close(ping_);
  sqlite3_close(db_);  // the last connection: SQLite checkpoints the rest and removes the WAL
}

int SqliteStore::OnWalCommit(void* self, sqlite3*, const char*, int pages) {
  static_cast<SqliteStore*>(self)->wal_pages_.store(pages, std::memory_order_relaxed);
  return SQLITE_OK;
}

absl::Status SqliteStore::Checkpoint() {
  if (wal_pages_.load(std::memory_order_relaxed) < kCheckpointPages) return absl::OkStatus();
  std::lock_guard<std::mutex> lock(ck_mu_);
  // PASSIVE: copies what it can without waiting for the writer or readers; commits go on meanwhile.
  int log = 0, done = 0;
  if (sqlite3_wal_checkpoint_v2(ck_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &done) != SQLITE_OK) {
    return Unavailable(ck_, "checkpoint");
  }
  ++checkpoints_;
  // All copied: the writer starts the WAL over at its next commit, whose hook reports the new size.
  if (done >= log) wal_pages_.store(0, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::Status SqliteStore::Ping() {
  std::lock_guard<std::mutex> lock(ping_mu_);
  if (sqlite3_exec(ping_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) {
    return Unavailable(ping_, "ping");
  }
  sqlite3_exec(ping_, "ROLLBACK", nullptr, nullptr, nullptr);
  return absl::OkStatus();
}

int64_t SqliteStore::checkpoints() const {
  std::lock_guard<std::mutex> lock(ck_mu_);
  return checkpoints_;
}

absl::Status SqliteStore::Exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err != nullptr ? err : "unknown error";
    sqlite3_free(err);
    return absl::UnavailableError(absl::StrCat("store: ", msg));
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::InsertEvent(const Event& e) {
  Using u(insert_event_);
  BindText(u.s, 1, e.type);
  BindText(u.s, 2, e.issuer_id);
  BindText(u.s, 3, e.serial_hex);
  BindText(u.s, 4, e.station);
  BindText(u.s, 5, e.profile);
  sqlite3_bind_int64(u.s, 6, Micros(e.time));
  BindText(u.s, 7, e.data);
  if (sqlite3_step(u.s) != SQLITE_DONE) return Unavailable(db_, "insert event");
  return absl::OkStatus();
}

absl::StatusOr<int64_t> SqliteStore::InsertOutbox(const OutboxItem& o) {
  Using u(insert_outbox_);
  BindText(u.s, 1, o.kind);
  BindTextOrNull(u.s, 2, o.dedupe_key);
  BindBlob(u.s, 3, o.payload);
  sqlite3_bind_int64(u.s, 4, Micros(clock_->Now()));
  sqlite3_bind_int64(u.s, 5, Micros(o.next_attempt_at));
  if (sqlite3_step(u.s) != SQLITE_DONE) return Unavailable(db_, "insert outbox item");
  if (sqlite3_changes(db_) == 0) return 0;
  const int64_t id = sqlite3_last_insert_rowid(db_);
  if (o.kind == kIotRegisterOutboxKind) {
    LINESIGN_ASSIGN_OR_RETURN(IotRegistrationKey key, ParseIotRegisterPayload(o.payload));
    Using r(upsert_iot_pending_);
    BindText(r.s, 1, key.issuer_id);
    BindText(r.s, 2, key.serial_hex);
    BindText(r.s, 3, key.target);
    sqlite3_bind_int64(r.s, 4, Micros(clock_->Now()));
    if (sqlite3_step(r.s) != SQLITE_DONE) return Unavailable(db_, "record the pending AWS IoT registration");
  }
  return id;
}

absl::StatusOr<std::vector<RecordOutcome>> SqliteStore::RecordBatch(const Batch& batch) {
  LINESIGN_RETURN_IF_ERROR(CheckBatch(batch));
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<RecordOutcome> outcomes(batch.entries.size(), RecordOutcome::kRecorded);
  if (batch.entries.empty() && batch.events.empty() && batch.outbox.empty()) return outcomes;
  // IMMEDIATE takes the write lock now, so the duplicate checks below see every committed row.
  LINESIGN_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto fail = [&](absl::Status st) {
    Exec("ROLLBACK").IgnoreError();
    return st;
  };
  for (size_t i = 0; i < batch.entries.size(); ++i) {
    const CertificateRecord& r = batch.entries[i].cert;
    {
      Using dup(find_request_);
      BindText(dup.s, 1, r.station);
      BindText(dup.s, 2, r.request_id);
      int rc = sqlite3_step(dup.s);
      if (rc == SQLITE_ROW) {
        outcomes[i] = RecordOutcome::kDuplicateRequest;
        continue;
      }
      if (rc != SQLITE_DONE) return fail(Unavailable(db_, "duplicate check"));
    }
    // A successor: supersede the predecessor first, under a savepoint so that a refused entry (its predecessor
    // taken, or a serial collision) leaves the predecessor as it was. First issues (the line rate) need none.
    const bool successor = !r.renews_serial.empty();
    if (successor) {
      if (auto st = Exec("SAVEPOINT successor"); !st.ok()) return fail(st);
      Using up(supersede_);
      BindText(up.s, 1, r.issuer_id);
      BindText(up.s, 2, r.renews_serial);
      BindText(up.s, 3, r.serial_hex);
      if (sqlite3_step(up.s) != SQLITE_DONE) return fail(Unavailable(db_, "supersede"));
      if (sqlite3_changes(db_) != 1) {
        if (auto st = Exec("ROLLBACK TO successor; RELEASE successor"); !st.ok()) return fail(st);
        outcomes[i] = RecordOutcome::kPredecessorNotValid;
        continue;
      }
    }
    {
      Using ins(insert_certificate_);
      BindText(ins.s, 1, r.issuer_id);
      BindText(ins.s, 2, r.serial_hex);
      BindText(ins.s, 3, r.subject);
      const std::string sans = EncodeSans(r.sans);
      BindText(ins.s, 4, sans);
      sqlite3_bind_int64(ins.s, 5, r.not_before);
      sqlite3_bind_int64(ins.s, 6, r.not_after);
      BindText(ins.s, 7, r.spki_sha256);
      BindText(ins.s, 8, r.csr_sha256);
      BindText(ins.s, 9, r.station);
      BindText(ins.s, 10, r.profile);
      BindText(ins.s, 11, r.request_id);
      BindBlob(ins.s, 12, r.der);
      sqlite3_bind_int64(ins.s, 13, r.issued_at);
      sqlite3_bind_text(ins.s, 14, StatusName(r.status), -1, SQLITE_STATIC);
      BindTextOrNull(ins.s, 15, r.renews_serial);
      if (r.revoked_at != 0) {
        sqlite3_bind_int64(ins.s, 16, r.revoked_at);
      } else {
        sqlite3_bind_null(ins.s, 16);
      }
      if (r.revocation_reason >= 0) {
        sqlite3_bind_int(ins.s, 17, r.revocation_reason);
      } else {
        sqlite3_bind_null(ins.s, 17);
      }
      int rc = sqlite3_step(ins.s);
      if (rc == SQLITE_CONSTRAINT_UNIQUE) {
        // (station, request_id) was checked above inside this transaction, so the conflict is the serial.
        if (successor) {
          if (auto st = Exec("ROLLBACK TO successor; RELEASE successor"); !st.ok()) return fail(st);
        }
        outcomes[i] = RecordOutcome::kSerialCollision;
        continue;
      }
      if (rc != SQLITE_DONE) return fail(Unavailable(db_, "insert"));
    }
    if (successor) {
      if (auto st = Exec("RELEASE successor"); !st.ok()) return fail(st);
    }
    for (const Event& e : batch.entries[i].events) {
      if (auto st = InsertEvent(e); !st.ok()) return fail(st);
    }
    for (const OutboxItem& o : batch.entries[i].outbox) {
      if (auto id = InsertOutbox(o); !id.ok()) return fail(id.status());
    }
  }
  for (const Event& e : batch.events) {
    if (auto st = InsertEvent(e); !st.ok()) return fail(st);
  }
  for (const OutboxItem& o : batch.outbox) {
    if (auto id = InsertOutbox(o); !id.ok()) return fail(id.status());
  }
  if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) return fail(Unavailable(db_, "commit"));
  return outcomes;
}

absl::StatusOr<std::optional<CertificateRecord>> SqliteStore::FindOne(const char* where, const std::string& a,
                                                                      const std::string& b) {
  std::lock_guard<std::mutex> lock(read_mu_);
  Stmt s;
  std::string sql = absl::StrCat("SELECT ", kColumns, " FROM certificates WHERE ", where);
  if (sqlite3_prepare_v2(reader_, sql.c_str(), -1, &s.s, nullptr) != SQLITE_OK) return Unavailable(reader_, "prepare");
  BindText(s.s, 1, a);
  BindText(s.s, 2, b);
  int rc = sqlite3_step(s.s);
  if (rc == SQLITE_ROW) return std::optional<CertificateRecord>(ReadCertificate(s.s));
  if (rc == SQLITE_DONE) return std::optional<CertificateRecord>();
  return Unavailable(reader_, "query");
}

absl::StatusOr<std::optional<CertificateRecord>> SqliteStore::FindByRequest(const std::string& station,
                                                                            const std::string& request_id) {
  return FindOne("station = ?1 AND request_id = ?2", station, request_id);
}

absl::StatusOr<std::optional<CertificateRecord>> SqliteStore::FindBySerial(const std::string& issuer_id,
                                                                           const std::string& serial_hex) {
  return FindOne("issuer_id = ?1 AND serial = ?2", issuer_id, serial_hex);
}

// ListPlan is List's statement for one query, bound and ready to step.
struct SqliteStore::ListPlan {
  enum class Order { kId, kExpiry, kIssued };
  Order order = Order::kId;
  int page_size = 100;
  std::optional<int64_t> scan_upto;  // a subject-only query looks at ids up to this on this page
  Stmt stmt;
};

namespace {

// Binder collects named parameters while the SQL is written.
struct Binder {
  std::vector<std::pair<std::string, int64_t>> ints;
  std::vector<std::pair<std::string, std::string>> texts;
  std::string Int(int64_t v) {
    std::string name = absl::StrCat(":i", ints.size());
    ints.emplace_back(name, v);
    return name;
  }
  std::string Text(std::string v) {
    std::string name = absl::StrCat(":t", texts.size());
    texts.emplace_back(name, std::move(v));
    return name;
  }
  void Bind(sqlite3_stmt* s) const {
    for (const auto& [name, v] : ints) sqlite3_bind_int64(s, sqlite3_bind_parameter_index(s, name.c_str()), v);
    for (const auto& [name, v] : texts) {
      sqlite3_bind_text(s, sqlite3_bind_parameter_index(s, name.c_str()), v.data(), static_cast<int>(v.size()),
                        SQLITE_TRANSIENT);
    }
  }
};

// RenewBeforeSql is each certificate's renew_before in seconds, by its profile.
std::string RenewBeforeSql(const CertificateQuery& q, Binder& b) {
  std::string sql = "(CASE profile";
  for (const auto& [profile, seconds] : q.renew_before_seconds) {
    absl::StrAppend(&sql, " WHEN ", b.Text(profile), " THEN ", b.Int(seconds));
  }
  absl::StrAppend(&sql, " ELSE ", b.Int(kDefaultRenewBeforeSeconds), " END)");
  return sql;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> SqliteStore::Profiles(bool marked) {
  // One seek per profile in certificates_renewal_pending or certificates_renewal_marked (a loose index scan),
  // whatever the number of certificates.
  const std::string in_index =
      absl::StrCat("status = 'valid' AND renewal_due_at ", marked ? "IS NOT NULL" : "IS NULL");
  const std::string sql = absl::StrCat(
      "WITH RECURSIVE p(name) AS (SELECT (SELECT min(profile) FROM certificates WHERE ", in_index, ") UNION ALL ",
      "SELECT (SELECT min(profile) FROM certificates WHERE ", in_index, " AND profile > p.name) FROM p ",
      "WHERE p.name IS NOT NULL) SELECT name FROM p WHERE name IS NOT NULL");
  Stmt s;
  if (sqlite3_prepare_v2(scanner_, sql.c_str(), -1, &s.s, nullptr) != SQLITE_OK) {
    return Unavailable(scanner_, "prepare");
  }
  std::vector<std::string> out;
  int rc;
  while ((rc = sqlite3_step(s.s)) == SQLITE_ROW) out.push_back(ColumnText(s.s, 0));
  if (rc != SQLITE_DONE) return Unavailable(scanner_, "list profiles");
  return out;
}

absl::StatusOr<SqliteStore::ListPlan> SqliteStore::PrepareList(const CertificateQuery& q) {
  ListPlan plan;
  plan.page_size = q.page_size == 0 ? 100 : q.page_size;
  if (plan.page_size < 1 || plan.page_size > kMaxPageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("store: page size ", q.page_size, " is outside 1..", kMaxPageSize));
  }
  // The order follows the most selective range the query has, so that its index can be walked in order and a
  // page reads about page_size rows: expiry for the status and expiry filters, issue time for an issued range,
  // else the recording order.
  const bool by_expiry = q.expiring_before.has_value() ||
                         (q.status.has_value() && (*q.status == ListStatus::kValid ||
                                                   *q.status == ListStatus::kRenewalDue ||
                                                   *q.status == ListStatus::kExpired));
  const bool by_issue = !by_expiry && (q.issued_from.has_value() || q.issued_before.has_value());
  plan.order = by_expiry ? ListPlan::Order::kExpiry : by_issue ? ListPlan::Order::kIssued : ListPlan::Order::kId;
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
    if (plan.order == ListPlan::Order::kId) {
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

  // valid and renewal_due are ranges per profile (below) in certificates_renewal_pending (unmarked) and
  // certificates_renewal_marked (marked): the query's profile in both, or each profile each index holds.
  std::optional<std::vector<std::pair<std::string, bool>>> range_profiles;
  if (q.status == ListStatus::kRenewalDue || q.status == ListStatus::kValid) {
    std::vector<std::pair<std::string, bool>> ranges;
    for (bool marked : {false, true}) {
      if (!q.profile.empty()) {
        ranges.emplace_back(q.profile, marked);
        continue;
      }
      LINESIGN_ASSIGN_OR_RETURN(std::vector<std::string> profiles, Profiles(marked));
      for (std::string& p : profiles) ranges.emplace_back(std::move(p), marked);
    }
    if (ranges.empty()) ranges.emplace_back("", false);  // no valid certificate at all: one empty range
    if (ranges.size() <= kMaxMergedRanges) range_profiles = std::move(ranges);
  }

  Binder b;
  std::vector<std::string> where;
  if (plan.order == ListPlan::Order::kId) {
    where.push_back(absl::StrCat("id > ", b.Int(after)));
  } else if (key.has_value()) {
    // Keyset on (key, id): the range term on the key alone (`from`, below) lets the index drive; this one skips
    // the rows of the last key already returned.
    where.push_back(absl::StrCat("(", key_column, " > ", b.Int(*key), " OR id > ", b.Int(after), ")"));
  }
  // The ordered key's lower bounds (the token's key, an issued_from, a status's) become ONE term at their largest:
  // given two, SQLite seeks with one and filters with the other, walking every row of the earlier pages.
  std::optional<int64_t> from = key;
  auto raise = [](std::optional<int64_t>& bound, int64_t v) {
    if (!bound.has_value() || v > *bound) bound = v;
  };
  if (!q.profile.empty() && !range_profiles.has_value()) {
    where.push_back(absl::StrCat("profile = ", b.Text(q.profile)));  // else each range names its profile
  }
  if (!q.station.empty()) where.push_back(absl::StrCat("station = ", b.Text(q.station)));
  if (q.issued_from && plan.order == ListPlan::Order::kIssued) {
    raise(from, *q.issued_from);
  } else if (q.issued_from) {
    where.push_back(absl::StrCat("issued_at >= ", b.Int(*q.issued_from)));
  }
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
        // The second term is the partial index's own condition, which SQLite needs to see to use it.
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
          where.push_back(absl::StrCat("status = 'valid' AND not_after <= ", b.Int(q.now + max_rb),
                                       " AND not_after - ", RenewBeforeSql(q, b), " <= ", b.Int(q.now)));
        }
        break;
      case ListStatus::kValid:
        if (range_profiles.has_value()) break;
        // Too many profiles for one statement: one range from the shortest renew_before, each row checked
        // against its own profile's (correct, but it walks the longer-window profiles' due rows).
        raise(from, q.now + min_rb + 1);
        where.push_back(absl::StrCat("status = 'valid' AND not_after - ", RenewBeforeSql(q, b), " > ", b.Int(q.now)));
        break;
    }
  }
  if (!q.subject_contains.empty()) {
    where.push_back(absl::StrCat("instr(subject, ", b.Text(q.subject_contains), ") > 0"));
    const bool alone = plan.order == ListPlan::Order::kId && q.profile.empty() && q.station.empty() &&
                       !q.status.has_value();
    if (alone) {
      plan.scan_upto = after + kSubjectScanIds;
      where.push_back(absl::StrCat("id <= ", b.Int(*plan.scan_upto)));
    }
  }
  std::string sql;
  if (range_profiles.has_value()) {
    // For each range (a profile, marked or not), its certificates recorded valid with
    // now < not_after <= now + its renew_before (renewal_due) or not_after > now + its renew_before (valid): the
    // unmarked ones from certificates_renewal_pending, the marked ones from certificates_renewal_marked (a marked
    // certificate is valid again only if its profile's renew_before was shortened since). Each range is walked in
    // (not_after, id) order and SQLite merges them (MERGE (UNION ALL), no sort), so a page reads about page_size
    // rows plus one per range, and never one of another status. The keyset terms in `where` apply to every range
    // alike: the token is a position in the merged order.
    std::vector<std::string> arms;
    for (const auto& [profile, marked] : *range_profiles) {
      auto it = q.renew_before_seconds.find(profile);
      const int64_t rb = it == q.renew_before_seconds.end() ? kDefaultRenewBeforeSeconds : it->second;
      std::vector<std::string> arm = {absl::StrCat("profile = ", b.Text(profile)), "status = 'valid'",
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
      arms.push_back(absl::StrCat("SELECT ", kColumns, " FROM certificates WHERE ", absl::StrJoin(arm, " AND ")));
    }
    sql = absl::StrJoin(arms, " UNION ALL ");
  } else {
    if (from.has_value()) where.push_back(absl::StrCat(key_column, " >= ", b.Int(*from)));
    sql = absl::StrCat("SELECT ", kColumns, " FROM certificates");
    if (!where.empty()) absl::StrAppend(&sql, " WHERE ", absl::StrJoin(where, " AND "));
  }
  absl::StrAppend(&sql, plan.order == ListPlan::Order::kId ? " ORDER BY id"
                                                          : absl::StrCat(" ORDER BY ", key_column, ", id"),
                  " LIMIT ", b.Int(plan.page_size + 1));  // one more tells whether there is a next page
  if (sqlite3_prepare_v2(scanner_, sql.c_str(), -1, &plan.stmt.s, nullptr) != SQLITE_OK) {
    return Unavailable(scanner_, "prepare");
  }
  b.Bind(plan.stmt.s);
  return plan;
}

absl::StatusOr<CertificatePage> SqliteStore::List(const CertificateQuery& q) {
  std::lock_guard<std::mutex> lock(scan_mu_);
  LINESIGN_ASSIGN_OR_RETURN(ListPlan plan, PrepareList(q));
  CertificatePage page;
  int rc;
  while ((rc = sqlite3_step(plan.stmt.s)) == SQLITE_ROW) page.records.push_back(ReadCertificate(plan.stmt.s));
  if (rc != SQLITE_DONE) return Unavailable(scanner_, "list");
  if (page.records.size() > static_cast<size_t>(plan.page_size)) {
    page.records.pop_back();
    const CertificateRecord& last = page.records.back();
    switch (plan.order) {
      case ListPlan::Order::kId:
        page.next_page_token = absl::StrCat(kPageTokenPrefix, last.id);
        break;
      case ListPlan::Order::kExpiry:
        page.next_page_token = absl::StrCat(kOrderedTokenPrefix, "e.", last.not_after, ".", last.id);
        break;
      case ListPlan::Order::kIssued:
        page.next_page_token = absl::StrCat(kOrderedTokenPrefix, "i.", last.issued_at, ".", last.id);
        break;
    }
  } else if (plan.scan_upto.has_value()) {
    // The subject scan stopped at its bound: more certificates beyond it are still to be looked at.
    Stmt m;
    if (sqlite3_prepare_v2(scanner_, "SELECT COALESCE(MAX(id), 0) FROM certificates", -1, &m.s, nullptr) !=
            SQLITE_OK ||
        sqlite3_step(m.s) != SQLITE_ROW) {
      return Unavailable(scanner_, "list");
    }
    if (sqlite3_column_int64(m.s, 0) > *plan.scan_upto) {
      page.next_page_token = absl::StrCat(kPageTokenPrefix, *plan.scan_upto);
    }
  }
  return page;
}

absl::StatusOr<std::string> SqliteStore::ExplainList(const CertificateQuery& q) {
  std::lock_guard<std::mutex> lock(scan_mu_);
  LINESIGN_ASSIGN_OR_RETURN(ListPlan plan, PrepareList(q));
  return Explain(scanner_, plan.stmt.s);
}

absl::StatusOr<std::string> SqliteStore::ExplainRenewalPending() {
  std::lock_guard<std::mutex> lock(read_mu_);
  Stmt s;
  if (sqlite3_prepare_v2(reader_, kRenewalPending, -1, &s.s, nullptr) != SQLITE_OK) {
    return Unavailable(reader_, "prepare");
  }
  return Explain(reader_, s.s);
}

absl::StatusOr<std::vector<CertificateRecord>> SqliteStore::FindRenewalPending(const DueQuery& q) {
  if (q.limit < 1 || q.limit > kMaxReadLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("store: renewal scan limit ", q.limit, " is outside 1..", kMaxReadLimit));
  }
  std::lock_guard<std::mutex> lock(read_mu_);
  Stmt s;
  if (sqlite3_prepare_v2(reader_, kRenewalPending, -1, &s.s, nullptr) != SQLITE_OK) {
    return Unavailable(reader_, "prepare");
  }
  BindText(s.s, 1, q.profile);
  sqlite3_bind_int64(s.s, 2, q.live_after);
  sqlite3_bind_int64(s.s, 3, q.due_before);
  sqlite3_bind_int(s.s, 4, q.limit);
  std::vector<CertificateRecord> out;
  int rc;
  while ((rc = sqlite3_step(s.s)) == SQLITE_ROW) out.push_back(ReadCertificate(s.s));
  if (rc != SQLITE_DONE) return Unavailable(reader_, "renewal scan");
  return out;
}

absl::StatusOr<int> SqliteStore::MarkRenewalDue(absl::Span<const DueMark> marks, absl::Time now) {
  for (const DueMark& m : marks) {
    if (m.event.type.empty()) return absl::InvalidArgumentError("store: an event needs a type");
    if (m.outbox.has_value()) LINESIGN_RETURN_IF_ERROR(CheckOutboxItem(*m.outbox));
  }
  if (marks.empty()) return 0;
  std::lock_guard<std::mutex> lock(mu_);
  LINESIGN_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto fail = [&](absl::Status st) {
    Exec("ROLLBACK").IgnoreError();
    return st;
  };
  int marked = 0;
  for (const DueMark& m : marks) {
    {
      Using u(mark_due_);
      BindText(u.s, 1, m.issuer_id);
      BindText(u.s, 2, m.serial_hex);
      sqlite3_bind_int64(u.s, 3, absl::ToUnixSeconds(now));
      if (sqlite3_step(u.s) != SQLITE_DONE) return fail(Unavailable(db_, "mark renewal due"));
    }
    if (sqlite3_changes(db_) != 1) continue;  // marked by another process, renewed or revoked meanwhile
    ++marked;
    if (auto st = InsertEvent(m.event); !st.ok()) return fail(st);
    if (m.outbox.has_value()) {
      if (auto id = InsertOutbox(*m.outbox); !id.ok()) return fail(id.status());
    }
  }
  if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) return fail(Unavailable(db_, "commit"));
  return marked;
}

absl::StatusOr<int64_t> SqliteStore::Count() {
  std::lock_guard<std::mutex> lock(scan_mu_);
  Stmt s;
  if (sqlite3_prepare_v2(scanner_, "SELECT COUNT(*) FROM certificates", -1, &s.s, nullptr) != SQLITE_OK) {
    return Unavailable(scanner_, "prepare");
  }
  if (sqlite3_step(s.s) != SQLITE_ROW) return Unavailable(scanner_, "count");
  return sqlite3_column_int64(s.s, 0);
}

absl::StatusOr<StoreStats> SqliteStore::Stats(absl::Time now, const std::vector<absl::Duration>& expiry_bounds) {
  std::lock_guard<std::mutex> lock(scan_mu_);
  StoreStats stats;
  const int64_t now_s = absl::ToUnixSeconds(now);
  if (!expiry_bounds.empty()) {
    // One pass over the unexpired range of certificates_not_after, a sum per bound.
    std::string sql = "SELECT COUNT(*)";
    for (size_t i = 0; i < expiry_bounds.size(); ++i) absl::StrAppend(&sql, ", TOTAL(not_after <= ?", i + 2, ")");
    absl::StrAppend(&sql, " FROM certificates WHERE not_after > ?1");
    Stmt s;
    if (sqlite3_prepare_v2(scanner_, sql.c_str(), -1, &s.s, nullptr) != SQLITE_OK) {
      return Unavailable(scanner_, "prepare");
    }
    sqlite3_bind_int64(s.s, 1, now_s);
    for (size_t i = 0; i < expiry_bounds.size(); ++i) {
      const absl::Duration bound = expiry_bounds[i];
      sqlite3_bind_int64(s.s, static_cast<int>(i) + 2,
                         bound == absl::InfiniteDuration() ? INT64_MAX : absl::ToUnixSeconds(now + bound));
    }
    if (sqlite3_step(s.s) != SQLITE_ROW) return Unavailable(scanner_, "count expiring");
    stats.unexpired = sqlite3_column_int64(s.s, 0);
    for (size_t i = 0; i < expiry_bounds.size(); ++i) {
      stats.expiring.push_back(static_cast<int64_t>(sqlite3_column_double(s.s, static_cast<int>(i) + 1)));
    }
  }
  Stmt s;
  if (sqlite3_prepare_v2(scanner_,
                         "SELECT kind, COUNT(*), MIN(created_us) FROM outbox WHERE completed_us IS NULL "
                         "GROUP BY kind ORDER BY kind",
                         -1, &s.s, nullptr) != SQLITE_OK) {
    return Unavailable(scanner_, "prepare");
  }
  int rc;
  while ((rc = sqlite3_step(s.s)) == SQLITE_ROW) {
    OutboxBacklog b;
    b.kind = ColumnText(s.s, 0);
    b.pending = sqlite3_column_int64(s.s, 1);
    b.oldest_created = absl::FromUnixMicros(sqlite3_column_int64(s.s, 2));
    stats.outbox.push_back(std::move(b));
  }
  if (rc != SQLITE_DONE) return Unavailable(scanner_, "outbox backlog");
  return stats;
}

absl::StatusOr<std::vector<Event>> SqliteStore::ReadAfter(int64_t cursor, int limit) {
  if (limit < 1 || limit > kMaxReadLimit) {
    return absl::InvalidArgumentError(absl::StrCat("store: event read limit ", limit, " is outside 1..",
                                                   kMaxReadLimit));
  }
  std::lock_guard<std::mutex> lock(read_mu_);
  // One read transaction for both queries, so they see the same commits.
  if (sqlite3_exec(reader_, "BEGIN", nullptr, nullptr, nullptr) != SQLITE_OK) return Unavailable(reader_, "begin");
  struct EndRead {
    sqlite3* db;
    ~EndRead() { sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr); }
  } end_read{reader_};
  std::vector<Event> issued, appended;
  for (auto [sql, out] : {std::pair{kReadIssuedAfter, &issued}, std::pair{kReadEventsAfter, &appended}}) {
    Stmt s;
    if (sqlite3_prepare_v2(reader_, sql, -1, &s.s, nullptr) != SQLITE_OK) return Unavailable(reader_, "prepare");
    sqlite3_bind_int64(s.s, 1, cursor);
    sqlite3_bind_int(s.s, 2, limit);
    int rc;
    while ((rc = sqlite3_step(s.s)) == SQLITE_ROW) {
      Event e;
      e.id = sqlite3_column_int64(s.s, 0);
      e.type = ColumnText(s.s, 1);
      e.issuer_id = ColumnText(s.s, 2);
      e.serial_hex = ColumnText(s.s, 3);
      e.station = ColumnText(s.s, 4);
      e.profile = ColumnText(s.s, 5);
      e.time = FromMicros(sqlite3_column_int64(s.s, 6));
      e.data = ColumnText(s.s, 7);
      out->push_back(std::move(e));
    }
    if (rc != SQLITE_DONE) return Unavailable(reader_, "read events");
  }
  std::vector<Event> events;
  events.reserve(std::min<size_t>(limit, issued.size() + appended.size()));
  std::merge(std::make_move_iterator(issued.begin()), std::make_move_iterator(issued.end()),
             std::make_move_iterator(appended.begin()), std::make_move_iterator(appended.end()),
             std::back_inserter(events), [](const Event& a, const Event& b) { return a.id < b.id; });
  if (events.size() > static_cast<size_t>(limit)) events.resize(limit);
  return events;
}

absl::StatusOr<std::vector<int64_t>> SqliteStore::Enqueue(absl::Span<const OutboxItem> items) {
  for (const auto& o : items) LINESIGN_RETURN_IF_ERROR(CheckOutboxItem(o));
  std::vector<int64_t> ids;
  if (items.empty()) return ids;
  std::lock_guard<std::mutex> lock(mu_);
  LINESIGN_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  for (const auto& o : items) {
    auto id = InsertOutbox(o);
    if (!id.ok()) {
      Exec("ROLLBACK").IgnoreError();
      return id.status();
    }
    ids.push_back(*id);
  }
  if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
    absl::Status st = Unavailable(db_, "commit");
    Exec("ROLLBACK").IgnoreError();
    return st;
  }
  return ids;
}

absl::StatusOr<std::vector<OutboxItem>> SqliteStore::Claim(const ClaimRequest& r) {
  if (r.owner.empty()) return absl::InvalidArgumentError("store: an outbox claim needs an owner");
  if (r.limit < 1 || r.limit > kMaxReadLimit) {
    return absl::InvalidArgumentError(absl::StrCat("store: claim limit ", r.limit, " is outside 1..", kMaxReadLimit));
  }
  if (r.lease <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("store: claim lease ", absl::FormatDuration(r.lease), " is not positive"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  Using u(claim_);
  BindText(u.s, 1, r.owner);
  sqlite3_bind_int64(u.s, 2, Micros(r.now + r.lease));
  sqlite3_bind_int64(u.s, 3, Micros(r.now));
  BindText(u.s, 4, r.kind);
  sqlite3_bind_int(u.s, 5, r.limit);
  std::vector<OutboxItem> items;
  int rc;
  while ((rc = sqlite3_step(u.s)) == SQLITE_ROW) items.push_back(ReadOutbox(u.s));
  if (rc != SQLITE_DONE) return Unavailable(db_, "claim outbox items");
  // RETURNING gives no order.
  std::sort(items.begin(), items.end(), [](const OutboxItem& a, const OutboxItem& b) {
    return std::tie(a.next_attempt_at, a.id) < std::tie(b.next_attempt_at, b.id);
  });
  return items;
}

absl::Status SqliteStore::ReleaseLease(sqlite3_stmt* update, int64_t id, const std::string& owner,
                                       absl::string_view what) {
  if (sqlite3_step(update) != SQLITE_DONE) return Unavailable(db_, what);
  if (sqlite3_changes(db_) == 1) return absl::OkStatus();
  Stmt s;
  if (sqlite3_prepare_v2(db_, "SELECT lease_owner, completed_us IS NOT NULL FROM outbox WHERE id = ?1", -1, &s.s,
                         nullptr) != SQLITE_OK) {
    return Unavailable(db_, "prepare");
  }
  sqlite3_bind_int64(s.s, 1, id);
  int rc = sqlite3_step(s.s);
  if (rc == SQLITE_DONE) return absl::NotFoundError(absl::StrCat("store: no outbox item ", id));
  if (rc != SQLITE_ROW) return Unavailable(db_, what);
  std::string holder = ColumnText(s.s, 0);
  std::string state = sqlite3_column_int(s.s, 1) != 0 ? "it is already complete"
                      : holder.empty()                 ? "nobody holds it"
                                                       : absl::StrCat("'", holder, "' holds it");
  return absl::FailedPreconditionError(absl::StrCat("store: cannot ", what, " outbox item ", id, ": '", owner,
                                                    "' does not hold its lease (", state, ")"));
}

absl::Status SqliteStore::Complete(int64_t id, const std::string& owner, absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  Using u(complete_);
  sqlite3_bind_int64(u.s, 1, id);
  BindText(u.s, 2, owner);
  sqlite3_bind_int64(u.s, 3, Micros(now));
  return ReleaseLease(u.s, id, owner, "complete");
}

absl::Status SqliteStore::Reschedule(int64_t id, const std::string& owner, absl::Time next_attempt_at,
                                     const std::string& last_error) {
  std::lock_guard<std::mutex> lock(mu_);
  Using u(reschedule_);
  sqlite3_bind_int64(u.s, 1, id);
  BindText(u.s, 2, owner);
  sqlite3_bind_int64(u.s, 3, Micros(next_attempt_at));
  BindText(u.s, 4, last_error);
  return ReleaseLease(u.s, id, owner, "reschedule");
}

}  // namespace linesign::store

// ---- Revocation and CRLs (revocation_store.h) ----

namespace linesign::store {

absl::StatusOr<RevokeResult> SqliteStore::Revoke(const RevokeRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  // IMMEDIATE: the look-up and the update see the same row, whoever else (another process) revokes it meanwhile.
  LINESIGN_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto fail = [&](absl::Status st) {
    Exec("ROLLBACK").IgnoreError();
    return st;
  };
  RevokeResult result;
  {
    Stmt s;
    std::string sql = absl::StrCat("SELECT ", kColumns, " FROM certificates WHERE issuer_id = ?1 AND serial = ?2");
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s.s, nullptr) != SQLITE_OK) return fail(Unavailable(db_, "prepare"));
    BindText(s.s, 1, request.issuer_id);
    BindText(s.s, 2, request.serial_hex);
    int rc = sqlite3_step(s.s);
    if (rc == SQLITE_DONE) {
      return fail(absl::NotFoundError(
          absl::StrCat("store: no certificate with serial ", request.serial_hex, " from this issuer")));
    }
    if (rc != SQLITE_ROW) return fail(Unavailable(db_, "revoke: look-up"));
    result.record = ReadCertificate(s.s);
  }
  if (result.record.status == CertificateStatus::kRevoked) {
    Exec("ROLLBACK").IgnoreError();
    result.already_revoked = true;
    return result;
  }
  const int64_t at = absl::ToUnixSeconds(request.at);
  {
    Stmt s;
    if (sqlite3_prepare_v2(db_,
                           "UPDATE certificates SET status = 'revoked', revoked_at = ?2, revocation_reason = ?3 "
                           "WHERE id = ?1",
                           -1, &s.s, nullptr) != SQLITE_OK) {
      return fail(Unavailable(db_, "prepare"));
    }
    sqlite3_bind_int64(s.s, 1, result.record.id);
    sqlite3_bind_int64(s.s, 2, at);
    sqlite3_bind_int(s.s, 3, request.reason);
    if (sqlite3_step(s.s) != SQLITE_DONE) return fail(Unavailable(db_, "revoke"));
  }
  Event event{.type = kEventRevoked,
              .issuer_id = request.issuer_id,
              .serial_hex = result.record.serial_hex,
              .station = result.record.station,
              .profile = result.record.profile,
              .time = request.at,
              .data = request.data};
  if (auto st = InsertEvent(event); !st.ok()) return fail(st);
  {
    Stmt s;
    if (sqlite3_prepare_v2(db_,
                           "INSERT INTO crl_state (issuer_id, revocations) VALUES (?1, 1) "
                           "ON CONFLICT (issuer_id) DO UPDATE SET revocations = revocations + 1",
                           -1, &s.s, nullptr) != SQLITE_OK) {
      return fail(Unavailable(db_, "prepare"));
    }
    BindText(s.s, 1, request.issuer_id);
    if (sqlite3_step(s.s) != SQLITE_DONE) return fail(Unavailable(db_, "count the revocation"));
  }
  if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) return fail(Unavailable(db_, "commit"));
  result.record.status = CertificateStatus::kRevoked;
  result.record.revoked_at = at;
  result.record.revocation_reason = request.reason;
  return result;
}

namespace {

// ReadRevoked appends the revoked certificates of `issuer_id` (on `db`, inside the caller's transaction).
absl::Status ReadRevoked(sqlite3* db, const std::string& issuer_id, std::vector<RevokedEntry>* out) {
  Stmt s;
  // status = 'revoked' literally, so the partial index certificates_revoked is used.
  if (sqlite3_prepare_v2(db,
                         "SELECT serial, revoked_at, revocation_reason FROM certificates "
                         "WHERE issuer_id = ?1 AND status = 'revoked'",
                         -1, &s.s, nullptr) != SQLITE_OK) {
    return Unavailable(db, "prepare");
  }
  BindText(s.s, 1, issuer_id);
  int rc;
  while ((rc = sqlite3_step(s.s)) == SQLITE_ROW) {
    out->push_back(RevokedEntry{.serial_hex = ColumnText(s.s, 0),
                                .revoked_at = sqlite3_column_int64(s.s, 1),
                                .reason = sqlite3_column_int(s.s, 2)});
  }
  if (rc != SQLITE_DONE) return Unavailable(db, "read the revoked certificates");
  return absl::OkStatus();
}

absl::StatusOr<int64_t> RevocationCount(sqlite3* db, const std::string& issuer_id) {
  Stmt s;
  if (sqlite3_prepare_v2(db, "SELECT revocations FROM crl_state WHERE issuer_id = ?1", -1, &s.s, nullptr) !=
      SQLITE_OK) {
    return Unavailable(db, "prepare");
  }
  BindText(s.s, 1, issuer_id);
  int rc = sqlite3_step(s.s);
  if (rc == SQLITE_DONE) return 0;
  if (rc != SQLITE_ROW) return Unavailable(db, "read the revocation count");
  return sqlite3_column_int64(s.s, 0);
}

}  // namespace

absl::StatusOr<CrlSnapshot> SqliteStore::BeginCrl(const std::string& issuer_id) {
  // The revoked certificates are read first in a read transaction on the scan connection (100,000 of them take
  // ~100 ms: bench/README.md), so the writer — the issuing path — is not held for that long. The number is then
  // allocated under the write lock, where the revocation count is read again: unchanged, the snapshot is exactly
  // the state the number was allocated in; changed (a revocation came in between), the list is read again under
  // the write lock. Either way a higher number never lists fewer revocations.
  CrlSnapshot snap;
  int64_t snapshot_count = -1;
  {
    std::lock_guard<std::mutex> lock(scan_mu_);
    if (sqlite3_exec(scanner_, "BEGIN", nullptr, nullptr, nullptr) != SQLITE_OK) {
      return Unavailable(scanner_, "begin the CRL snapshot");
    }
    auto count = RevocationCount(scanner_, issuer_id);
    absl::Status st = count.ok() ? ReadRevoked(scanner_, issuer_id, &snap.entries) : count.status();
    sqlite3_exec(scanner_, "COMMIT", nullptr, nullptr, nullptr);
    if (!st.ok()) return st;
    snapshot_count = *count;
  }
  std::lock_guard<std::mutex> lock(mu_);
  LINESIGN_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto fail = [&](absl::Status st) {
    Exec("ROLLBACK").IgnoreError();
    return st;
  };
  {
    Stmt s;
    if (sqlite3_prepare_v2(db_,
                           "INSERT INTO crl_state (issuer_id, last_number) VALUES (?1, 1) "
                           "ON CONFLICT (issuer_id) DO UPDATE SET last_number = last_number + 1 "
                           "RETURNING last_number, revocations",
                           -1, &s.s, nullptr) != SQLITE_OK) {
      return fail(Unavailable(db_, "prepare"));
    }
    BindText(s.s, 1, issuer_id);
    if (sqlite3_step(s.s) != SQLITE_ROW) return fail(Unavailable(db_, "allocate a CRL number"));
    snap.number = sqlite3_column_int64(s.s, 0);
    snap.revocations = sqlite3_column_int64(s.s, 1);
    if (sqlite3_step(s.s) != SQLITE_DONE) return fail(Unavailable(db_, "allocate a CRL number"));
  }
  if (snap.revocations != snapshot_count) {
    snap.entries.clear();
    if (auto st = ReadRevoked(db_, issuer_id, &snap.entries); !st.ok()) return fail(st);
  }
  if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) return fail(Unavailable(db_, "commit"));
  return snap;
}

absl::StatusOr<bool> SqliteStore::SaveCrl(const std::string& issuer_id, const StoredCrl& crl) {
  std::lock_guard<std::mutex> lock(mu_);
  LINESIGN_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto fail = [&](absl::Status st) {
    Exec("ROLLBACK").IgnoreError();
    return st;
  };
  {
    Stmt s;
    if (sqlite3_prepare_v2(db_, "SELECT 1 FROM crls WHERE issuer_id = ?1 AND number >= ?2", -1, &s.s, nullptr) !=
        SQLITE_OK) {
      return fail(Unavailable(db_, "prepare"));
    }
    BindText(s.s, 1, issuer_id);
    sqlite3_bind_int64(s.s, 2, crl.number);
    int rc = sqlite3_step(s.s);
    if (rc == SQLITE_ROW) {
      Exec("ROLLBACK").IgnoreError();
      return false;
    }
    if (rc != SQLITE_DONE) return fail(Unavailable(db_, "save the CRL"));
  }
  {
    Stmt s;
    if (sqlite3_prepare_v2(db_,
                           "INSERT INTO crls (issuer_id, number, revocations, this_update_us, next_update_us, der) "
                           "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                           -1, &s.s, nullptr) != SQLITE_OK) {
      return fail(Unavailable(db_, "prepare"));
    }
    BindText(s.s, 1, issuer_id);
    sqlite3_bind_int64(s.s, 2, crl.number);
    sqlite3_bind_int64(s.s, 3, crl.revocations);
    sqlite3_bind_int64(s.s, 4, Micros(crl.this_update));
    sqlite3_bind_int64(s.s, 5, Micros(crl.next_update));
    BindBlob(s.s, 6, crl.der);
    if (sqlite3_step(s.s) != SQLITE_DONE) return fail(Unavailable(db_, "save the CRL"));
  }
  {
    Stmt s;
    if (sqlite3_prepare_v2(db_, "DELETE FROM crls WHERE issuer_id = ?1 AND number < ?2", -1, &s.s, nullptr) !=
        SQLITE_OK) {
      return fail(Unavailable(db_, "prepare"));
    }
    BindText(s.s, 1, issuer_id);
    sqlite3_bind_int64(s.s, 2, crl.number);
    if (sqlite3_step(s.s) != SQLITE_DONE) return fail(Unavailable(db_, "drop older CRLs"));
  }
  if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) return fail(Unavailable(db_, "commit"));
  return true;
}

absl::StatusOr<CrlState> SqliteStore::GetCrlState(const std::string& issuer_id) {
  std::lock_guard<std::mutex> lock(read_mu_);
  Stmt s;
  if (sqlite3_prepare_v2(reader_,
                         "SELECT (SELECT revocations FROM crl_state WHERE issuer_id = ?1), "
                         "(SELECT MAX(number) FROM crls WHERE issuer_id = ?1)",
                         -1, &s.s, nullptr) != SQLITE_OK) {
    return Unavailable(reader_, "prepare");
  }
  BindText(s.s, 1, issuer_id);
  if (sqlite3_step(s.s) != SQLITE_ROW) return Unavailable(reader_, "read the CRL state");
  return CrlState{.revocations = sqlite3_column_int64(s.s, 0), .latest_number = sqlite3_column_int64(s.s, 1)};
}

absl::StatusOr<std::optional<StoredCrl>> SqliteStore::LatestCrl(const std::string& issuer_id) {
  std::lock_guard<std::mutex> lock(read_mu_);
  Stmt s;
  if (sqlite3_prepare_v2(reader_,
                         "SELECT number, revocations, this_update_us, next_update_us, der FROM crls "
                         "WHERE issuer_id = ?1 ORDER BY number DESC LIMIT 1",
                         -1, &s.s, nullptr) != SQLITE_OK) {
    return Unavailable(reader_, "prepare");
  }
  BindText(s.s, 1, issuer_id);
  int rc = sqlite3_step(s.s);
  if (rc == SQLITE_DONE) return std::optional<StoredCrl>();
  if (rc != SQLITE_ROW) return Unavailable(reader_, "read the latest CRL");
  return std::optional<StoredCrl>(StoredCrl{.number = sqlite3_column_int64(s.s, 0),
                                            .revocations = sqlite3_column_int64(s.s, 1),
                                            .this_update = FromMicros(sqlite3_column_int64(s.s, 2)),
                                            .next_update = FromMicros(sqlite3_column_int64(s.s, 3)),
                                            .der = ColumnText(s.s, 4)});
}

}  // namespace linesign::store

// ---- The webhook's delivery cursor (cursor_store.h) ----

namespace linesign::store {
namespace {

// One upsert: a new cursor starts at 0 under the caller's lease; an existing one changes hands only when free,
// expired or already the caller's. RETURNING gives no row when another owner holds it.
constexpr const char* kTakeCursor =
    "INSERT INTO webhook_cursor (name, cursor, lease_owner, lease_until_us) VALUES (?1, 0, ?2, ?3) "
    "ON CONFLICT (name) DO UPDATE SET lease_owner = excluded.lease_owner, lease_until_us = excluded.lease_until_us "
    "WHERE lease_owner IS NULL OR lease_owner = excluded.lease_owner OR lease_until_us <= ?4 RETURNING cursor";
constexpr const char* kAdvanceCursor =
    "UPDATE webhook_cursor SET cursor = ?3, lease_until_us = ?4 WHERE name = ?1 AND lease_owner = ?2 AND cursor < ?3";
constexpr const char* kReleaseCursor =
    "UPDATE webhook_cursor SET lease_owner = NULL, lease_until_us = 0 WHERE name = ?1 AND lease_owner = ?2";

}  // namespace

absl::StatusOr<std::optional<int64_t>> SqliteStore::TakeCursor(const std::string& name, const std::string& owner,
                                                               absl::Time now, absl::Duration lease) {
  LINESIGN_RETURN_IF_ERROR(CheckCursorLease(name, owner, lease));
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s;
  if (sqlite3_prepare_v2(db_, kTakeCursor, -1, &s.s, nullptr) != SQLITE_OK) return Unavailable(db_, "prepare");
  BindText(s.s, 1, name);
  BindText(s.s, 2, owner);
  sqlite3_bind_int64(s.s, 3, Micros(now + lease));
  sqlite3_bind_int64(s.s, 4, Micros(now));
  int rc = sqlite3_step(s.s);
  if (rc == SQLITE_DONE) return std::optional<int64_t>();
  if (rc != SQLITE_ROW) return Unavailable(db_, "take the delivery cursor");
  int64_t cursor = sqlite3_column_int64(s.s, 0);
  if (sqlite3_step(s.s) != SQLITE_DONE) return Unavailable(db_, "take the delivery cursor");
  return std::optional<int64_t>(cursor);
}

absl::Status SqliteStore::AdvanceCursor(const std::string& name, const std::string& owner, int64_t cursor,
                                        absl::Time now, absl::Duration lease) {
  LINESIGN_RETURN_IF_ERROR(CheckCursorLease(name, owner, lease));
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s;
  if (sqlite3_prepare_v2(db_, kAdvanceCursor, -1, &s.s, nullptr) != SQLITE_OK) return Unavailable(db_, "prepare");
  BindText(s.s, 1, name);
  BindText(s.s, 2, owner);
  sqlite3_bind_int64(s.s, 3, cursor);
  sqlite3_bind_int64(s.s, 4, Micros(now + lease));
  if (sqlite3_step(s.s) != SQLITE_DONE) return Unavailable(db_, "advance the delivery cursor");
  if (sqlite3_changes(db_) == 1) return absl::OkStatus();
  Stmt q;
  if (sqlite3_prepare_v2(db_, "SELECT lease_owner, cursor FROM webhook_cursor WHERE name = ?1", -1, &q.s,
                         nullptr) != SQLITE_OK) {
    return Unavailable(db_, "prepare");
  }
  BindText(q.s, 1, name);
  int rc = sqlite3_step(q.s);
  if (rc == SQLITE_DONE) return absl::FailedPreconditionError(absl::StrCat("store: no delivery cursor '", name, "'"));
  if (rc != SQLITE_ROW) return Unavailable(db_, "advance the delivery cursor");
  std::string holder = ColumnText(q.s, 0);
  if (holder != owner) {
    return absl::FailedPreconditionError(
        absl::StrCat("store: cannot advance delivery cursor '", name, "': '", owner, "' does not hold its lease (",
                     holder.empty() ? std::string("nobody holds it") : absl::StrCat("'", holder, "' holds it"), ")"));
  }
  return absl::FailedPreconditionError(absl::StrCat("store: cannot move delivery cursor '", name, "' from ",
                                                    sqlite3_column_int64(q.s, 1), " to ", cursor,
                                                    ": it only moves forward"));
}

absl::Status SqliteStore::ReleaseCursor(const std::string& name, const std::string& owner) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s;
  if (sqlite3_prepare_v2(db_, kReleaseCursor, -1, &s.s, nullptr) != SQLITE_OK) return Unavailable(db_, "prepare");
  BindText(s.s, 1, name);
  BindText(s.s, 2, owner);
  if (sqlite3_step(s.s) != SQLITE_DONE) return Unavailable(db_, "release the delivery cursor");
  return absl::OkStatus();
}

}  // namespace linesign::store

// ---- AWS IoT registrations (iot_registration_store.h) ----

namespace linesign::store {
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

IotRegistration ReadIot(sqlite3_stmt* s) {
  IotRegistration r;
  r.key = IotRegistrationKey{ColumnText(s, 0), ColumnText(s, 1), ColumnText(s, 2)};
  r.state = ParseIotState(ColumnText(s, 3));
  r.progress = ColumnText(s, 4);
  r.certificate_id = ColumnText(s, 5);
  r.certificate_arn = ColumnText(s, 6);
  r.thing_name = ColumnText(s, 7);
  r.policy = ColumnText(s, 8);
  r.already_present = sqlite3_column_int(s, 9) != 0;
  r.error_code = ColumnText(s, 10);
  r.error_message = ColumnText(s, 11);
  r.attempts = sqlite3_column_int(s, 12);
  r.updated_at = FromMicros(sqlite3_column_int64(s, 13));
  return r;
}

}  // namespace

absl::StatusOr<std::optional<IotRegistration>> SqliteStore::GetIotRegistration(const IotRegistrationKey& key) {
  std::lock_guard<std::mutex> lock(read_mu_);
  Stmt s;
  const std::string sql =
      absl::StrCat("SELECT ", kIotColumns, " FROM iot_registrations WHERE issuer_id = ?1 AND serial = ?2 AND target = ?3");
  if (sqlite3_prepare_v2(reader_, sql.c_str(), -1, &s.s, nullptr) != SQLITE_OK) return Unavailable(reader_, "prepare");
  BindText(s.s, 1, key.issuer_id);
  BindText(s.s, 2, key.serial_hex);
  BindText(s.s, 3, key.target);
  int rc = sqlite3_step(s.s);
  if (rc == SQLITE_DONE) return std::optional<IotRegistration>();
  if (rc != SQLITE_ROW) return Unavailable(reader_, "read the AWS IoT registration");
  return std::optional<IotRegistration>(ReadIot(s.s));
}

absl::StatusOr<std::vector<IotRegistration>> SqliteStore::ListIotRegistrations(const IotRegistrationQuery& q) {
  if (q.limit < 1 || q.limit > kMaxReadLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("store: AWS IoT registration list limit ", q.limit, " is outside 1..", kMaxReadLimit));
  }
  if (q.target.empty()) return absl::InvalidArgumentError("store: an AWS IoT registration list needs a target");
  std::lock_guard<std::mutex> lock(scan_mu_);
  Stmt s;
  const std::string sql = absl::StrCat(
      "SELECT ", kIotColumns, " FROM iot_registrations WHERE target = ?1 AND (?2 = '' OR state = ?2) ",
      "AND serial > ?3 AND (?4 = '' OR issuer_id = ?4) ORDER BY serial LIMIT ?5");
  if (sqlite3_prepare_v2(scanner_, sql.c_str(), -1, &s.s, nullptr) != SQLITE_OK) return Unavailable(scanner_, "prepare");
  const std::string state = q.state.has_value() ? IotRegistrationStateName(*q.state) : "";
  BindText(s.s, 1, q.target);
  BindText(s.s, 2, state);
  BindText(s.s, 3, q.after_serial);
  BindText(s.s, 4, q.issuer_id);
  sqlite3_bind_int(s.s, 5, q.limit);
  std::vector<IotRegistration> out;
  int rc;
  while ((rc = sqlite3_step(s.s)) == SQLITE_ROW) out.push_back(ReadIot(s.s));
  if (rc != SQLITE_DONE) return Unavailable(scanner_, "list AWS IoT registrations");
  return out;
}

absl::StatusOr<std::vector<IotTargetCounts>> SqliteStore::CountIotRegistrations() {
  std::lock_guard<std::mutex> lock(scan_mu_);
  Stmt s;
  if (sqlite3_prepare_v2(scanner_,
                         "SELECT target, state, CASE state WHEN 'failed' THEN error_code ELSE '' END, COUNT(*) "
                         "FROM iot_registrations GROUP BY 1, 2, 3 ORDER BY 1",
                         -1, &s.s, nullptr) != SQLITE_OK) {
    return Unavailable(scanner_, "prepare");
  }
  std::vector<IotTargetCounts> out;
  int rc;
  while ((rc = sqlite3_step(s.s)) == SQLITE_ROW) {
    std::string target = ColumnText(s.s, 0);
    if (out.empty() || out.back().target != target) out.push_back(IotTargetCounts{.target = target});
    IotTargetCounts& c = out.back();
    const int64_t n = sqlite3_column_int64(s.s, 3);
    switch (ParseIotState(ColumnText(s.s, 1))) {
      case IotRegistrationState::kPending:
        c.pending += n;
        break;
      case IotRegistrationState::kRegistered:
        c.registered += n;
        break;
      case IotRegistrationState::kFailed:
        c.failed += n;
        c.failed_by_code[ColumnText(s.s, 2)] += n;
        break;
    }
  }
  if (rc != SQLITE_DONE) return Unavailable(scanner_, "count AWS IoT registrations");
  return out;
}

absl::StatusOr<IotEnqueueResult> SqliteStore::EnqueueIotRegistrations(const std::string& issuer_id,
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
  IotEnqueueResult result;
  std::vector<std::string> unique(serials.begin(), serials.end());
  std::sort(unique.begin(), unique.end());
  unique.erase(std::unique(unique.begin(), unique.end()), unique.end());
  if (unique.empty()) return result;
  std::lock_guard<std::mutex> lock(mu_);
  LINESIGN_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto fail = [&](absl::Status st) {
    Exec("ROLLBACK").IgnoreError();
    return st;
  };
  Stmt known, state;
  if (sqlite3_prepare_v2(db_, "SELECT 1 FROM certificates WHERE issuer_id = ?1 AND serial = ?2", -1, &known.s,
                         nullptr) != SQLITE_OK ||
      sqlite3_prepare_v2(db_,
                         "SELECT state FROM iot_registrations WHERE issuer_id = ?1 AND serial = ?2 AND target = ?3",
                         -1, &state.s, nullptr) != SQLITE_OK) {
    return fail(Unavailable(db_, "prepare"));
  }
  for (const std::string& serial : unique) {
    sqlite3_reset(known.s);
    BindText(known.s, 1, issuer_id);
    BindText(known.s, 2, serial);
    int rc = sqlite3_step(known.s);
    if (rc == SQLITE_DONE) {
      ++result.unknown_serial;
      continue;
    }
    if (rc != SQLITE_ROW) return fail(Unavailable(db_, "look up a certificate"));
    sqlite3_reset(state.s);
    BindText(state.s, 1, issuer_id);
    BindText(state.s, 2, serial);
    BindText(state.s, 3, target);
    rc = sqlite3_step(state.s);
    if (rc == SQLITE_ROW) {
      const IotRegistrationState st = ParseIotState(ColumnText(state.s, 0));
      if (st == IotRegistrationState::kRegistered) {
        ++result.already_registered;
        continue;
      }
      if (st == IotRegistrationState::kPending) {
        ++result.already_pending;
        continue;
      }
    } else if (rc != SQLITE_DONE) {
      return fail(Unavailable(db_, "read an AWS IoT registration"));
    }
    sqlite3_reset(state.s);
    auto id = InsertOutbox(IotRegisterItem(IotRegistrationKey{issuer_id, serial, target}, now));
    if (!id.ok()) return fail(id.status());
    ++result.enqueued;
  }
  sqlite3_reset(known.s);
  sqlite3_reset(state.s);
  if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) return fail(Unavailable(db_, "commit"));
  return result;
}

absl::Status SqliteStore::WriteIotRow(const IotRegistrationWrite& w, IotRegistrationState state, int add_attempts) {
  const IotRegistration& r = w.registration;
  Stmt s;
  if (sqlite3_prepare_v2(db_,
                         "UPDATE iot_registrations SET state = ?4, progress = ?5, certificate_id = ?6, "
                         "certificate_arn = ?7, thing_name = ?8, policy = ?9, already_present = ?10, "
                         "error_code = ?11, error_message = ?12, attempts = attempts + ?13, updated_us = ?14 "
                         "WHERE issuer_id = ?1 AND serial = ?2 AND target = ?3",
                         -1, &s.s, nullptr) != SQLITE_OK) {
    return Unavailable(db_, "prepare");
  }
  BindText(s.s, 1, r.key.issuer_id);
  BindText(s.s, 2, r.key.serial_hex);
  BindText(s.s, 3, r.key.target);
  sqlite3_bind_text(s.s, 4, IotRegistrationStateName(state), -1, SQLITE_STATIC);
  BindText(s.s, 5, r.progress);
  BindText(s.s, 6, r.certificate_id);
  BindText(s.s, 7, r.certificate_arn);
  BindText(s.s, 8, r.thing_name);
  BindText(s.s, 9, r.policy);
  sqlite3_bind_int(s.s, 10, r.already_present ? 1 : 0);
  BindText(s.s, 11, r.error_code);
  BindText(s.s, 12, r.error_message);
  sqlite3_bind_int(s.s, 13, add_attempts);
  sqlite3_bind_int64(s.s, 14, Micros(w.now));
  if (sqlite3_step(s.s) != SQLITE_DONE) return Unavailable(db_, "write the AWS IoT registration");
  if (sqlite3_changes(db_) != 1) {
    return absl::NotFoundError(absl::StrCat("store: no AWS IoT registration of ", r.key.serial_hex, " with target '",
                                            r.key.target, "'"));
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::SaveIotProgress(const IotRegistrationWrite& w, absl::Duration lease) {
  LINESIGN_RETURN_IF_ERROR(CheckIotWrite(w));
  if (lease <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("store: lease ", absl::FormatDuration(lease), " is not positive"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  LINESIGN_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto fail = [&](absl::Status st) {
    Exec("ROLLBACK").IgnoreError();
    return st;
  };
  {
    Stmt renew;
    if (sqlite3_prepare_v2(db_,
                           "UPDATE outbox SET lease_until_us = ?3 WHERE id = ?1 AND lease_owner = ?2 "
                           "AND completed_us IS NULL",
                           -1, &renew.s, nullptr) != SQLITE_OK) {
      return fail(Unavailable(db_, "prepare"));
    }
    sqlite3_bind_int64(renew.s, 1, w.outbox_id);
    BindText(renew.s, 2, w.owner);
    sqlite3_bind_int64(renew.s, 3, Micros(w.now + lease));
    if (auto st = ReleaseLease(renew.s, w.outbox_id, w.owner, "save the progress of"); !st.ok()) return fail(st);
  }
  if (auto st = WriteIotRow(w, IotRegistrationState::kPending, 0); !st.ok()) return fail(st);
  if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) return fail(Unavailable(db_, "commit"));
  return absl::OkStatus();
}

absl::Status SqliteStore::FinishIotRegistration(const IotRegistrationWrite& w, const Event& event) {
  LINESIGN_RETURN_IF_ERROR(CheckIotWrite(w));
  LINESIGN_RETURN_IF_ERROR(CheckEvent(event));
  const IotRegistrationState state = w.registration.state;
  if (state == IotRegistrationState::kPending) {
    return absl::InvalidArgumentError("store: a finished AWS IoT registration is registered or failed, not pending");
  }
  std::lock_guard<std::mutex> lock(mu_);
  LINESIGN_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto fail = [&](absl::Status st) {
    Exec("ROLLBACK").IgnoreError();
    return st;
  };
  {
    Using u(complete_);
    sqlite3_bind_int64(u.s, 1, w.outbox_id);
    BindText(u.s, 2, w.owner);
    sqlite3_bind_int64(u.s, 3, Micros(w.now));
    if (auto st = ReleaseLease(u.s, w.outbox_id, w.owner, "complete"); !st.ok()) return fail(st);
  }
  if (auto st = WriteIotRow(w, state, state == IotRegistrationState::kFailed ? 1 : 0); !st.ok()) return fail(st);
  if (auto st = InsertEvent(event); !st.ok()) return fail(st);
  if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) return fail(Unavailable(db_, "commit"));
  return absl::OkStatus();
}

absl::Status SqliteStore::RetryIotRegistration(const IotRegistrationWrite& w, absl::Time next_attempt_at) {
  LINESIGN_RETURN_IF_ERROR(CheckIotWrite(w));
  std::lock_guard<std::mutex> lock(mu_);
  LINESIGN_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto fail = [&](absl::Status st) {
    Exec("ROLLBACK").IgnoreError();
    return st;
  };
  {
    Using u(reschedule_);
    sqlite3_bind_int64(u.s, 1, w.outbox_id);
    BindText(u.s, 2, w.owner);
    sqlite3_bind_int64(u.s, 3, Micros(next_attempt_at));
    const std::string last_error = absl::StrCat(w.registration.error_code, ": ", w.registration.error_message);
    BindText(u.s, 4, last_error);
    if (auto st = ReleaseLease(u.s, w.outbox_id, w.owner, "reschedule"); !st.ok()) return fail(st);
  }
  if (auto st = WriteIotRow(w, IotRegistrationState::kPending, 1); !st.ok()) return fail(st);
  if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) return fail(Unavailable(db_, "commit"));
  return absl::OkStatus();
}

}  // namespace linesign::store
