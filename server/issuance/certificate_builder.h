// CertificateBuilder: turns an IssuanceRequest into a signed X.509 v3 certificate with the issuing CA's signer.
//
// The TBSCertificate is assembled directly in DER from parts prepared once (the issuer name, algorithm and
// authority key id here; the profile's fixed extensions in profile::Profile) plus the per-request fields, so the cost per certificate is the signature and little else.
#ifndef LINESIGN_SERVER_ISSUANCE_CERTIFICATE_BUILDER_H_
#define LINESIGN_SERVER_ISSUANCE_CERTIFICATE_BUILDER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/openssl_util.h"
#include "hsm/signer.h"
#include "server/issuance/issuance_request.h"

namespace linesign::issuance {

// NewSerial returns a fresh certificate serial of 16 octets (at most 20 once DER-encoded, positive): `now` in
// milliseconds since the Unix epoch in the first 6 octets, then 80 bits from the CSPRNG (DESIGN invariant 3 asks
// for at least 64). The time first makes a batch's serials neighbours in the store's serial index, so a commit
// writes one index page for the batch instead of one page per certificate (random serials land on random
// pages); the random part alone makes serials unpredictable, and the store alone makes them unique.
std::string NewSerial(absl::Time now = absl::Now());

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
  // Create prepares the CA's parts. `ca` and `signer` are borrowed and must outlive the builder.
  static absl::StatusOr<std::unique_ptr<CertificateBuilder>> Create(const IssuingCa* ca, const hsm::Signer* signer);

  // TbsDer returns the TBSCertificate for `request` (under its profile's template), with `serial`, issued at
  // `now`. The subject, public key and SANs must satisfy csr/strict_rules.h (string types, SAN syntax, key
  // encodings), whoever made `request`: otherwise InvalidArgument naming what is wrong, and nothing is signed.
  // InvalidArgument when the request has no profile.
  absl::StatusOr<std::string> TbsDer(const IssuanceRequest& request, const std::string& serial, absl::Time now,
                                     absl::Time* not_before, absl::Time* not_after) const;

  // Issue builds the TBSCertificate and signs it. A failed signature keeps the signer's code (Unavailable when the
  // HSM fails or is away) with "certificate not issued: the CA key did not sign (KEY): REASON".
  absl::StatusOr<IssuedCertificate> Issue(const IssuanceRequest& request, const std::string& serial,
                                          absl::Time now) const;

  const IssuingCa& ca() const { return *ca_; }

 private:
  CertificateBuilder(const IssuingCa* ca, const hsm::Signer* signer) : ca_(ca), signer_(signer) {}

  const IssuingCa* ca_;        // borrowed
  const hsm::Signer* signer_;  // borrowed
  std::string issuer_der_;
  std::string aki_extension_;
};

}  // namespace linesign::issuance

#endif  // LINESIGN_SERVER_ISSUANCE_CERTIFICATE_BUILDER_H_
