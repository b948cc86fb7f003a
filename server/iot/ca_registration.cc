#include "server/iot/ca_registration.h"

#include "absl/strings/str_cat.h"
#include "common/openssl_util.h"
#include "server/iot/aws_error.h"
#include "server/iot/sigv4.h"

namespace linesign::iot {
namespace {

absl::Status Step(absl::string_view step, const absl::Status& s) {
  absl::Status out(s.code(), absl::StrCat(step, ": ", s.message()));
  s.ForEachPayload([&](absl::string_view url, const absl::Cord& payload) { out.SetPayload(url, payload); });
  return out;
}

absl::StatusOr<CaRegistrationResult> Existing(const IotApi& api, const std::string& id) {
  absl::StatusOr<CaCertificateDescription> d = api.DescribeCaCertificate(id);
  if (!d.ok()) return d.status();
  return CaRegistrationResult{.already_registered = true, .certificate_id = d->certificate_id,
                              .certificate_arn = d->certificate_arn, .status = d->status,
                              .mode = d->certificate_mode, .auto_registration_status = d->auto_registration_status};
}

}  // namespace

absl::StatusOr<CaRegistrationResult> RegisterCa(const IotApi& api, const std::string& ca_der,
                                                const CaRegistrationOptions& options, const IssueVerification& issue) {
  const std::string id = HexSha256(ca_der);
  absl::StatusOr<CaRegistrationResult> existing = Existing(api, id);
  if (existing.ok()) return existing;
  if (ClassifyAwsError(existing.status()) != AwsErrorKind::kNotFound) {
    return Step("looking the CA up (DescribeCACertificate)", existing.status());
  }

  RegisterCaCertificateRequest request{.ca_certificate_pem = PemEncode("CERTIFICATE", ca_der),
                                       .mode = options.mode,
                                       .set_as_active = options.set_as_active,
                                       .allow_auto_registration = options.allow_auto_registration};
  CaRegistrationResult result;
  if (options.mode == CertificateMode::kDefault) {
    absl::StatusOr<std::string> code = api.GetRegistrationCode();
    if (!code.ok()) return Step("GetRegistrationCode", code.status());
    absl::StatusOr<IssuedCertificate> verification = issue(*code);
    if (!verification.ok()) return Step("issuing the verification certificate", verification.status());
    request.verification_certificate_pem = PemEncode("CERTIFICATE", verification->der);
    result.verification_serial_hex = verification->serial_hex;
  }
  absl::StatusOr<RegisteredCertificate> registered = api.RegisterCaCertificate(request);
  if (!registered.ok()) {
    if (ClassifyAwsError(registered.status()) == AwsErrorKind::kAlreadyExists) {
      absl::StatusOr<CaRegistrationResult> raced = Existing(api, id);
      if (raced.ok()) return raced;
    }
    return Step("RegisterCACertificate", registered.status());
  }
  if (registered->certificate_id != id) {
    return absl::InternalError(absl::StrCat("RegisterCACertificate answered certificate id ",
                                            registered->certificate_id, ", not the CA's SHA-256 ", id));
  }
  result.certificate_id = registered->certificate_id;
  result.certificate_arn = registered->certificate_arn;
  result.status = options.set_as_active ? "ACTIVE" : "INACTIVE";
  result.mode = CertificateModeName(options.mode);
  result.auto_registration_status = options.allow_auto_registration ? "ENABLE" : "DISABLE";
  return result;
}

}  // namespace linesign::iot
