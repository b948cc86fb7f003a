// PostgreSQL for tests: the shared server the `postgres` ctest fixture starts (tests/pg/pg_cluster.sh, its
// settings in the file LINESIGN_TEST_PG names), a fresh database per test on it, and a private server for tests
// that stop and start PostgreSQL under the store.
#ifndef LINESIGN_TESTS_PG_PG_TEST_SERVER_H_
#define LINESIGN_TESTS_PG_PG_TEST_SERVER_H_

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "linesign/v1/config.pb.h"

namespace linesign::testing {

// PgCluster is one running PostgreSQL server (superuser linesign, password in password_file).
struct PgCluster {
  std::string state_file;
  std::string connection;     // to its `postgres` database
  std::string password_file;
};

// SharedPgCluster reads the fixture's settings. FailedPrecondition saying how to get them when LINESIGN_TEST_PG
// is unset or its file missing (the test was run outside ctest, or the fixture failed): tests fail, never skip.
absl::StatusOr<PgCluster> SharedPgCluster();

// CreateTestDatabase creates a new, empty database on `cluster` and returns a store configuration for it.
absl::StatusOr<v1::PostgresStoreConfig> CreateTestDatabase(const PgCluster& cluster);
// DropTestDatabase drops the database `config` names (closing its sessions).
void DropTestDatabase(const PgCluster& cluster, const v1::PostgresStoreConfig& config);

// PgQuery runs `sql` on the database of `config` and returns the first column of the first row ("" for none).
absl::StatusOr<std::string> PgQuery(const v1::PostgresStoreConfig& config, const std::string& sql);
// PgMap runs `sql` on the database of `config` and returns its rows as first column -> second column (text; a
// later row with the same key replaces an earlier one).
absl::StatusOr<std::map<std::string, std::string>> PgMap(const v1::PostgresStoreConfig& config,
                                                         const std::string& sql);

// PrivatePgCluster is a PostgreSQL server of the calling test's own (started by pg_cluster.sh), which it may
// stop and start again on the same port; removed when destroyed.
class PrivatePgCluster {
 public:
  static absl::StatusOr<std::unique_ptr<PrivatePgCluster>> Start(const std::string& dir);
  ~PrivatePgCluster();
  const PgCluster& cluster() const { return cluster_; }
  absl::Status Pause();   // pg_ctl stop -m fast: connections are closed, new ones refused
  absl::Status Resume();  // pg_ctl start, same data and port

 private:
  PrivatePgCluster() = default;
  PgCluster cluster_;
};

}  // namespace linesign::testing

#endif  // LINESIGN_TESTS_PG_PG_TEST_SERVER_H_
