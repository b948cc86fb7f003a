// The AWS IoT CA verification certificate: a certificate whose CN is the account's registration code, signed by
// the issuing CA's key in the HSM through the issuance core (IssuanceRequest::Reason::kCaVerification), recorded
// like any certificate.
#ifndef LINESIGN_SERVER_IOT_VERIFICATION_CERTIFICATE_H_
#define LINESIGN_SERVER_IOT_VERIFICATION_CERTIFICATE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/issuance/batch_signer.h"
#include "server/iot/ca_registration.h"
#include "server/profile/profile.h"

namespace linesign::iot {

// kVerificationProfileName names the built-in profile verification certificates are issued (and recorded)
// under: CN only, 1 day, digitalSignature, clientAuth. It is not a configured profile: no station can use it.
inline constexpr char kVerificationProfileName[] = "linesign:iot-ca-verification";

// VerificationProfile returns that profile, compiled once.
absl::StatusOr<std::shared_ptr<const profile::Profile>> VerificationProfile();

// IssueVerificationCertificate issues, through `signer` (borrowed), a certificate with subject CN=<code> for a
// fresh P-256 key that is thrown away (AWS checks only the CN and the CA's signature), requested by
// administrator `identity` with request id "iot-verify:<code>:<random>". Blocks until the record is durable.
// InvalidArgument when `code` is not 1 to 64 hex digits; the signer's errors otherwise.
absl::StatusOr<IssuedCertificate> IssueVerificationCertificate(issuance::BatchSigner& signer, const std::string& code,
                                                               const std::string& identity);

}  // namespace linesign::iot

#endif  // LINESIGN_SERVER_IOT_VERIFICATION_CERTIFICATE_H_
