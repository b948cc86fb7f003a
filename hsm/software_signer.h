// SoftwareSigner: DEVELOPMENT ONLY. A Signer over a private key read from a PEM file into process memory.
// It breaks invariant 1 of DESIGN.md on purpose, for tests and benchmarks that compare against the HSM; the
// server refuses to start with it unless the configuration names it explicitly, and then warns on every start.
#ifndef LINESIGN_HSM_SOFTWARE_SIGNER_H_
#define LINESIGN_HSM_SOFTWARE_SIGNER_H_

#include <memory>
#include <string>

#include "common/openssl_util.h"
#include "hsm/signer.h"

namespace linesign::hsm {

class SoftwareSigner final : public Signer {
 public:
  // FromPemFile loads an unencrypted PEM private key (EC P-256/P-384 or RSA 2048..4096).
  static absl::StatusOr<std::unique_ptr<SoftwareSigner>> FromPemFile(const std::string& path);
  // FromKey takes ownership of `key`.
  static absl::StatusOr<std::unique_ptr<SoftwareSigner>> FromKey(OsslPtr<EVP_PKEY> key, std::string description);

  absl::StatusOr<std::string> Sign(absl::string_view message) const override;
  SignatureAlgorithm algorithm() const override { return algorithm_; }
  std::string description() const override { return description_; }
  const EVP_PKEY* key() const { return key_.get(); }

 private:
  SoftwareSigner(OsslPtr<EVP_PKEY> key, SignatureAlgorithm alg, std::string description)
      : key_(std::move(key)), algorithm_(alg), description_(std::move(description)) {}

  OsslPtr<EVP_PKEY> key_;
  SignatureAlgorithm algorithm_;
  std::string description_;
};

}  // namespace linesign::hsm

#endif  // LINESIGN_HSM_SOFTWARE_SIGNER_H_
