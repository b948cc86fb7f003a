// CrlBuilder: makes a full X.509 v2 CRL (RFC 5280 §5) signed with the issuing CA's key, through the same
// hsm::Signer the certificate builder uses. The TBSCertList is put together with OpenSSL's X509_CRL API (issuer =
// the CA's subject exactly, thisUpdate, nextUpdate, one entry per revoked serial with its revocation date and
// reasonCode — omitted for unspecified, as RFC 5280 §5.3.1 asks — and the extensions cRLNumber and
// authorityKeyIdentifier = the CA's subjectKeyIdentifier); only the signature is made by the signer. Every CRL
// is parsed back and its signature verified with the CA certificate's key before it is returned.
#ifndef LINESIGN_SERVER_REVOCATION_CRL_BUILDER_H_
#define LINESIGN_SERVER_REVOCATION_CRL_BUILDER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "hsm/signer.h"
#include "server/issuance/certificate_builder.h"
#include "server/store/revocation_store.h"

namespace linesign::revocation {

// CrlContent is what one CRL says.
struct CrlContent {
  int64_t number = 0;  // cRLNumber: positive
  absl::Time this_update = absl::UnixEpoch();
  absl::Time next_update = absl::UnixEpoch();
  std::vector<store::RevokedEntry> entries;
};

class CrlBuilder {
 public:
  // Create prepares the CA's parts (subject, key identifier). `ca` and `signer` are borrowed and must outlive the
  // builder. Internal when the CA certificate cannot be encoded.
  static absl::StatusOr<std::unique_ptr<CrlBuilder>> Create(const issuance::IssuingCa* ca, const hsm::Signer* signer);

  // Build returns the DER CRL. InvalidArgument for a number that is not positive, nextUpdate not after
  // thisUpdate, or an entry whose serial is not hexadecimal or whose reason is not an RFC 5280 CRLReason;
  // Unavailable when the signer's device fails; Internal when the result does not verify with the CA's key.
  absl::StatusOr<std::string> Build(const CrlContent& content) const;

  const issuance::IssuingCa& ca() const { return *ca_; }

 private:
  CrlBuilder(const issuance::IssuingCa* ca, const hsm::Signer* signer) : ca_(ca), signer_(signer) {}

  const issuance::IssuingCa* ca_;  // borrowed
  const hsm::Signer* signer_;      // borrowed
  std::string issuer_der_;         // the CA's subject, exactly as in its certificate
  std::string key_id_;             // the CA's subjectKeyIdentifier (or the RFC 5280 method (1) SHA-1)
};

// ReasonName returns the RFC 5280 name of a CRLReason code ("keyCompromise"), or "" for a code RFC 5280 does not
// define.
const char* ReasonName(int reason);

}  // namespace linesign::revocation

#endif  // LINESIGN_SERVER_REVOCATION_CRL_BUILDER_H_
