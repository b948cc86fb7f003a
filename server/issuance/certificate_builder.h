// CertificateBuilder: turns a checked CSR into a signed X.509 v3 certificate with the issuing CA's signer.
//
// The TBSCertificate is assembled directly in DER from per-profile parts prepared once (issuer name, algorithm,
// fixed extensions) plus the per-request fields, so the cost per certificate is the signature and little else.
#ifndef LINESIGN_SERVER_ISSUANCE_CERTIFICATE_BUILDER_H_
#define LINESIGN_SERVER_ISSUANCE_CERTIFICATE_BUILDER_H_

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/openssl_util.h"
#include "hsm/signer.h"
#include "linesign/v1/config.pb.h"
#include "server/csr/csr.h"

namespace linesign::issuance {

// Serial returns a fresh certificate serial: 16 octets from the CSPRNG with the top bit cleared (positive,
// 127 random bits, at most 20 octets once DER-encoded; DESIGN invariant 3).
std::string NewSerial();

// IssuingCa is the CA that signs: its certificate, the chain handed to stations and its key's Signer.
struct IssuingCa {
  OsslPtr<X509> certificate;
  std::string certificate_der;
  std::string chain_pem;      // issuing CA first, then further intermediates
  std::string issuer_id;      // hex SHA-256 of the CA's SubjectPublicKeyInfo: the scope of serial uniqueness
  absl::Time not_after;
};

// LoadIssuingCa reads ca.chain_file. FailedPrecondition naming the file when it holds no certificate, when the
// first certificate is not a CA (basicConstraints CA:TRUE and keyCertSign) or has expired.
absl::StatusOr<IssuingCa> LoadIssuingCa(const std::string& chain_file, absl::Time now);

// IssuedCertificate is one signed certificate and the facts recorded about it.
struct IssuedCertificate {
  std::string der;
  std::string serial;      // big-endian magnitude
  absl::Time not_before;
  absl::Time not_after;
};

class CertificateBuilder {
 public:
  // Create prepares the per-profile templates. `ca` and `signer` are borrowed and must outlive the builder.
  static absl::StatusOr<std::unique_ptr<CertificateBuilder>> Create(const IssuingCa* ca, const hsm::Signer* signer,
                                                                    const v1::ServerConfig& config);

  // TbsDer returns the TBSCertificate for `csr` under `profile`, with `serial`, issued at `now`. The subject,
  // public key and SANs must satisfy csr/strict_rules.h (string types, SAN syntax, key encodings), whoever made
  // `csr`: otherwise InvalidArgument naming what is wrong, and nothing is signed.
  absl::StatusOr<std::string> TbsDer(const csr::CheckedCsr& csr, const std::string& profile,
                                     const std::string& serial, absl::Time now, absl::Time* not_before,
                                     absl::Time* not_after) const;

  // Issue builds the TBSCertificate and signs it. Unavailable when the signer's device fails.
  absl::StatusOr<IssuedCertificate> Issue(const csr::CheckedCsr& csr, const std::string& profile,
                                          const std::string& serial, absl::Time now) const;

  const IssuingCa& ca() const { return *ca_; }

 private:
  struct Template {
    absl::Duration validity;
    absl::Duration backdate;
    std::string fixed_extensions;  // basicConstraints, keyUsage, extendedKeyUsage: DER, concatenated
    bool allow_wildcard_dns = false;
  };
  CertificateBuilder(const IssuingCa* ca, const hsm::Signer* signer) : ca_(ca), signer_(signer) {}

  const IssuingCa* ca_;        // borrowed
  const hsm::Signer* signer_;  // borrowed
  std::string issuer_der_;
  std::string aki_extension_;
  std::map<std::string, Template> templates_;
};

}  // namespace linesign::issuance

#endif  // LINESIGN_SERVER_ISSUANCE_CERTIFICATE_BUILDER_H_
