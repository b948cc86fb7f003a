// IotAdminService's bulk registration jobs and status (issue 10, "Bulk jobs"): EnqueueIotRegistrations,
// GetIotRegistrations, GetIotStatus. Admission and the executor as the service's other calls (Run).
#include <algorithm>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "common/utf8.h"
#include "server/service/iot_admin_service.h"

namespace linesign::service {
namespace {

// kSerialsPerCall bounds the serials of one EnqueueIotRegistrations / GetIotRegistrations call, and the page of
// a profile selection.
constexpr int kSerialsPerCall = 1000;

// NormalizeSerial returns `serial` as the store keys it (upper-case hex, whole octets, no leading zero octet), or
// nullopt when it is not 1 to 42 hexadecimal digits.
std::optional<std::string> NormalizeSerial(const std::string& serial) {
  if (serial.empty() || serial.size() > 42 ||
      !std::all_of(serial.begin(), serial.end(), [](char c) { return absl::ascii_isxdigit(c); })) {
    return std::nullopt;
  }
  std::string s = absl::AsciiStrToUpper(serial);
  if (s.size() % 2 == 1) s.insert(0, "0");
  while (s.size() > 2 && s[0] == '0' && s[1] == '0') s.erase(0, 2);
  return s;
}

// NormalizeSerials checks and normalises a request's serials: InvalidArgument for too many or one that is not a
// serial (by its index).
absl::StatusOr<std::vector<std::string>> NormalizeSerials(const google::protobuf::RepeatedPtrField<std::string>& in) {
  if (in.size() > kSerialsPerCall) {
    return absl::InvalidArgumentError(
        absl::StrCat("serials_hex has ", in.size(), " serials; at most ", kSerialsPerCall, " per call"));
  }
  std::vector<std::string> out;
  out.reserve(in.size());
  for (int i = 0; i < in.size(); ++i) {
    std::optional<std::string> s = NormalizeSerial(in[i]);
    if (!s.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat("serials_hex[", i, "]: ", QuoteForDisplay(in[i].substr(0, 64)),
                                                     " is not a serial (1 to 42 hexadecimal digits)"));
    }
    out.push_back(*std::move(s));
  }
  return out;
}

}  // namespace

namespace {

// KnownTarget: NotFound naming the configured targets when `target` is not one of them.
absl::Status KnownTarget(const std::vector<std::string>& names, const std::string& target) {
  if (std::find(names.begin(), names.end(), target) != names.end()) return absl::OkStatus();
  std::vector<std::string> sorted = names;
  std::sort(sorted.begin(), sorted.end());
  // A plain name in single quotes, as IotTargets::Find says it; anything else escaped.
  const bool plain = QuoteForDisplayUnlessPlain(target) == target;
  return absl::NotFoundError(absl::StrCat("iot target ", plain ? absl::StrCat("'", target, "'") : QuoteForDisplay(target),
                                          " is not configured (iot.targets: ",
                                          sorted.empty() ? "none" : absl::StrJoin(sorted, ", "), ")"));
}

}  // namespace

grpc::ServerUnaryReactor* IotAdminService::EnqueueIotRegistrations(grpc::CallbackServerContext* context,
                                                                   const v1::EnqueueIotRegistrationsRequest* request,
                                                                   v1::EnqueueIotRegistrationsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status precheck = KnownTarget(p_.target_names, request->target());
  absl::StatusOr<std::vector<std::string>> serials = NormalizeSerials(request->serials_hex());
  const bool by_serial = !request->serials_hex().empty(), by_profile = !request->profile().empty();
  if (precheck.ok() && by_serial == by_profile) {
    precheck = absl::InvalidArgumentError(by_serial ? "give serials_hex or profile, not both"
                                                    : "give serials_hex (certificates by serial) or profile "
                                                      "(certificates issued under it, optionally since issued_since)");
  }
  if (precheck.ok()) precheck = serials.status();
  if (precheck.ok() && by_serial && (request->has_issued_since() || !request->page_token().empty())) {
    precheck = absl::InvalidArgumentError("issued_since and page_token select with profile only");
  }
  if (precheck.ok() && by_profile) {
    absl::StatusOr<std::shared_ptr<const profile::Profile>> profile = p_.profiles->Find(request->profile());
    precheck = profile.status();
    // Its certificates would all fail (the registrar takes mode, thing and policy from the profile).
    if (profile.ok() && (*profile)->config().iot().register_() != "with_ca" &&
        (*profile)->config().iot().register_() != "without_ca") {
      precheck = absl::FailedPreconditionError(
          absl::StrCat("profile '", request->profile(), "' does not register with AWS IoT (profiles.",
                       request->profile(), ".iot.register is not with_ca or without_ca)"));
    }
  }
  if (precheck.ok() && by_profile && request->issued_since().seconds() < 0) {
    precheck = absl::InvalidArgumentError("issued_since is before 1970");
  }
  Run(context, reactor, Rpc::kEnqueueIotRegistrations, precheck,
      [this, response, request, serials = serials.ok() ? *std::move(serials) : std::vector<std::string>{}](
          const std::string& identity) mutable -> absl::Status {
        const std::string& target = request->target();
        if (!request->profile().empty()) {
          store::CertificateQuery q;
          q.profile = request->profile();
          if (request->has_issued_since()) q.issued_from = request->issued_since().seconds();
          q.page_size = kSerialsPerCall;
          q.page_token = request->page_token();
          q.now = absl::ToUnixSeconds(p_.clock->Now());
          LINESIGN_ASSIGN_OR_RETURN(store::CertificatePage page, p_.reader->List(q));
          for (const store::CertificateRecord& r : page.records) serials.push_back(r.serial_hex);
          response->set_next_page_token(page.next_page_token);
        }
        store::IotEnqueueResult r;
        if (!serials.empty()) {
          LINESIGN_ASSIGN_OR_RETURN(
              r, p_.registrations->EnqueueIotRegistrations(p_.issuer_id, target, serials, p_.clock->Now()));
        }
        response->set_enqueued(r.enqueued);
        response->set_already_registered(r.already_registered);
        response->set_already_pending(r.already_pending);
        response->set_unknown_serial(r.unknown_serial);
        for (std::string& s : serials) response->add_serials_hex(std::move(s));
        LogInfo("iot target '", target, "': ", identity, " enqueued ", r.enqueued, " registrations (",
                r.already_registered, " already registered, ", r.already_pending, " already pending, ",
                r.unknown_serial, " unknown serials)");
        return absl::OkStatus();
      });
  return reactor;
}

grpc::ServerUnaryReactor* IotAdminService::GetIotRegistrations(grpc::CallbackServerContext* context,
                                                               const v1::GetIotRegistrationsRequest* request,
                                                               v1::IotRegistrationsSummary* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status precheck = KnownTarget(p_.target_names, request->target());
  absl::StatusOr<std::vector<std::string>> serials = NormalizeSerials(request->serials_hex());
  if (precheck.ok()) precheck = serials.status();
  Run(context, reactor, Rpc::kGetIotRegistrations, precheck,
      [this, response, target = request->target(),
       serials = serials.ok() ? *std::move(serials) : std::vector<std::string>{}](const std::string&) -> absl::Status {
        for (const std::string& serial : serials) {
          LINESIGN_ASSIGN_OR_RETURN(std::optional<store::IotRegistration> r,
                                    p_.registrations->GetIotRegistration({p_.issuer_id, serial, target}));
          if (!r.has_value()) {
            response->set_not_enqueued(response->not_enqueued() + 1);
            continue;
          }
          switch (r->state) {
            case store::IotRegistrationState::kPending:
              response->set_pending(response->pending() + 1);
              break;
            case store::IotRegistrationState::kRegistered:
              response->set_registered(response->registered() + 1);
              if (r->already_present) response->set_already_present(response->already_present() + 1);
              break;
            case store::IotRegistrationState::kFailed: {
              response->set_failed(response->failed() + 1);
              v1::IotRegistrationFailure* f = response->add_failures();
              f->set_serial_hex(serial);
              f->set_error_code(ToValidUtf8(r->error_code));
              f->set_error_message(ToValidUtf8(r->error_message));
              f->set_attempts(r->attempts);
              break;
            }
          }
        }
        return absl::OkStatus();
      });
  return reactor;
}

grpc::ServerUnaryReactor* IotAdminService::GetIotStatus(grpc::CallbackServerContext* context,
                                                        const v1::IotStatusRequest* request,
                                                        v1::IotStatusResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status precheck =
      request->target().empty() ? absl::OkStatus() : KnownTarget(p_.target_names, request->target());
  Run(context, reactor, Rpc::kGetIotStatus, precheck,
      [this, response, only = request->target()](const std::string&) -> absl::Status {
        LINESIGN_ASSIGN_OR_RETURN(std::vector<store::IotTargetCounts> counts, p_.registrations->CountIotRegistrations());
        std::map<std::string, const store::IotTargetCounts*> by_target;
        for (const auto& c : counts) by_target[c.target] = &c;
        std::vector<std::string> names = p_.target_names;
        // Registrations of targets no longer configured are still shown (their backlog waits for nobody).
        for (const auto& c : counts) {
          if (std::find(names.begin(), names.end(), c.target) == names.end()) names.push_back(c.target);
        }
        for (const std::string& name : names) {
          if (!only.empty() && name != only) continue;
          v1::IotTargetStatus* t = response->add_targets();
          t->set_target(name);
          if (auto it = by_target.find(name); it != by_target.end()) {
            t->set_pending(it->second->pending);
            t->set_registered(it->second->registered);
            t->set_failed(it->second->failed);
            for (const auto& [code, n] : it->second->failed_by_code) {
              (*t->mutable_failed_by_code())[ToValidUtf8(code)] = n;
            }
          }
          if (std::find(p_.target_names.begin(), p_.target_names.end(), name) == p_.target_names.end()) {
            t->set_unavailable_reason("not in iot.targets any more");
            continue;
          }
          if (absl::StatusOr<const iot::IotApi*> api = p_.targets->Find(name); !api.ok()) {
            t->set_unavailable_reason(std::string(api.status().message()));
          }
          std::map<std::string, iot::OperationStats> ops;
          if (auto it = p_.ceilings.find(name); it != p_.ceilings.end()) {
            for (const auto& [op, ceiling] : it->second) {
              ops[op] = iot::OperationStats{.operation = op, .ceiling_per_second = ceiling,
                                            .rate_per_second = ceiling};
            }
          }
          if (p_.operation_stats) {
            for (const iot::OperationStats& s : p_.operation_stats(name)) {
              iot::OperationStats& o = ops[s.operation];
              const double ceiling = o.ceiling_per_second;
              o = s;
              o.ceiling_per_second = ceiling;
            }
          }
          for (const auto& [op, s] : ops) {
            v1::IotOperationStatus* o = t->add_operations();
            o->set_operation(op);
            o->set_ceiling_per_second(s.ceiling_per_second);
            o->set_rate_per_second(s.rate_per_second);
            o->set_throttles(s.throttles);
            o->set_calls(s.calls);
          }
        }
        return absl::OkStatus();
      });
  return reactor;
}

}  // namespace linesign::service
