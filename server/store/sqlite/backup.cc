#include "server/store/sqlite/backup.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace linesign::store::sqlite {
namespace {

struct Db {
  sqlite3* db = nullptr;
  ~Db() { sqlite3_close_v2(db); }
};

absl::Status Fail(sqlite3* db, absl::string_view what) {
  return absl::UnavailableError(absl::StrCat("backup: ", what, ": ", db != nullptr ? sqlite3_errmsg(db) : "out of memory"));
}

absl::StatusOr<int64_t> Scalar(sqlite3* db, const char* sql) {
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &s, nullptr) != SQLITE_OK) return Fail(db, sql);
  int64_t v = 0;
  const int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) v = sqlite3_column_int64(s, 0);
  sqlite3_finalize(s);
  if (rc != SQLITE_ROW) return Fail(db, sql);
  return v;
}

absl::Status SyncFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("backup: open ", path, ": ", std::strerror(errno)));
  const int rc = fsync(fd);
  close(fd);
  if (rc != 0) return absl::UnavailableError(absl::StrCat("backup: fsync ", path, ": ", std::strerror(errno)));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<BackupResult> BackupDatabase(const std::string& db_path, const std::string& out_path) {
  struct stat st;
  if (lstat(out_path.c_str(), &st) == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("backup: ", out_path, " exists; a backup never overwrites a file (choose a new path)"));
  }
  const std::string tmp = absl::StrCat(out_path, ".partial");
  // The copy is created 0600 before SQLite opens it: it holds every certificate record, like the database.
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("backup: create ", tmp, ": ", std::strerror(errno)));
  close(fd);
  auto cleanup = [&] {
    unlink(tmp.c_str());
    unlink((tmp + "-journal").c_str());
  };

  Db src, dst;
  if (sqlite3_open_v2(db_path.c_str(), &src.db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    cleanup();
    return Fail(src.db, absl::StrCat("open ", db_path));
  }
  sqlite3_busy_timeout(src.db, 5000);
  if (sqlite3_open_v2(tmp.c_str(), &dst.db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    cleanup();
    return Fail(dst.db, absl::StrCat("open ", tmp));
  }
  sqlite3_backup* b = sqlite3_backup_init(dst.db, "main", src.db, "main");
  if (b == nullptr) {
    cleanup();
    return Fail(dst.db, "init");
  }
  // All pages in one step: one read transaction, so the copy is one consistent snapshot (a WAL reader never
  // blocks the server's writer, nor is it restarted by it).
  int rc = sqlite3_backup_step(b, -1);
  sqlite3_backup_finish(b);
  if (rc != SQLITE_DONE) {
    absl::Status err = Fail(dst.db, "copy");
    cleanup();
    return err;
  }
  // The copy is a standalone file: no WAL beside it to lose when it is moved.
  if (sqlite3_exec(dst.db, "PRAGMA journal_mode=DELETE", nullptr, nullptr, nullptr) != SQLITE_OK) {
    absl::Status err = Fail(dst.db, "journal_mode");
    cleanup();
    return err;
  }
  auto check = [&]() -> absl::StatusOr<BackupResult> {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(dst.db, "PRAGMA quick_check", -1, &s, nullptr) != SQLITE_OK) return Fail(dst.db, "check");
    std::string verdict;
    if (sqlite3_step(s) == SQLITE_ROW) verdict = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    if (verdict != "ok") return absl::DataLossError(absl::StrCat("backup: the copy fails quick_check: ", verdict));
    BackupResult r;
    auto n = Scalar(dst.db, "SELECT COUNT(*) FROM certificates");
    if (!n.ok()) return n.status();
    r.certificates = *n;
    auto v = Scalar(dst.db, "SELECT COALESCE(MAX(version), 1) FROM schema_migrations");
    r.schema_version = v.ok() ? *v : 1;
    return r;
  };
  auto result = check();
  sqlite3_close_v2(dst.db);
  dst.db = nullptr;
  if (!result.ok()) {
    cleanup();
    return result.status();
  }
  if (absl::Status s = SyncFile(tmp); !s.ok()) {
    cleanup();
    return s;
  }
  if (rename(tmp.c_str(), out_path.c_str()) != 0) {
    absl::Status err = absl::UnavailableError(absl::StrCat("backup: rename to ", out_path, ": ", std::strerror(errno)));
    cleanup();
    return err;
  }
  return result;
}

}  // namespace linesign::store::sqlite
