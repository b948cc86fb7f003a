// The PostgreSQL store's connection settings: what configuration validation checks and what the store passes to
// libpq. Shared by server/config (validation) and PostgresStore (connecting), so both read a connection string
// the same way (libpq's own parser: key=value pairs or a postgresql:// URI).
#ifndef LINESIGN_SERVER_STORE_POSTGRES_CONNECTION_STRING_H_
#define LINESIGN_SERVER_STORE_POSTGRES_CONNECTION_STRING_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace linesign::store::postgres {

// CheckConnectionString refuses (InvalidArgument, the message naming `field`) an empty string, one libpq cannot
// parse, and one that carries a password (a `password=` keyword or a password in the URI's user part). The
// message never repeats the string or any part of it: a refused string may hold the very secret it leaks.
absl::Status CheckConnectionString(const std::string& field, const std::string& connection);

// ReadPasswordFile returns the password in `path` (its first line, without the line end). InvalidArgument naming
// `field` and the path, never the contents, when it cannot be read or is empty.
absl::StatusOr<std::string> ReadPasswordFile(const std::string& field, const std::string& path);

}  // namespace linesign::store::postgres

#endif  // LINESIGN_SERVER_STORE_POSTGRES_CONNECTION_STRING_H_
