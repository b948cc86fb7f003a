#include "server/store/postgres/connection_string.h"

#include <libpq-fe.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace linesign::store::postgres {

absl::Status CheckConnectionString(const std::string& field, const std::string& connection) {
  if (connection.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": required (a libpq connection string, e.g. \"host=db1 dbname=linesign user=linesign\")"));
  }
  char* err = nullptr;
  PQconninfoOption* options = PQconninfoParse(connection.c_str(), &err);
  // libpq's message quotes the part it could not parse, which may be a password: it is not passed on.
  PQfreemem(err);
  if (options == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": is not a libpq connection string (key=value pairs) or postgresql:// URI"));
  }
  bool has_password = false;
  for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (std::strcmp(o->keyword, "password") == 0 && o->val != nullptr && o->val[0] != '\0') has_password = true;
  }
  PQconninfoFree(options);
  if (has_password) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": holds a password; remove it and give the password in store.postgres.password_file (mode 0600) "
               "or libpq's PGPASSFILE"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadPasswordFile(const std::string& field, const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": cannot read ", path, ": ", std::strerror(errno)));
  }
  std::string line;
  std::getline(in, line);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": ", path, " is empty"));
  return line;
}

}  // namespace linesign::store::postgres
