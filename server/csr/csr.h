// Decoding, verifying and checking device CSRs against a profile: everything the front does before a request
// reaches the signer. Every refusal is InvalidArgument with a message that says what was wrong.
#ifndef LINESIGN_SERVER_CSR_CSR_H_
#define LINESIGN_SERVER_CSR_CSR_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "linesign/v1/config.pb.h"

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
  std::string spki_der;          // SubjectPublicKeyInfo, DER
  std::string san_der;           // GeneralNames, DER; empty when the CSR asks for no SAN
  std::vector<std::string> sans; // "DNS:x", "IP:1.2.3.4", ... for records
  KeyInfo key;
};

// DecodeCsr accepts DER or PEM ("CERTIFICATE REQUEST" / "NEW CERTIFICATE REQUEST"), at most kMaxCsrBytes, with
// nothing after the request, and returns the DER.
absl::StatusOr<std::string> DecodeCsr(absl::string_view der_or_pem);

// CheckCsr parses `der`, checks the key against `profile` (`profile_name` is for messages), verifies the CSR's
// self-signature, and checks its subject and SANs against the profile.
absl::StatusOr<CheckedCsr> CheckCsr(const std::string& der, const v1::Profile& profile,
                                    absl::string_view profile_name);

}  // namespace linesign::csr

#endif  // LINESIGN_SERVER_CSR_CSR_H_
