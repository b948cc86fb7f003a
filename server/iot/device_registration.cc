#include "server/iot/device_registration.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/openssl_util.h"
#include "nlohmann/json.hpp"
#include "server/iot/aws_error.h"
#include "server/iot/sigv4.h"

namespace linesign::iot {
namespace {

absl::Status Step(RegistrationStep step, const absl::Status& s) {
  absl::Status out(s.code(), absl::StrCat(RegistrationStepName(step), ": ", s.message()));
  s.ForEachPayload([&](absl::string_view url, const absl::Cord& payload) { out.SetPayload(url, payload); });
  return out;
}

// SamePem compares two PEM texts ignoring line breaks and spaces (AWS may re-wrap them).
bool SamePem(absl::string_view a, absl::string_view b) {
  std::string x, y;
  for (char c : a) if (!absl::ascii_isspace(c)) x.push_back(c);
  for (char c : b) if (!absl::ascii_isspace(c)) y.push_back(c);
  return x == y;
}

RegistrationStep After(RegistrationStep step, const DeviceRegistration& r) {
  const bool thing = !r.thing_name.empty(), policy = !r.policy.empty();
  switch (step) {
    case RegistrationStep::kRegister:
      return thing ? RegistrationStep::kCreateThing : policy ? RegistrationStep::kAttachPolicy : RegistrationStep::kDone;
    case RegistrationStep::kCreateThing:
      return RegistrationStep::kAttachPrincipal;
    case RegistrationStep::kAttachPrincipal:
      return policy ? RegistrationStep::kAttachPolicy : RegistrationStep::kDone;
    case RegistrationStep::kAttachPolicy:
    case RegistrationStep::kDone:
      return RegistrationStep::kDone;
  }
  return RegistrationStep::kDone;
}

}  // namespace

const char* RegistrationStepName(RegistrationStep step) {
  switch (step) {
    case RegistrationStep::kRegister: return "register";
    case RegistrationStep::kCreateThing: return "create-thing";
    case RegistrationStep::kAttachPrincipal: return "attach-principal";
    case RegistrationStep::kAttachPolicy: return "attach-policy";
    case RegistrationStep::kDone: return "done";
  }
  return "?";
}

std::string RegistrationProgress::ToJson() const {
  return nlohmann::json{{"next", RegistrationStepName(next)},
                        {"certificate_arn", certificate_arn},
                        {"already_registered", already_registered}}
      .dump();
}

absl::StatusOr<RegistrationProgress> RegistrationProgress::FromJson(const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j["next"].is_string() || !j["certificate_arn"].is_string() ||
      !j["already_registered"].is_boolean()) {
    return absl::InvalidArgumentError("registration progress is not what RegistrationProgress::ToJson writes");
  }
  RegistrationProgress p;
  const std::string next = j["next"].get<std::string>();
  bool known = false;
  for (RegistrationStep s : {RegistrationStep::kRegister, RegistrationStep::kCreateThing,
                             RegistrationStep::kAttachPrincipal, RegistrationStep::kAttachPolicy,
                             RegistrationStep::kDone}) {
    if (next == RegistrationStepName(s)) {
      p.next = s;
      known = true;
    }
  }
  if (!known) return absl::InvalidArgumentError(absl::StrCat("registration progress names no step '", next, "'"));
  p.certificate_arn = j["certificate_arn"].get<std::string>();
  p.already_registered = j["already_registered"].get<bool>();
  if (p.next != RegistrationStep::kRegister && p.certificate_arn.empty()) {
    return absl::InvalidArgumentError("registration progress past 'register' has no certificate_arn");
  }
  return p;
}

absl::Status RunNextStep(const IotApi& api, const DeviceRegistration& r, RegistrationProgress* progress) {
  const RegistrationStep step = progress->next;
  switch (step) {
    case RegistrationStep::kRegister: {
      const std::string pem = PemEncode("CERTIFICATE", r.certificate_der);
      absl::StatusOr<RegisteredCertificate> registered =
          r.ca_certificate_pem.empty() ? api.RegisterCertificateWithoutCa(pem, "ACTIVE")
                                       : api.RegisterCertificate(pem, r.ca_certificate_pem, "ACTIVE");
      bool already = false;
      if (!registered.ok()) {
        if (ClassifyAwsError(registered.status()) != AwsErrorKind::kAlreadyExists) {
          return Step(step, registered.status());
        }
        // No idempotency token exists: the one look-up that tells our earlier (answer lost) registration from
        // a stranger's certificate.
        const std::string id = HexSha256(r.certificate_der);
        absl::StatusOr<CertificateDescription> existing = api.DescribeCertificate(id);
        if (!existing.ok()) return Step(step, existing.status());
        if (!SamePem(existing->certificate_pem, pem)) {
          return absl::FailedPreconditionError(
              absl::StrCat("register: AWS IoT holds another certificate under id ", id));
        }
        registered = RegisteredCertificate{.certificate_id = existing->certificate_id,
                                           .certificate_arn = existing->certificate_arn};
        already = true;
      }
      progress->certificate_arn = registered->certificate_arn;
      progress->already_registered = already;
      break;
    }
    case RegistrationStep::kCreateThing: {
      absl::StatusOr<Thing> thing = api.CreateThing(r.thing_name, {});
      // A thing of that name with attributes of its own is still the thing to attach to.
      if (!thing.ok() && ClassifyAwsError(thing.status()) != AwsErrorKind::kAlreadyExists) {
        return Step(step, thing.status());
      }
      break;
    }
    case RegistrationStep::kAttachPrincipal: {
      absl::Status s = api.AttachThingPrincipal(r.thing_name, progress->certificate_arn);
      if (!s.ok()) return Step(step, s);
      break;
    }
    case RegistrationStep::kAttachPolicy: {
      absl::Status s = api.AttachPolicy(r.policy, progress->certificate_arn);
      if (!s.ok() && ClassifyAwsError(s) != AwsErrorKind::kAlreadyExists) return Step(step, s);
      break;
    }
    case RegistrationStep::kDone:
      return absl::OkStatus();
  }
  progress->next = After(step, r);
  return absl::OkStatus();
}

}  // namespace linesign::iot
