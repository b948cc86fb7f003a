// DeviceRegistration: one device certificate's registration with one AWS IoT target as a resumable state machine
// — register → create thing → attach principal → attach policy — one step per call, so the registrar can
// persist the progress after every step and a restart repeats no completed step and skips none.
#ifndef LINESIGN_SERVER_IOT_DEVICE_REGISTRATION_H_
#define LINESIGN_SERVER_IOT_DEVICE_REGISTRATION_H_

#include <string>

#include "absl/status/statusor.h"
#include "server/iot/iot_client.h"

namespace linesign::iot {

// DeviceRegistration is what to do for one certificate and target (fixed when the item is enqueued).
struct DeviceRegistration {
  std::string certificate_der;
  std::string ca_certificate_pem;  // set: RegisterCertificate with the CA; empty: RegisterCertificateWithoutCA
  std::string thing_name;          // empty: no thing
  std::string policy;              // empty: no policy
};

enum class RegistrationStep { kRegister, kCreateThing, kAttachPrincipal, kAttachPolicy, kDone };
const char* RegistrationStepName(RegistrationStep step);  // "register", "create-thing", ...

// RegistrationProgress is what is persisted between steps.
struct RegistrationProgress {
  RegistrationStep next = RegistrationStep::kRegister;
  std::string certificate_arn;  // known once registered
  bool already_registered = false;  // AWS had it before our RegisterCertificate (a retry after a lost answer)

  // ToJson / FromJson: the persisted form; FromJson fails (InvalidArgument) on anything ToJson did not write.
  std::string ToJson() const;
  static absl::StatusOr<RegistrationProgress> FromJson(const std::string& json);
};

// RunNextStep performs `progress->next` once against `api` and, when it succeeded, advances `progress` (steps
// with nothing to do — no thing, no policy — are skipped in the same call). The happy path calls no
// DescribeCertificate: the certificate id is the SHA-256 of the DER. ResourceAlreadyExists on registration is
// answered by one DescribeCertificate by that id; the same PEM registered there is success. On failure `progress`
// is unchanged and the status is the client's (aws_error.h says whether to retry), prefixed with the step; a
// different certificate under our id is FailedPrecondition (permanent).
absl::Status RunNextStep(const IotApi& api, const DeviceRegistration& registration, RegistrationProgress* progress);

}  // namespace linesign::iot

#endif  // LINESIGN_SERVER_IOT_DEVICE_REGISTRATION_H_
