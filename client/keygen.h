// Key and CSR generation for stations (the `linesign keygen` command).
#ifndef LINESIGN_CLIENT_KEYGEN_H_
#define LINESIGN_CLIENT_KEYGEN_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/openssl_util.h"

namespace linesign::client {

// GenerateKey makes a key: "ec-p256" (default), "ec-p384", "ed25519", "rsa-2048", "rsa-3072", "rsa-4096".
absl::StatusOr<OsslPtr<EVP_PKEY>> GenerateKey(const std::string& algorithm);

// MakeCsr builds a PKCS#10 request for `subject` ("/CN=abc/O=Acme", OpenSSL's -subj form) and `sans`
// ("DNS:x", "IP:1.2.3.4", "URI:...", "email:..."), signed by `key`. Returns DER.
absl::StatusOr<std::string> MakeCsr(EVP_PKEY* key, const std::string& subject, const std::vector<std::string>& sans);

// PrivateKeyPem returns `key` as unencrypted PKCS#8 PEM.
std::string PrivateKeyPem(EVP_PKEY* key);

// kPassphraseIterations is the PBKDF2-HMAC-SHA256 iteration count of EncryptedPrivateKeyPem (OWASP's 2023
// figure for PBKDF2-SHA256).
inline constexpr int kPassphraseIterations = 600000;

// EncryptedPrivateKeyPem returns `key` as encrypted PKCS#8 PEM ("ENCRYPTED PRIVATE KEY"): PBES2 with
// PBKDF2-HMAC-SHA256 (kPassphraseIterations, 16-byte random salt) and AES-256-CBC, readable by
// `openssl pkey -passin`. InvalidArgument for an empty passphrase; Internal when OpenSSL fails.
absl::StatusOr<std::string> EncryptedPrivateKeyPem(EVP_PKEY* key, const std::string& passphrase);

// ReadPassphraseFile returns the first line of `path` without its line ending. InvalidArgument naming the file when
// it cannot be read or the passphrase is empty; the passphrase itself never appears in an error.
absl::StatusOr<std::string> ReadPassphraseFile(const std::string& path);

}  // namespace linesign::client

#endif  // LINESIGN_CLIENT_KEYGEN_H_
