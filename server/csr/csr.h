// Decoding, verifying and checking device CSRs against a profile: everything the front does before a request
// reaches the signer. Every refusal is InvalidArgument with a message that says what was wrong.
#ifndef LINESIGN_SERVER_CSR_CSR_H_
#define LINESIGN_SERVER_CSR_CSR_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "linesign/v1/config.pb.h"
#include "server/csr/strict_rules.h"
#include "server/issuance/issuance_request.h"
#include "server/profile/profile.h"

namespace linesign::csr {

// Largest CSR accepted, DER or PEM.
inline constexpr size_t kMaxCsrBytes = 64 * 1024;

// KeyInfo describes a device public key.
struct KeyInfo {
  std::string type;  // "ec-p256", "ec-p384", "ed25519", "rsa", or the unsupported name for messages
  int bits = 0;
};

// CheckedCsr is a CSR that decoded, verified and passed its profile. The byte fields are copied verbatim from
// the CSR, so the certificate carries exactly what the device asked for and the profile allowed.
struct CheckedCsr {
  std::string der;               // the whole CertificationRequest
  std::string subject_der;       // Name, DER
  std::string subject_text;      // RFC 2253 form, for records and logs
  std::vector<SubjectAttribute> subject_attributes;
  std::string spki_der;          // SubjectPublicKeyInfo, DER
  std::string san_der;           // GeneralNames, DER; empty when the CSR asks for no SAN
  std::vector<San> sans;         // typed, in the CSR's order
  KeyInfo key;
};

// DecodeCsr accepts DER or PEM ("CERTIFICATE REQUEST" / "NEW CERTIFICATE REQUEST"), at most kMaxCsrBytes, with
// nothing after the request, and returns the DER.
absl::StatusOr<std::string> DecodeCsr(absl::string_view der_or_pem);

// CheckCsr parses `der`, checks the key against `profile` (`profile_name` is for messages), verifies the CSR's
// self-signature, and checks its subject and SANs against the profile.
//
// The hot path (csr/fast_csr.cc): a strict DER decoder that keeps the subject and SubjectPublicKeyInfo bytes as
// they came, and OpenSSL's primitives (digest, ECDSA/RSA/Ed25519 verify) without its X509_REQ object layer. A
// CSR it cannot take apart is handed to CheckCsrReference for the message; one the reference accepts but the
// strict decoder does not (BER inside the request) is refused as non-canonical.
absl::StatusOr<CheckedCsr> CheckCsr(const std::string& der, const v1::Profile& profile,
                                    absl::string_view profile_name);

// CheckCsr with a compiled profile is what the front calls: the checks above under profile.config(), then the
// profile's value rules (Profile::CheckValues) and its SAN derivation (Profile::MakeSans): the checked CSR's
// `sans` are the certificate's.
absl::StatusOr<CheckedCsr> CheckCsr(const std::string& der, const profile::Profile& profile);

// MakeIssuanceRequest turns `csr`, checked by CheckCsr against `profile`, into the request for a new
// certificate for `station` (the authenticated identity) and its `request_id`, keeping the CSR's hash.
issuance::IssuanceRequest MakeIssuanceRequest(CheckedCsr csr, std::shared_ptr<const profile::Profile> profile,
                                              std::string station, std::string request_id);

// CheckCsrReference does the same with OpenSSL's X509_REQ API. It is the reference the fast path is tested
// against (identical CheckedCsr for every accepted CSR; never accepts less), and the source of its messages
// for malformed input.
absl::StatusOr<CheckedCsr> CheckCsrReference(const std::string& der, const v1::Profile& profile,
                                             absl::string_view profile_name);

// CheckCsrFastOnly is the fast path alone (differential tests, fuzzing, benchmarks): the checked CSR, or nullopt
// when CheckCsr would hand the CSR to the reference (refused, not DER, or a shape it leaves to the reference).
std::optional<CheckedCsr> CheckCsrFastOnly(const std::string& der, const v1::Profile& profile);

}  // namespace linesign::csr

#endif  // LINESIGN_SERVER_CSR_CSR_H_
