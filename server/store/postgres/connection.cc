#include "server/store/postgres/connection.h"

#include <poll.h>

#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace linesign::store::postgres {

Params& Params::Text(absl::string_view v) {
  values_.emplace_back(v);
  null_.push_back(false);
  formats_.push_back(1);
  return *this;
}

Params& Params::Int(int64_t v) {
  values_.push_back(absl::StrCat(v));
  null_.push_back(false);
  formats_.push_back(0);
  return *this;
}

Params& Params::Null() {
  values_.emplace_back();
  null_.push_back(true);
  formats_.push_back(0);
  return *this;
}

std::string Result::Str(int row, int col) const {
  if (IsNull(row, col)) return "";
  return std::string(PQgetvalue(r_.get(), row, col), PQgetlength(r_.get(), row, col));
}

int64_t Result::Int(int row, int col) const {
  if (IsNull(row, col)) return 0;
  const auto* p = reinterpret_cast<const unsigned char*>(PQgetvalue(r_.get(), row, col));
  const int n = PQgetlength(r_.get(), row, col);
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | p[i];
  // Sign-extend the narrower types (int2, int4) from their own width.
  if (n > 0 && n < 8 && (p[0] & 0x80) != 0) v |= ~uint64_t{0} << (8 * n);
  return static_cast<int64_t>(v);
}

int64_t Result::affected() const {
  const char* n = PQcmdTuples(r_.get());
  return n == nullptr || *n == '\0' ? 0 : std::strtoll(n, nullptr, 10);
}

absl::StatusOr<std::unique_ptr<Connection>> Connection::Connect(const ConnectSettings& settings) {
  // Keywords are applied in order, later ones winning: the defaults come before the expanded connection string
  // (so it may override them), the password and the encoding after it.
  // A server that vanishes without closing the connection (a network partition, a dead host) fails the call
  // after about 30 s (TCP keepalives and the user timeout) instead of holding it until the kernel gives up.
  std::vector<const char*> keys = {"connect_timeout", "keepalives_idle", "keepalives_interval", "keepalives_count",
                                   "tcp_user_timeout", "fallback_application_name", "dbname"};
  std::vector<const char*> values = {"10", "20", "5", "2", "30000", "linesign-server", settings.connection.c_str()};
  if (settings.password.has_value()) {
    keys.push_back("password");
    values.push_back(settings.password->c_str());
  }
  keys.push_back("client_encoding");
  values.push_back("UTF8");
  keys.push_back(nullptr);
  values.push_back(nullptr);
  PGconn* conn = PQconnectdbParams(keys.data(), values.data(), /*expand_dbname=*/1);
  if (conn == nullptr) return absl::UnavailableError("store: postgres: out of memory");
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string reason(absl::StripAsciiWhitespace(PQerrorMessage(conn)));
    PQfinish(conn);
    return absl::UnavailableError(absl::StrCat("store: postgres: cannot connect: ", reason));
  }
  // Notices (CREATE ... IF NOT EXISTS, a server's goodbye) are not errors: libpq would print them on stderr.
  PQsetNoticeProcessor(conn, [](void*, const char*) {}, nullptr);
  return std::unique_ptr<Connection>(new Connection(conn));
}

Connection::~Connection() { PQfinish(conn_); }

absl::Status Connection::Error(absl::string_view what, const PGresult* r) const {
  std::string reason;
  if (r != nullptr) reason = PQresultErrorMessage(r);
  if (reason.empty()) reason = PQerrorMessage(conn_);
  if (PQstatus(conn_) != CONNECTION_OK) absl::StrAppend(&reason, " (connection lost)");
  // The first line only: libpq's DETAIL lines may quote a row's values.
  std::string first(absl::StripAsciiWhitespace(reason.substr(0, reason.find('\n'))));
  return absl::UnavailableError(absl::StrCat("store: ", what, ": ", first));
}

absl::StatusOr<Result> Connection::Exec(absl::string_view what, const std::string& sql, const Params& params,
                                        bool prepare) {
  const int n = params.size();
  std::vector<const char*> values(n);
  std::vector<int> lengths(n);
  for (int i = 0; i < n; ++i) {
    values[i] = params.null_[i] ? nullptr : params.values_[i].data();
    lengths[i] = static_cast<int>(params.values_[i].size());
  }
  PGresult* r = nullptr;
  if (prepare) {
    absl::StatusOr<std::string> name = PreparedName(what, sql);
    if (!name.ok()) return name.status();
    r = PQexecPrepared(conn_, name->c_str(), n, values.data(), lengths.data(), params.formats_.data(),
                       /*resultFormat=*/1);
  } else {
    r = PQexecParams(conn_, sql.c_str(), n, nullptr, values.data(), lengths.data(), params.formats_.data(),
                     /*resultFormat=*/1);
  }
  Result result(r);
  const ExecStatusType st = r == nullptr ? PGRES_FATAL_ERROR : PQresultStatus(r);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return Error(what, r);
  return result;
}

absl::StatusOr<std::string> Connection::PreparedName(absl::string_view what, const std::string& sql) {
  auto it = prepared_.find(sql);
  if (it == prepared_.end()) {
    std::string name = absl::StrCat("linesign_", prepared_.size());
    Result prepared(PQprepare(conn_, name.c_str(), sql.c_str(), 0, nullptr));
    if (PQresultStatus(prepared.raw()) != PGRES_COMMAND_OK) return Error(what, prepared.raw());
    it = prepared_.emplace(sql, std::move(name)).first;
  }
  return it->second;
}

absl::StatusOr<std::vector<Result>> Connection::ExecPipeline(absl::string_view what,
                                                            const std::vector<Statement>& statements) {
  std::vector<std::string> names;
  names.reserve(statements.size());
  for (const Statement& st : statements) {
    absl::StatusOr<std::string> name = PreparedName(what, *st.sql);
    if (!name.ok()) return name.status();
    names.push_back(*std::move(name));
  }
  std::vector<Result> results;
  results.reserve(statements.size());
  if (PQenterPipelineMode(conn_) != 1) return Error(what, nullptr);
  absl::Status failure;
  for (size_t begin = 0; begin < statements.size() && failure.ok(); begin += kPipelineChunk) {
    const size_t end = std::min(statements.size(), begin + kPipelineChunk);
    size_t sent = 0;
    for (size_t i = begin; i < end; ++i) {
      const Params& p = statements[i].params;
      const int n = p.size();
      std::vector<const char*> values(n);
      std::vector<int> lengths(n);
      for (int k = 0; k < n; ++k) {
        values[k] = p.null_[k] ? nullptr : p.values_[k].data();
        lengths[k] = static_cast<int>(p.values_[k].size());
      }
      if (PQsendQueryPrepared(conn_, names[i].c_str(), n, values.data(), lengths.data(), p.formats_.data(),
                              /*resultFormat=*/1) != 1) {
        failure = Error(what, nullptr);
        break;
      }
      ++sent;
    }
    if (PQpipelineSync(conn_) != 1) {
      if (failure.ok()) failure = Error(what, nullptr);
      break;
    }
    // Results in order, each followed by a null; then the sync point. Two nulls in a row, or a lost connection,
    // mean nothing more will come.
    size_t got = 0;
    int nulls = 0;
    while (true) {
      PGresult* r = PQgetResult(conn_);
      if (r == nullptr) {
        if (++nulls > 1 || PQstatus(conn_) != CONNECTION_OK) break;
        continue;
      }
      nulls = 0;
      Result result(r);
      const ExecStatusType st = PQresultStatus(r);
      if (st == PGRES_PIPELINE_SYNC) break;
      if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && failure.ok()) failure = Error(what, r);
      if (got++ < sent) results.push_back(std::move(result));
    }
    if (failure.ok() && got != sent) failure = Error(what, nullptr);
  }
  if (PQexitPipelineMode(conn_) != 1 && failure.ok()) failure = Error(what, nullptr);
  if (!failure.ok()) return failure;
  return results;
}

absl::Status Connection::Command(absl::string_view what, const char* sql) {
  Result r(PQexec(conn_, sql));
  const ExecStatusType st = r.raw() == nullptr ? PGRES_FATAL_ERROR : PQresultStatus(r.raw());
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return Error(what, r.raw());
  return absl::OkStatus();
}

bool Connection::Alive() {
  if (PQstatus(conn_) != CONNECTION_OK) return false;
  // Without blocking: an idle session receives nothing unless the server is ending it (a shutdown or restart
  // sends "terminating connection" and closes the socket), which libpq would only notice on the next query.
  pollfd p{.fd = PQsocket(conn_), .events = POLLIN | POLLRDHUP, .revents = 0};
  for (int i = 0; i < 2 && poll(&p, 1, 0) > 0; ++i) {
    if ((p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL)) != 0) return false;
    if (PQconsumeInput(conn_) == 0) return false;
    while (PGnotify* n = PQnotifies(conn_)) PQfreemem(n);
  }
  return PQstatus(conn_) == CONNECTION_OK;
}

bool Connection::connected() const { return PQstatus(conn_) == CONNECTION_OK; }

bool Connection::usable() const {
  return PQstatus(conn_) == CONNECTION_OK && PQtransactionStatus(conn_) == PQTRANS_IDLE &&
         PQpipelineStatus(conn_) == PQ_PIPELINE_OFF;
}

std::string Connection::Describe() const {
  return absl::StrCat("database '", PQdb(conn_), "' at ", PQhost(conn_), ":", PQport(conn_));
}

}  // namespace linesign::store::postgres
