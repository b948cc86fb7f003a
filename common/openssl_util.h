// Small owners and helpers around OpenSSL 3.0 objects, shared by hsm/, server/ and client/.
#ifndef LINESIGN_COMMON_OPENSSL_UTIL_H_
#define LINESIGN_COMMON_OPENSSL_UTIL_H_

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace linesign {

struct OpenSslDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(BIGNUM* p) const { BN_free(p); }
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(X509_REQ* p) const { X509_REQ_free(p); }
  void operator()(X509_CRL* p) const { X509_CRL_free(p); }
  void operator()(GENERAL_NAMES* p) const { GENERAL_NAMES_free(p); }
  void operator()(X509_STORE* p) const { X509_STORE_free(p); }
  void operator()(X509_STORE_CTX* p) const { X509_STORE_CTX_free(p); }
  void operator()(BIO* p) const { BIO_free_all(p); }
  void operator()(STACK_OF(X509) * p) const { sk_X509_pop_free(p, X509_free); }
};
template <typename T>
using OsslPtr = std::unique_ptr<T, OpenSslDeleter>;

// OpenSslErrors drains OpenSSL's thread-local error queue into one line ("" when empty).
std::string OpenSslErrors();

// Hex returns the upper-case hexadecimal form of `bytes`.
std::string Hex(absl::string_view bytes);

// Sha256 returns the 32-byte SHA-256 digest of `data`.
std::string Sha256(absl::string_view data);

// PemEncode wraps `der` in a PEM block with `label`, 64 columns, ending in a newline.
std::string PemEncode(absl::string_view label, absl::string_view der);

// ReadFile returns the whole file; NotFound / PermissionDenied / Internal with the path and reason on failure.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// WriteFile replaces `path` atomically (temporary file + rename) with `data`, created with `mode`.
absl::Status WriteFile(const std::string& path, absl::string_view data, int mode = 0644);

// ParseCertificatesPem returns every certificate of a PEM bundle in order; InvalidArgument when none or on
// malformed PEM. `what` names the source in messages.
absl::StatusOr<std::vector<OsslPtr<X509>>> ParseCertificatesPem(absl::string_view pem, absl::string_view what);

// ToDer returns `i2d(obj)` as bytes ("" when encoding fails), for any OpenSSL i2d_* function.
template <typename T>
std::string ToDer(int (*i2d)(T*, unsigned char**), T* obj) {
  unsigned char* buf = nullptr;
  int n = i2d(obj, &buf);
  if (n <= 0) return "";
  std::string out(reinterpret_cast<char*>(buf), n);
  OPENSSL_free(buf);
  return out;
}

// StatusCodeName returns the canonical name of a gRPC / absl status code ("INVALID_ARGUMENT"), "?" if unknown.
const char* StatusCodeName(int code);

// CertificateDer returns the DER encoding of `cert`.
std::string CertificateDer(const X509* cert);

// PublicKeyDer returns the SubjectPublicKeyInfo DER of `key`.
std::string PublicKeyDer(const EVP_PKEY* key);

}  // namespace linesign

#endif  // LINESIGN_COMMON_OPENSSL_UTIL_H_
