// Helpers for tests that look at certificates and CSRs.
#ifndef LINESIGN_TESTS_TESTING_CERTS_H_
#define LINESIGN_TESTS_TESTING_CERTS_H_

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "common/openssl_util.h"

namespace linesign::testing {

// ParseDer parses one DER certificate (nullptr on failure).
OsslPtr<X509> ParseDer(const std::string& der);

// VerifyChain verifies `leaf` against the root file and the untrusted chain file with OpenSSL's verifier
// (purpose sslclient), returning "" when it verifies and OpenSSL's reason otherwise.
std::string VerifyChain(X509* leaf, const std::string& root_pem_path, const std::string& chain_pem_path);

// Csr makes a DER CSR with a fresh key of `algorithm` (see client/keygen.h) for `subject`.
std::string Csr(const std::string& algorithm, const std::string& subject,
                const std::vector<std::string>& sans = {});

// CsrWithKey makes a DER CSR for an explicit OpenSSL key generation spec: "EC:secp256k1", "RSA:1024".
std::string CsrWithKeySpec(const std::string& type, const std::string& param, const std::string& subject);

// SqliteScalar runs `sql` on the database at `path` and returns the first column of the first row as text.
std::string SqliteScalar(const std::string& path, const std::string& sql);

// SqliteMap runs `sql` on the database at `path` and returns its rows as first column -> second column (both as
// text; a later row with the same key replaces an earlier one). Empty when the query fails.
std::map<std::string, std::string> SqliteMap(const std::string& path, const std::string& sql);

// SqliteExec runs `sql` (one or more statements) on the database at `path` through a connection of its own, as
// another process would, and returns "" or SQLite's error message.
std::string SqliteExec(const std::string& path, const std::string& sql);

}  // namespace linesign::testing

#endif  // LINESIGN_TESTS_TESTING_CERTS_H_
