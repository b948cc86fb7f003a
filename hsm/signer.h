// Signer: the only thing the issuing code knows about the CA key.
#ifndef LINESIGN_HSM_SIGNER_H_
#define LINESIGN_HSM_SIGNER_H_

#include <openssl/evp.h>

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace linesign::hsm {

// SignatureAlgorithm is the X.509 signature algorithm a CA key signs with.
enum class SignatureAlgorithm {
  kEcdsaSha256,      // ECDSA P-256 with SHA-256
  kEcdsaSha384,      // ECDSA P-384 with SHA-384
  kRsaPkcs1Sha256,   // RSA PKCS#1 v1.5 with SHA-256
};

// AlgorithmIdentifierDer returns the DER AlgorithmIdentifier for `alg` as it appears in a certificate.
const std::string& AlgorithmIdentifierDer(SignatureAlgorithm alg);
// DigestFor returns the digest `alg` hashes with.
const EVP_MD* DigestFor(SignatureAlgorithm alg);
// AlgorithmName returns a human-readable name ("ecdsa-p256-sha256", ...).
const char* AlgorithmName(SignatureAlgorithm alg);
// AlgorithmForKey picks the signature algorithm for a CA public key: ECDSA P-256/SHA-256, P-384/SHA-384, RSA
// 2048..4096 with SHA-256. InvalidArgument for any other key.
absl::StatusOr<SignatureAlgorithm> AlgorithmForKey(const EVP_PKEY* key);

// Signer signs with one CA private key. Implementations are thread-safe: Sign may be called from many threads.
class Signer {
 public:
  virtual ~Signer() = default;

  // Sign returns the signature over `message` (a DER TBSCertificate or TBSCertList) with algorithm(), encoded as
  // X.509 carries it in its BIT STRING: a DER ECDSA-Sig-Value for ECDSA, the PKCS#1 v1.5 block for RSA.
  // Unavailable when the key's device fails (the caller may retry), Internal otherwise.
  virtual absl::StatusOr<std::string> Sign(absl::string_view message) const = 0;

  // algorithm returns the signature algorithm.
  virtual SignatureAlgorithm algorithm() const = 0;

  // description names the key for logs ("pkcs11:token=...;object=..." or "development key file ..."); never a
  // secret.
  virtual std::string description() const = 0;
};

// EcdsaRawToDer converts a PKCS#11 ECDSA signature (r || s, each half the field size) to a DER ECDSA-Sig-Value.
absl::StatusOr<std::string> EcdsaRawToDer(absl::string_view raw);

}  // namespace linesign::hsm

#endif  // LINESIGN_HSM_SIGNER_H_
