#include "server/store/sqlite/sqlite_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "common/utf8.h"
#include "nlohmann/json.hpp"

namespace linesign::store {
namespace {

constexpr int kSchemaVersion = 1;

constexpr const char* kSchema = R"sql(
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

constexpr const char* kColumns =
    "issuer_id, serial, subject, sans, not_before, not_after, spki_sha256, csr_sha256, station, profile, "
    "request_id, der, issued_at";

struct Stmt {
  sqlite3_stmt* s = nullptr;
  ~Stmt() { sqlite3_finalize(s); }
};

void BindText(sqlite3_stmt* s, int i, const std::string& v) {
  sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
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

CertificateRecord ReadRow(sqlite3_stmt* s) {
  CertificateRecord r;
  r.issuer_id = ColumnText(s, 0);
  r.serial_hex = ColumnText(s, 1);
  r.subject = ColumnText(s, 2);
  r.sans = DecodeSans(ColumnText(s, 3));
  r.not_before = sqlite3_column_int64(s, 4);
  r.not_after = sqlite3_column_int64(s, 5);
  r.spki_sha256 = ColumnText(s, 6);
  r.csr_sha256 = ColumnText(s, 7);
  r.station = ColumnText(s, 8);
  r.profile = ColumnText(s, 9);
  r.request_id = ColumnText(s, 10);
  r.der = ColumnText(s, 11);
  r.issued_at = sqlite3_column_int64(s, 12);
  return r;
}

absl::Status Unavailable(sqlite3* db, absl::string_view what) {
  return absl::UnavailableError(absl::StrCat("store: ", what, ": ", sqlite3_errmsg(db)));
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

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& path) {
  LINESIGN_RETURN_IF_ERROR(PrepareFileModes(path));
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("store.sqlite.path ", path, ": ", msg));
  }
  std::unique_ptr<SqliteStore> store(new SqliteStore(db));
  sqlite3_busy_timeout(db, 5000);
  sqlite3_extended_result_codes(db, 1);
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA foreign_keys=ON"}) {
    if (auto st = store->Exec(pragma); !st.ok()) {
      return absl::UnavailableError(absl::StrCat("store.sqlite.path ", path, ": ", st.message()));
    }
  }
  int version = 0;
  {
    Stmt s;
    sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s.s, nullptr);
    if (sqlite3_step(s.s) == SQLITE_ROW) version = sqlite3_column_int(s.s, 0);
  }
  if (version > kSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat("store.sqlite.path ", path, ": schema version ", version,
                                                      " is newer than this server's (", kSchemaVersion, ")"));
  }
  if (version < kSchemaVersion) {
    if (auto st = store->Exec(kSchema); !st.ok()) {
      return absl::UnavailableError(absl::StrCat("store.sqlite.path ", path, ": ", st.message()));
    }
    LINESIGN_RETURN_IF_ERROR(store->Exec(absl::StrCat("PRAGMA user_version=", kSchemaVersion).c_str()));
  }
  rc = sqlite3_open_v2(path.c_str(), &store->reader_, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    return absl::UnavailableError(absl::StrCat("store.sqlite.path ", path, ": ", sqlite3_errmsg(store->reader_)));
  }
  sqlite3_busy_timeout(store->reader_, 5000);
  sqlite3_extended_result_codes(store->reader_, 1);

  sqlite3* ck = nullptr;
  rc = sqlite3_open_v2(path.c_str(), &ck, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = ck != nullptr ? sqlite3_errmsg(ck) : sqlite3_errstr(rc);
    sqlite3_close(ck);
    return absl::UnavailableError(absl::StrCat("store.sqlite.path ", path, ": ", msg));
  }
  sqlite3_busy_timeout(ck, 5000);
  sqlite3_exec(ck, "PRAGMA synchronous=FULL", nullptr, nullptr, nullptr);  // the checkpoint's fsync
  // Replaces SQLite's automatic checkpoint in the committing connection.
  sqlite3_wal_hook(store->db_, &SqliteStore::OnWalCommit, store.get());
  store->checkpointer_ = std::thread([s = store.get(), ck] { s->CheckpointLoop(ck); });
  return store;
}

SqliteStore::~SqliteStore() {
  if (checkpointer_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(ck_mu_);
      stop_ = true;
    }
    ck_cv_.notify_one();
    checkpointer_.join();
  }
  sqlite3_close(reader_);
  sqlite3_close(db_);  // the last connection: SQLite checkpoints the rest and removes the WAL
}

int SqliteStore::OnWalCommit(void* self, sqlite3*, const char*, int pages) {
  if (pages >= kCheckpointPages) {
    auto* store = static_cast<SqliteStore*>(self);
    {
      std::lock_guard<std::mutex> lock(store->ck_mu_);
      store->ck_wanted_ = true;
    }
    store->ck_cv_.notify_one();
  }
  return SQLITE_OK;
}

void SqliteStore::CheckpointLoop(sqlite3* db) {
  std::unique_lock<std::mutex> lock(ck_mu_);
  while (true) {
    ck_cv_.wait(lock, [this] { return ck_wanted_ || stop_; });
    if (stop_) break;
    ck_wanted_ = false;
    lock.unlock();
    // PASSIVE: copies what it can without waiting for the writer or readers; commits go on meanwhile. What it
    // cannot copy now is copied by the next one.
    int log = 0, done = 0;
    int rc = sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
    lock.lock();
    if (rc == SQLITE_OK) ++checkpoints_;
  }
  lock.unlock();
  sqlite3_close(db);
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

absl::StatusOr<std::vector<RecordOutcome>> SqliteStore::RecordBatch(absl::Span<const CertificateRecord> records) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<RecordOutcome> outcomes(records.size(), RecordOutcome::kRecorded);
  if (records.empty()) return outcomes;
  // IMMEDIATE takes the write lock now, so the duplicate checks below see every committed row.
  LINESIGN_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto fail = [&](absl::string_view what) {
    absl::Status st = Unavailable(db_, what);
    Exec("ROLLBACK").IgnoreError();
    return st;
  };
  Stmt dup, ins;
  if (sqlite3_prepare_v2(db_, "SELECT 1 FROM certificates WHERE station = ?1 AND request_id = ?2", -1, &dup.s,
                         nullptr) != SQLITE_OK) {
    return fail("prepare");
  }
  std::string insert = absl::StrCat("INSERT INTO certificates (", kColumns,
                                    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)");
  if (sqlite3_prepare_v2(db_, insert.c_str(), -1, &ins.s, nullptr) != SQLITE_OK) return fail("prepare");
  for (size_t i = 0; i < records.size(); ++i) {
    const CertificateRecord& r = records[i];
    sqlite3_reset(dup.s);
    BindText(dup.s, 1, r.station);
    BindText(dup.s, 2, r.request_id);
    int rc = sqlite3_step(dup.s);
    if (rc == SQLITE_ROW) {
      outcomes[i] = RecordOutcome::kDuplicateRequest;
      continue;
    }
    if (rc != SQLITE_DONE) return fail("duplicate check");
    sqlite3_reset(ins.s);
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
    sqlite3_bind_blob(ins.s, 12, r.der.data(), static_cast<int>(r.der.size()), SQLITE_STATIC);
    sqlite3_bind_int64(ins.s, 13, r.issued_at);
    rc = sqlite3_step(ins.s);
    if (rc == SQLITE_CONSTRAINT_UNIQUE) {
      // (station, request_id) was checked above inside this transaction, so the conflict is the serial.
      outcomes[i] = RecordOutcome::kSerialCollision;
      continue;
    }
    if (rc != SQLITE_DONE) return fail("insert");
  }
  if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) return fail("commit");
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
  if (rc == SQLITE_ROW) return std::optional<CertificateRecord>(ReadRow(s.s));
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

absl::StatusOr<int64_t> SqliteStore::Count() {
  std::lock_guard<std::mutex> lock(read_mu_);
  Stmt s;
  if (sqlite3_prepare_v2(reader_, "SELECT COUNT(*) FROM certificates", -1, &s.s, nullptr) != SQLITE_OK) {
    return Unavailable(reader_, "prepare");
  }
  if (sqlite3_step(s.s) != SQLITE_ROW) return Unavailable(reader_, "count");
  return sqlite3_column_int64(s.s, 0);
}

}  // namespace linesign::store
