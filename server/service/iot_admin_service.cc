#include "server/service/iot_admin_service.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "common/utf8.h"
#include "server/iot/aws_error.h"
#include "server/iot/ca_registration.h"
#include "server/iot/sigv4.h"
#include "server/iot/verification_certificate.h"
#include "server/service/off_thread.h"
#include "server/service/peer.h"

namespace linesign::service {
namespace {

absl::Status FillStatus(const iot::IotApi& api, const std::string& id, v1::CaStatus* out) {
  absl::StatusOr<iot::CaCertificateDescription> d = api.DescribeCaCertificate(id);
  out->set_certificate_id(id);
  if (!d.ok()) {
    if (iot::ClassifyAwsError(d.status()) == iot::AwsErrorKind::kNotFound) return absl::OkStatus();
    return d.status();
  }
  out->set_registered(true);
  out->set_certificate_arn(d->certificate_arn);
  out->set_status(d->status);
  out->set_mode(d->certificate_mode);
  out->set_auto_registration_status(d->auto_registration_status);
  return absl::OkStatus();
}

}  // namespace

void IotAdminService::Run(grpc::CallbackServerContext* context, grpc::ServerUnaryReactor* reactor, Rpc rpc,
                          absl::Status precheck, absl::AnyInvocable<absl::Status(const std::string&) &&> work) {
  CallInfo call{"", context->peer(), "", ""};
  absl::StatusOr<std::string> identity = Authenticate(*p_.authenticator, context, p_.clock->Now());
  absl::Status allowed = identity.status();
  if (identity.ok()) {
    call.identity = *identity;
    allowed = p_.access->AllowAdmin(*identity, RpcName(rpc));
  }
  if (allowed.ok()) allowed = precheck;
  if (!allowed.ok()) {
    reactor->Finish(p_.counters->Refused(rpc, call, allowed));
    return;
  }
  // These calls change AWS (and may record a certificate): like signing, they are refused once draining starts.
  if (!p_.drain->Enter(/*even_when_draining=*/false)) {
    reactor->Finish(p_.counters->Refused(rpc, call, absl::UnavailableError("server is shutting down; retry later")));
    return;
  }
  std::string caller = call.identity;
  RunOffThread(p_.executor, p_.counters, p_.drain, reactor, rpc, std::move(call),
               [work = std::move(work), caller = std::move(caller)]() mutable { return std::move(work)(caller); },
               "too many administrative calls in progress; retry in a moment");
}

grpc::ServerUnaryReactor* IotAdminService::RegisterCaCertificate(grpc::CallbackServerContext* context,
                                                                 const v1::RegisterCaCertificateRequest* request,
                                                                 v1::RegisterCaCertificateResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  iot::CaRegistrationOptions options{.set_as_active = !request->no_activate(),
                                     .allow_auto_registration = request->allow_auto_registration()};
  absl::Status precheck;
  switch (request->mode()) {
    case v1::RegisterCaCertificateRequest::MODE_DEFAULT:
      options.mode = iot::CertificateMode::kDefault;
      break;
    case v1::RegisterCaCertificateRequest::MODE_SNI_ONLY:
      options.mode = iot::CertificateMode::kSniOnly;
      break;
    default:
      precheck = absl::InvalidArgumentError("mode must be MODE_DEFAULT or MODE_SNI_ONLY");
  }
  Run(context, reactor, Rpc::kRegisterIotCa, precheck,
      [this, options, response, target = request->target()](const std::string& identity) -> absl::Status {
        LINESIGN_ASSIGN_OR_RETURN(const iot::IotApi* api, p_.targets->Find(target));
        auto issue = [&](const std::string& code) {
          return iot::IssueVerificationCertificate(*p_.signer, code, identity);
        };
        LINESIGN_ASSIGN_OR_RETURN(iot::CaRegistrationResult r, iot::RegisterCa(*api, p_.ca_der, options, issue));
        response->set_already_registered(r.already_registered);
        response->set_certificate_id(r.certificate_id);
        response->set_certificate_arn(r.certificate_arn);
        response->set_status(r.status);
        response->set_mode(r.mode);
        response->set_auto_registration_status(r.auto_registration_status);
        response->set_verification_serial_hex(r.verification_serial_hex);
        LogInfo("iot target '", target, "': CA ", r.certificate_id,
                r.already_registered ? " already registered" : " registered", " (", r.mode, ", ", r.status, ") by ",
                identity,
                r.verification_serial_hex.empty()
                    ? ""
                    : absl::StrCat(", verification certificate ", r.verification_serial_hex));
        return absl::OkStatus();
      });
  return reactor;
}

grpc::ServerUnaryReactor* IotAdminService::GetCaStatus(grpc::CallbackServerContext* context,
                                                       const v1::CaStatusRequest* request, v1::CaStatus* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Run(context, reactor, Rpc::kGetIotCaStatus, absl::OkStatus(),
      [this, response, target = request->target()](const std::string&) -> absl::Status {
        LINESIGN_ASSIGN_OR_RETURN(const iot::IotApi* api, p_.targets->Find(target));
        return FillStatus(*api, iot::HexSha256(p_.ca_der), response);
      });
  return reactor;
}

grpc::ServerUnaryReactor* IotAdminService::SetCaStatus(grpc::CallbackServerContext* context,
                                                       const v1::CaStatusRequest* request, v1::CaStatus* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Run(context, reactor, Rpc::kSetIotCaStatus, absl::OkStatus(),
      [this, response, target = request->target(), active = request->active()](const std::string& identity)
          -> absl::Status {
        LINESIGN_ASSIGN_OR_RETURN(const iot::IotApi* api, p_.targets->Find(target));
        const std::string id = iot::HexSha256(p_.ca_der);
        LINESIGN_RETURN_IF_ERROR(api->UpdateCaCertificate(id, active ? "ACTIVE" : "INACTIVE", std::nullopt));
        LogInfo("iot target '", target, "': CA ", id, " set ", active ? "ACTIVE" : "INACTIVE", " by ", identity);
        return FillStatus(*api, id, response);
      });
  return reactor;
}

namespace {

v1::IotRegistrationStatus::State StateOf(store::IotRegistrationState s) {
  switch (s) {
    case store::IotRegistrationState::kPending:
      return v1::IotRegistrationStatus::STATE_PENDING;
    case store::IotRegistrationState::kRegistered:
      return v1::IotRegistrationStatus::STATE_REGISTERED;
    case store::IotRegistrationState::kFailed:
      return v1::IotRegistrationStatus::STATE_FAILED;
  }
  return v1::IotRegistrationStatus::STATE_UNSPECIFIED;
}

}  // namespace

grpc::ServerUnaryReactor* IotAdminService::AwaitIotRegistration(grpc::CallbackServerContext* context,
                                                                const v1::AwaitIotRegistrationRequest* request,
                                                                v1::IotRegistrationStatus* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  constexpr Rpc kRpc = Rpc::kAwaitIotRegistration;
  CallInfo call{"", context->peer(), "", ""};
  absl::StatusOr<std::string> identity = Authenticate(*p_.authenticator, context, p_.clock->Now());
  absl::Status allowed = identity.status();
  // An administrator may wait for any certificate; a station (an identity some rule matches) for the ones it
  // requested itself, which it learns below from the certificate's record.
  bool own_only = false;
  if (identity.ok()) {
    call.identity = *identity;
    allowed = p_.access->AllowAdmin(*identity, RpcName(kRpc));
    if (!allowed.ok() && p_.access->AllowRead(*identity, RpcName(kRpc)).ok()) {
      allowed = absl::OkStatus();
      own_only = true;
    }
  }
  std::string serial = absl::AsciiStrToUpper(request->serial_hex());
  if (allowed.ok() && (serial.empty() || serial.size() > 42 ||
                       !std::all_of(serial.begin(), serial.end(), [](char c) { return absl::ascii_isxdigit(c); }))) {
    allowed = absl::InvalidArgumentError(absl::StrCat(
        "serial_hex must be 1 to 42 hexadecimal digits (got ", request->serial_hex().size(), " bytes: ",
        QuoteForDisplay(request->serial_hex().substr(0, 64)), ")"));
  }
  std::string target = request->target();
  if (allowed.ok() && target.empty()) {
    if (p_.target_names.size() == 1) {
      target = p_.target_names.front();
    } else {
      allowed = absl::InvalidArgumentError(absl::StrCat(
          "target is required: ", p_.target_names.size(), " targets are configured (iot.targets: ",
          p_.target_names.empty() ? "none" : absl::StrJoin(p_.target_names, ", "), ")"));
    }
  }
  if (allowed.ok() && std::find(p_.target_names.begin(), p_.target_names.end(), target) == p_.target_names.end()) {
    allowed = absl::NotFoundError(absl::StrCat("iot target ", QuoteForDisplay(target.substr(0, 64)),
                                               " is not configured (iot.targets: ",
                                               p_.target_names.empty() ? "none" : absl::StrJoin(p_.target_names, ", "),
                                               ")"));
  }
  if (allowed.ok() && p_.watch == nullptr) {
    allowed = absl::FailedPreconditionError("AWS IoT registration is not available on this server");
  }
  if (!allowed.ok()) {
    reactor->Finish(p_.counters->Refused(kRpc, call, allowed));
    return reactor;
  }
  while (serial.size() > 1 && serial[0] == '0' && serial[1] == '0') serial.erase(0, 2);
  if (own_only) {
    // One indexed read by serial: the same answer for a certificate that does not exist and another station's,
    // so a station learns nothing of serials it did not request.
    auto cert = p_.reader->FindBySerial(p_.issuer_id, serial);
    absl::Status own = cert.status();
    if (cert.ok() && (!cert->has_value() || (*cert)->station != call.identity)) {
      own = absl::PermissionDeniedError(absl::StrCat(
          "station '", call.identity, "' may wait only for certificates it requested; ", serial,
          " is not one of them (administrators may wait for any)"));
    }
    if (!own.ok()) {
      reactor->Finish(p_.counters->Refused(kRpc, call, own));
      return reactor;
    }
  }
  const absl::Duration timeout =
      request->timeout_ms() == 0 ? kDefaultAwait : std::min(kMaxAwait, absl::Milliseconds(request->timeout_ms()));
  const store::IotRegistrationKey key{p_.issuer_id, serial, target};
  // The answer comes on the watch's thread: the store look-up for a missing registration is one indexed read.
  absl::Status waiting = p_.watch->Wait(
      key, absl::Now() + timeout,
      [this, reactor, response, call, key](absl::StatusOr<store::IotRegistration> r) {
        if (absl::IsNotFound(r.status())) {
          auto cert = p_.reader->FindBySerial(key.issuer_id, key.serial_hex);
          if (!cert.ok()) {
            r = cert.status();
          } else if (!cert->has_value()) {
            r = absl::NotFoundError(absl::StrCat("no certificate with serial ", key.serial_hex, " from this CA"));
          } else {
            r = absl::FailedPreconditionError(absl::StrCat(
                "certificate ", key.serial_hex, " was never queued for registration with target '", key.target,
                "': its profile ", QuoteForDisplay((*cert)->profile),
                " does not register there (`linesign iot register` queues certificates already issued)"));
          }
        }
        if (!r.ok()) {
          reactor->Finish(p_.counters->Refused(kRpc, call, r.status()));
          return;
        }
        response->set_serial_hex(r->key.serial_hex);
        response->set_target(r->key.target);
        response->set_state(StateOf(r->state));
        response->set_certificate_id(r->certificate_id);
        response->set_certificate_arn(ToValidUtf8(r->certificate_arn));
        response->set_thing_name(ToValidUtf8(r->thing_name));
        response->set_policy(ToValidUtf8(r->policy));
        response->set_already_present(r->already_present);
        response->set_error_code(ToValidUtf8(r->error_code));
        response->set_error_message(ToValidUtf8(r->error_message));
        response->set_attempts(r->attempts);
        p_.counters->Answered(kRpc);
        reactor->Finish(grpc::Status::OK);
      });
  if (!waiting.ok()) reactor->Finish(p_.counters->Refused(kRpc, call, waiting));
  return reactor;
}

}  // namespace linesign::service
