// RegisterCa: the seeds' CA registration flow (GetRegistrationCode → verification certificate signed by the CA
// key → RegisterCACertificate), idempotent: the CA's id is the SHA-256 of its DER, so an existing registration
// is found with one DescribeCACertificate and reported instead of repeated.
#ifndef LINESIGN_SERVER_IOT_CA_REGISTRATION_H_
#define LINESIGN_SERVER_IOT_CA_REGISTRATION_H_

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "server/iot/iot_client.h"

namespace linesign::iot {

struct CaRegistrationOptions {
  CertificateMode mode = CertificateMode::kDefault;
  bool set_as_active = true;
  bool allow_auto_registration = false;
};

struct CaRegistrationResult {
  bool already_registered = false;  // found by its id; nothing was registered
  std::string certificate_id, certificate_arn, status, mode, auto_registration_status;
  std::string verification_serial_hex;  // the verification certificate issued (DEFAULT mode, new registration)
};

// IssuedCertificate is what the issuing side answers for a verification certificate.
struct IssuedCertificate {
  std::string der;
  std::string serial_hex;
};

// IssueVerification issues the verification certificate for `registration_code` (CN = the code) with the CA key.
using IssueVerification = std::function<absl::StatusOr<IssuedCertificate>(const std::string& registration_code)>;

// RegisterCa registers the CA `ca_der` (the issuing CA, which signs the device certificates) with `api`.
// Already registered (DescribeCACertificate by the local id, or ResourceAlreadyExists racing another caller):
// the existing registration is returned with already_registered set, and nothing changes. DEFAULT mode issues
// the verification certificate through `issue`; SNI_ONLY needs none. Errors are the client's (aws_error.h) or
// the issuer's, prefixed with the step that failed.
absl::StatusOr<CaRegistrationResult> RegisterCa(const IotApi& api, const std::string& ca_der,
                                                const CaRegistrationOptions& options, const IssueVerification& issue);

}  // namespace linesign::iot

#endif  // LINESIGN_SERVER_IOT_CA_REGISTRATION_H_
