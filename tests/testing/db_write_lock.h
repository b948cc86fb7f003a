// DbWriteLock: a test's hold on a SQLite database's write lock, as another process would take it.
#ifndef LINESIGN_TESTS_TESTING_DB_WRITE_LOCK_H_
#define LINESIGN_TESTS_TESTING_DB_WRITE_LOCK_H_

#include <sqlite3.h>

#include <string>

namespace linesign::testing {

// DbWriteLock opens `path` and holds its write lock (an open IMMEDIATE transaction) until Release or
// destruction. held() is false when the lock could not be taken within 10 s (the server may be committing a
// batch or pinging the store right now).
class DbWriteLock {
 public:
  explicit DbWriteLock(const std::string& path) {
    if (sqlite3_open(path.c_str(), &db_) == SQLITE_OK) {
      sqlite3_busy_timeout(db_, 10000);
      held_ = sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK;
    }
  }
  ~DbWriteLock() {
    Release();
    sqlite3_close(db_);
  }
  DbWriteLock(const DbWriteLock&) = delete;
  DbWriteLock& operator=(const DbWriteLock&) = delete;

  bool held() const { return held_; }
  void Release() {
    if (held_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    held_ = false;
  }

 private:
  sqlite3* db_ = nullptr;
  bool held_ = false;
};

}  // namespace linesign::testing

#endif  // LINESIGN_TESTS_TESTING_DB_WRITE_LOCK_H_
