#include "server/service/iot_admin_service.h"

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "server/iot/ca_registration.h"
#include "server/iot/verification_certificate.h"
#include "server/service/peer.h"

namespace linesign::service {

grpc::ServerUnaryReactor* IotAdminService::RegisterCaCertificate(grpc::CallbackServerContext* context,
                                                                 const v1::RegisterCaCertificateRequest* request,
                                                                 v1::RegisterCaCertificateResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const Rpc rpc = Rpc::kRegisterIotCa;
  CallInfo call{"", context->peer(), "", ""};
  absl::StatusOr<std::string> identity = Authenticate(*p_.authenticator, context, p_.clock->Now());
  absl::Status allowed = identity.status();
  if (identity.ok()) {
    call.identity = *identity;
    allowed = p_.access->AllowAdmin(*identity, RpcName(rpc));
  }
  iot::CaRegistrationOptions options{.set_as_active = !request->no_activate(),
                                     .allow_auto_registration = request->allow_auto_registration()};
  if (allowed.ok()) {
    switch (request->mode()) {
      case v1::RegisterCaCertificateRequest::MODE_DEFAULT:
        options.mode = iot::CertificateMode::kDefault;
        break;
      case v1::RegisterCaCertificateRequest::MODE_SNI_ONLY:
        options.mode = iot::CertificateMode::kSniOnly;
        break;
      default:
        allowed = absl::InvalidArgumentError("mode must be MODE_DEFAULT or MODE_SNI_ONLY");
    }
  }
  if (!allowed.ok()) {
    reactor->Finish(p_.counters->Refused(rpc, call, allowed));
    return reactor;
  }
  // Registration changes AWS and records a certificate: like signing, it is refused once draining starts.
  if (!p_.drain->Enter(/*even_when_draining=*/false)) {
    reactor->Finish(p_.counters->Refused(rpc, call, absl::UnavailableError("server is shutting down; retry later")));
    return reactor;
  }
  auto task = [this, reactor, call, options, response, target = request->target()] {
    const Rpc rpc = Rpc::kRegisterIotCa;
    absl::Status st = [&]() -> absl::Status {
      LINESIGN_ASSIGN_OR_RETURN(const iot::IotApi* api, p_.targets->Find(target));
      auto issue = [&](const std::string& code) {
        return iot::IssueVerificationCertificate(*p_.signer, code, call.identity);
      };
      LINESIGN_ASSIGN_OR_RETURN(iot::CaRegistrationResult r, iot::RegisterCa(*api, p_.ca_der, options, issue));
      response->set_already_registered(r.already_registered);
      response->set_certificate_id(r.certificate_id);
      response->set_certificate_arn(r.certificate_arn);
      response->set_status(r.status);
      response->set_mode(r.mode);
      response->set_auto_registration_status(r.auto_registration_status);
      response->set_verification_serial_hex(r.verification_serial_hex);
      LogInfo("iot target '", target, "': CA ", r.certificate_id, r.already_registered ? " already registered" : " registered",
              " (", r.mode, ", ", r.status, ") by ", call.identity,
              r.verification_serial_hex.empty() ? "" : absl::StrCat(", verification certificate ", r.verification_serial_hex));
      return absl::OkStatus();
    }();
    if (st.ok()) {
      p_.counters->Answered(rpc);
      reactor->Finish(grpc::Status::OK);
    } else {
      reactor->Finish(p_.counters->Refused(rpc, call, st));
    }
    p_.drain->Leave();
  };
  if (!p_.executor->TrySubmit(std::move(task))) {
    p_.drain->Leave();
    reactor->Finish(p_.counters->Refused(
        rpc, call, absl::ResourceExhaustedError("too many administrative calls in progress; retry in a moment")));
  }
  return reactor;
}

}  // namespace linesign::service
