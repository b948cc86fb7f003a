#include "tests/pg/pg_test_server.h"

#include <libpq-fe.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "tests/testing/server_process.h"

namespace linesign::testing {
namespace {

absl::StatusOr<PgCluster> ReadState(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::FailedPreconditionError(absl::StrCat(
        "PostgreSQL test server settings ", path, " missing: did the ctest fixture postgres_cluster_start fail? "
        "(it needs the postgresql package: scripts/install-deps.sh)"));
  }
  PgCluster c;
  c.state_file = path;
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view v = line;
    if (absl::ConsumePrefix(&v, "connection=")) c.connection = std::string(v);
    v = line;
    if (absl::ConsumePrefix(&v, "password_file=")) c.password_file = std::string(v);
  }
  if (c.connection.empty()) return absl::FailedPreconditionError(absl::StrCat(path, ": no connection= line"));
  return c;
}

absl::StatusOr<std::string> ReadPassword(const std::string& path) {
  std::ifstream in(path);
  std::string pw;
  if (!in || !std::getline(in, pw)) return absl::FailedPreconditionError(absl::StrCat("cannot read ", path));
  return pw;
}

// QueryRows runs `sql` with `connection` (and the password in `password_file`) and returns every row's first two
// columns (the second "" when there is one column; none for a command).
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> QueryRows(const std::string& connection,
                                                                          const std::string& password_file,
                                                                          const std::string& sql) {
  auto pw = ReadPassword(password_file);
  if (!pw.ok()) return pw.status();
  const char* keys[] = {"dbname", "password", nullptr};
  const char* values[] = {connection.c_str(), pw->c_str(), nullptr};
  PGconn* conn = PQconnectdbParams(keys, values, 1);
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string err = PQerrorMessage(conn);
    PQfinish(conn);
    return absl::UnavailableError(absl::StrCat("connect: ", err));
  }
  PGresult* r = PQexec(conn, sql.c_str());
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> out;
  if (PQresultStatus(r) == PGRES_TUPLES_OK) {
    out.emplace();
    for (int i = 0; i < PQntuples(r); ++i) {
      out->emplace_back(PQgetvalue(r, i, 0), PQnfields(r) > 1 ? PQgetvalue(r, i, 1) : "");
    }
  } else if (PQresultStatus(r) == PGRES_COMMAND_OK) {
    out.emplace();
  } else {
    out = absl::InternalError(absl::StrCat(sql, ": ", PQresultErrorMessage(r)));
  }
  PQclear(r);
  PQfinish(conn);
  return out;
}

// Query returns the first column of QueryRows's first row ("" for none).
absl::StatusOr<std::string> Query(const std::string& connection, const std::string& password_file,
                                  const std::string& sql) {
  auto rows = QueryRows(connection, password_file, sql);
  if (!rows.ok()) return rows.status();
  return rows->empty() ? "" : rows->front().first;
}

}  // namespace

absl::StatusOr<PgCluster> SharedPgCluster() {
  const char* path = std::getenv("LINESIGN_TEST_PG");
  if (path == nullptr || *path == '\0') {
    return absl::FailedPreconditionError(
        "LINESIGN_TEST_PG is not set: run this test through ctest, whose fixture postgres_cluster_start starts "
        "PostgreSQL (tests/pg/pg_cluster.sh)");
  }
  return ReadState(path);
}

absl::StatusOr<v1::PostgresStoreConfig> CreateTestDatabase(const PgCluster& cluster) {
  static std::mt19937_64 rng(std::random_device{}());
  std::string name = absl::StrCat("t_", getpid(), "_", rng() % 1000000000);
  auto r = Query(cluster.connection, cluster.password_file, absl::StrCat("CREATE DATABASE ", name));
  if (!r.ok()) return r.status();
  v1::PostgresStoreConfig config;
  config.set_connection(absl::StrCat(cluster.connection, " dbname=", name));
  config.set_password_file(cluster.password_file);
  return config;
}

void DropTestDatabase(const PgCluster& cluster, const v1::PostgresStoreConfig& config) {
  auto pos = config.connection().rfind("dbname=");
  if (pos == std::string::npos) return;
  Query(cluster.connection, cluster.password_file,
        absl::StrCat("DROP DATABASE IF EXISTS ", config.connection().substr(pos + 7), " WITH (FORCE)"))
      .IgnoreError();
}

absl::StatusOr<std::string> PgQuery(const v1::PostgresStoreConfig& config, const std::string& sql) {
  return Query(config.connection(), config.password_file(), sql);
}

absl::StatusOr<std::map<std::string, std::string>> PgMap(const v1::PostgresStoreConfig& config,
                                                         const std::string& sql) {
  auto rows = QueryRows(config.connection(), config.password_file(), sql);
  if (!rows.ok()) return rows.status();
  return std::map<std::string, std::string>(rows->begin(), rows->end());
}

absl::StatusOr<std::unique_ptr<PrivatePgCluster>> PrivatePgCluster::Start(const std::string& dir) {
  std::unique_ptr<PrivatePgCluster> c(new PrivatePgCluster);
  std::string state = dir + "/cluster.env";
  ExitResult r = RunCommand({"/bin/bash", LINESIGN_PG_CLUSTER_SCRIPT, "start", state}, 120);
  if (r.exit_code != 0) return absl::InternalError(absl::StrCat("pg_cluster.sh start: ", r.output));
  auto cluster = ReadState(state);
  if (!cluster.ok()) return cluster.status();
  c->cluster_ = *cluster;
  return c;
}

PrivatePgCluster::~PrivatePgCluster() {
  RunCommand({"/bin/bash", LINESIGN_PG_CLUSTER_SCRIPT, "stop", cluster_.state_file}, 120);
}

absl::Status PrivatePgCluster::Pause() {
  ExitResult r = RunCommand({"/bin/bash", LINESIGN_PG_CLUSTER_SCRIPT, "pause", cluster_.state_file}, 120);
  if (r.exit_code != 0) return absl::InternalError(absl::StrCat("pg_cluster.sh pause: ", r.output));
  return absl::OkStatus();
}

absl::Status PrivatePgCluster::Resume() {
  ExitResult r = RunCommand({"/bin/bash", LINESIGN_PG_CLUSTER_SCRIPT, "resume", cluster_.state_file}, 120);
  if (r.exit_code != 0) return absl::InternalError(absl::StrCat("pg_cluster.sh resume: ", r.output));
  return absl::OkStatus();
}

}  // namespace linesign::testing
