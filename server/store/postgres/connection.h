// Connection, Params and Result: a thin layer over one libpq connection for the PostgreSQL store. Statements are
// prepared once per connection (on first use) and run with typed parameters; results come back in binary
// format, so bytea and integers need no text parsing. Every failure is Unavailable with PostgreSQL's reason and
// never with a parameter's value (certificates, payloads) or the password.
#ifndef LINESIGN_SERVER_STORE_POSTGRES_CONNECTION_H_
#define LINESIGN_SERVER_STORE_POSTGRES_CONNECTION_H_

#include <libpq-fe.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace linesign::store::postgres {

// ConnectSettings is what every connection of a store is opened with.
struct ConnectSettings {
  std::string connection;               // libpq connection string or URI, without a password (config-checked)
  std::optional<std::string> password;  // from store.postgres.password_file; else libpq's PGPASSFILE / ~/.pgpass
};

// Params are a statement's parameters, $1, $2, ... in the order added. Text and bytes go as raw bytes (binary
// format: no escaping), integers as decimal text (their type comes from the statement).
class Params {
 public:
  Params& Text(absl::string_view v);
  Params& Bytes(absl::string_view v) { return Text(v); }
  Params& Int(int64_t v);
  Params& Null();
  Params& TextOrNull(absl::string_view v) { return v.empty() ? Null() : Text(v); }
  int size() const { return static_cast<int>(values_.size()); }

 private:
  friend class Connection;
  std::vector<std::string> values_;
  std::vector<bool> null_;
  std::vector<int> formats_;
};

// Result is a statement's rows (binary format).
class Result {
 public:
  explicit Result(PGresult* r) : r_(r, &PQclear) {}
  int rows() const { return PQntuples(r_.get()); }
  bool IsNull(int row, int col) const { return PQgetisnull(r_.get(), row, col) != 0; }
  // Str returns a text or bytea column's bytes ("" for NULL).
  std::string Str(int row, int col) const;
  // Int returns a smallint, integer, bigint or boolean column (0 for NULL).
  int64_t Int(int row, int col) const;
  // affected is the number of rows an INSERT, UPDATE or DELETE changed.
  int64_t affected() const;
  const PGresult* raw() const { return r_.get(); }

 private:
  std::unique_ptr<PGresult, decltype(&PQclear)> r_;
};

class Connection {
 public:
  // Connect opens a connection: Unavailable with libpq's reason (it never contains the password).
  static absl::StatusOr<std::unique_ptr<Connection>> Connect(const ConnectSettings& settings);
  ~Connection();

  // Exec runs `sql` with `params`, prepared on this connection the first time it sees `sql` (dynamic SQL passes
  // prepare = false). Unavailable "store: <what>: <PostgreSQL's reason>" on any failure.
  absl::StatusOr<Result> Exec(absl::string_view what, const std::string& sql, const Params& params = Params(),
                              bool prepare = true);
  // Statement is one entry of a pipeline: prepared SQL (a string that outlives the call) and its parameters.
  struct Statement {
    const std::string* sql;
    Params params;
  };
  // ExecPipeline runs `statements` in order in libpq's pipeline mode: they are sent without waiting for each
  // answer (a sync point every kPipelineChunk statements, so neither side's socket buffer fills up while the
  // other is not reading), which turns one network round trip per statement into one per chunk. Returns one
  // Result per statement; the first failure is Unavailable as Exec's, and the statements after it are not run
  // (inside a transaction, the transaction is aborted: roll it back).
  absl::StatusOr<std::vector<Result>> ExecPipeline(absl::string_view what, const std::vector<Statement>& statements);
  static constexpr size_t kPipelineChunk = 128;

  // Command runs a statement without parameters or rows (BEGIN, COMMIT, ROLLBACK, SAVEPOINT ...).
  absl::Status Command(absl::string_view what, const char* sql);
  // Alive reads whatever the server sent while the connection was idle and says whether it is still usable: a
  // server that restarted or ended the session has closed it, and libpq notices only when it reads.
  bool Alive();
  // usable says whether the connection can be given to another caller: open, outside a transaction and out of
  // pipeline mode.
  bool usable() const;
  // connected says whether libpq still holds the connection open (false once it saw it lost).
  bool connected() const;
  // Describe names the server and database ("db 'linesign' at host:port"), for messages.
  std::string Describe() const;

 private:
  explicit Connection(PGconn* conn) : conn_(conn) {}
  absl::Status Error(absl::string_view what, const PGresult* r) const;
  // PreparedName prepares `sql` on this connection the first time and returns its statement name.
  absl::StatusOr<std::string> PreparedName(absl::string_view what, const std::string& sql);
  PGconn* conn_;  // owned
  absl::flat_hash_map<std::string, std::string> prepared_;  // SQL -> statement name
};

}  // namespace linesign::store::postgres

#endif  // LINESIGN_SERVER_STORE_POSTGRES_CONNECTION_H_
