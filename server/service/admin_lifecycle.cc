// The lifecycle RPCs of AdminService (issue 11): RenewCertificate, RekeyCertificate, WatchEvents. Kept apart from
// the reads in admin_service.cc: they issue certificates (through the batch signer, audited like SignCsr) or
// hold a stream open.
#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/openssl_util.h"
#include "common/status_macros.h"
#include "common/utf8.h"
#include "server/csr/csr.h"
#include "server/service/admin_service.h"
#include "server/service/grpc_status.h"
#include "server/service/peer.h"

namespace linesign::service {
namespace {

// SerialArgument checks and normalises a serial as GetCertificate does: 1 to 42 hex digits, upper case, no
// leading zero octets.
absl::StatusOr<std::string> SerialArgument(const std::string& raw) {
  std::string serial = absl::AsciiStrToUpper(raw);
  if (serial.empty() || serial.size() > 42 ||
      !std::all_of(serial.begin(), serial.end(), [](char c) { return absl::ascii_isxdigit(c); })) {
    return absl::InvalidArgumentError("serial_hex must be 1 to 42 hexadecimal digits");
  }
  while (serial.size() > 1 && serial[0] == '0' && serial[1] == '0') serial.erase(0, 2);
  return serial;
}

void FillSuccessor(const store::CertificateRecord& r, const std::string& chain_pem, bool replayed,
                   v1::SuccessorResponse* response) {
  response->set_certificate_der(r.der);
  response->set_certificate_pem(PemEncode("CERTIFICATE", r.der));
  response->set_chain_pem(chain_pem);
  response->set_serial_hex(r.serial_hex);
  response->set_renews_serial(r.renews_serial);
  response->mutable_not_before()->set_seconds(r.not_before);
  response->mutable_not_after()->set_seconds(r.not_after);
  response->set_replayed(replayed);
}

// Refusal ends a WatchEvents call at once with its refusal.
class Refusal final : public grpc::ServerWriteReactor<v1::WatchEventsResponse> {
 public:
  explicit Refusal(const grpc::Status& st) { Finish(st); }
  void OnDone() override { delete this; }
};

}  // namespace

int64_t AdminService::RenewBefore(const std::string& profile) const {
  if (p_.profiles != nullptr) {
    if (auto p = p_.profiles->Find(profile); p.ok()) return absl::ToInt64Seconds((*p)->renew_before());
  }
  return store::kDefaultRenewBeforeSeconds;
}

void AdminService::OffThreadIssue(grpc::ServerUnaryReactor* reactor, Rpc rpc, CallInfo call,
                                  v1::SuccessorResponse* response, absl::AnyInvocable<void(Finish finish) &&> start) {
  p_.drain->Enter(/*even_when_draining=*/true);
  Finish finish = [this, reactor, rpc, call, response](absl::StatusOr<store::CertificateRecord> record,
                                                       bool replayed) {
    if (record.ok()) {
      FillSuccessor(*record, p_.chain_pem, replayed, response);
      p_.counters->Completed(rpc, call, record, replayed);
      reactor->Finish(grpc::Status::OK);
    } else if (absl::IsAlreadyExists(record.status()) || absl::IsUnavailable(record.status()) ||
               absl::IsInternal(record.status())) {
      p_.counters->Completed(rpc, call, record, replayed);
      reactor->Finish(ToGrpcStatus(record.status()));
    } else {
      reactor->Finish(p_.counters->Refused(rpc, call, record.status()));
    }
    p_.drain->Leave();
  };
  auto task = [start = std::move(start), finish = std::move(finish)]() mutable {
    std::move(start)(std::move(finish));
  };
  if (!p_.executor->TrySubmit(std::move(task))) {
    // The task (and the finish inside it) was dropped unrun.
    reactor->Finish(p_.counters->Refused(
        rpc, call,
        absl::ResourceExhaustedError(absl::StrCat("too many administrative calls in progress (at most ",
                                                  p_.executor->max_pending(), "); retry in a moment"))));
    p_.drain->Leave();
  }
}

grpc::ServerUnaryReactor* AdminService::RenewCertificate(grpc::CallbackServerContext* context,
                                                         const v1::RenewCertificateRequest* request,
                                                         v1::SuccessorResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  CallInfo call{"", context->peer(), "", ""};
  auto identity = Admit(context, Rpc::kRenewCertificate);
  if (identity.ok()) call.identity = *identity;
  absl::StatusOr<std::string> serial = identity.ok() ? SerialArgument(request->serial_hex()) : identity.status();
  if (!serial.ok()) {
    reactor->Finish(p_.counters->Refused(Rpc::kRenewCertificate, call, serial.status()));
    return reactor;
  }
  call.request_id = absl::StrCat("renew:", *serial);
  OffThreadIssue(reactor, Rpc::kRenewCertificate, call, response,
                 [this, serial = *serial, by = call.identity](Finish finish) {
                   p_.renewer->Renew(serial, by, std::move(finish));
                 });
  return reactor;
}

grpc::ServerUnaryReactor* AdminService::RekeyCertificate(grpc::CallbackServerContext* context,
                                                         const v1::RekeyCertificateRequest* request,
                                                         v1::SuccessorResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  CallInfo call{"", context->peer(), "", ""};
  // Administrators, and stations whose rule lists the certificate's profile: the latter is known only once the
  // record is read, so here only "some rule matches" (an identity no rule matches learns nothing).
  auto identity = Authenticate(*p_.authenticator, context, p_.clock->Now());
  absl::Status allowed = identity.status();
  if (identity.ok()) {
    call.identity = *identity;
    allowed = p_.access->AllowRead(*identity, RpcName(Rpc::kRekeyCertificate));
  }
  absl::StatusOr<std::string> serial = allowed.ok() ? SerialArgument(request->serial_hex()) : allowed;
  if (serial.ok() && request->csr_case() == v1::RekeyCertificateRequest::kCsrPem) {
    size_t at = FirstInvalidUtf8(request->csr_pem());
    if (at != request->csr_pem().size()) {
      serial = absl::InvalidArgumentError(absl::StrFormat("csr_pem is not valid UTF-8 (byte 0x%02X at offset %d)",
                                                          static_cast<unsigned char>(request->csr_pem()[at]), at));
    }
  }
  if (serial.ok() && request->csr_case() == v1::RekeyCertificateRequest::CSR_NOT_SET) {
    serial = absl::InvalidArgumentError("csr_der or csr_pem is required: the CSR of the new key");
  }
  if (!serial.ok()) {
    reactor->Finish(p_.counters->Refused(Rpc::kRekeyCertificate, call, serial.status()));
    return reactor;
  }
  call.request_id = absl::StrCat("rekey:", *serial);
  std::string input = request->csr_case() == v1::RekeyCertificateRequest::kCsrDer ? request->csr_der()
                                                                                   : request->csr_pem();
  OffThreadIssue(
      reactor, Rpc::kRekeyCertificate, call, response,
      [this, serial = *serial, identity = call.identity, input = std::move(input)](Finish finish) mutable {
        auto record = p_.reader->FindBySerial(p_.issuer_id, serial);
        if (!record.ok()) return finish(record.status(), false);
        if (!record->has_value()) {
          return finish(absl::NotFoundError(absl::StrCat("no certificate with serial ", serial, " from this CA")),
                        false);
        }
        const store::CertificateRecord& old = **record;
        const bool admin = p_.access->AllowAdmin(identity, RpcName(Rpc::kRekeyCertificate)).ok();
        if (!admin) {
          // A station may re-key what it could have had signed: the certificate's profile (and its rate limit).
          if (auto st = p_.station_access->AllowSign(identity, old.profile, p_.clock->Now()); !st.ok()) {
            return finish(st, false);
          }
        }
        auto profile = p_.profiles->Find(old.profile);
        if (!profile.ok()) {
          return finish(absl::FailedPreconditionError(absl::StrCat("certificate ", serial, " was issued under profile '",
                                                                   old.profile, "', which is no longer configured")),
                        false);
        }
        // The same CSR checks as SignCsr, under the certificate's profile (key type and size included).
        auto der = csr::DecodeCsr(input);
        if (!der.ok()) return finish(der.status(), false);
        auto checked = csr::CheckCsr(*der, **profile);
        if (!checked.ok()) return finish(checked.status(), false);
        const std::string request_id = absl::StrCat("rekey:", serial);
        const std::string csr_sha256 = Hex(Sha256(*der));
        if (auto st = lifecycle::CheckSuccessorAllowed(old); !st.ok()) {
          // A retry of the re-key that superseded it is answered with that certificate.
          auto earlier = p_.reader->FindByRequest(identity, request_id);
          if (earlier.ok() && earlier->has_value() && (*earlier)->serial_hex == old.renewed_by_serial &&
              (*earlier)->csr_sha256 == csr_sha256) {
            return finish(**std::move(earlier), true);
          }
          return finish(st, false);
        }
        auto next = lifecycle::SuccessorRequest(old, *profile, /*same_key=*/false);
        if (!next.ok()) return finish(next.status(), false);
        if (checked->subject_der != next->subject_der) {
          return finish(absl::InvalidArgumentError(absl::StrCat(
                            "the CSR's subject ", QuoteForDisplay(checked->subject_text), " is not the certificate's ",
                            QuoteForDisplay(old.subject), ": a re-key keeps the subject (use SignCsr for another)")),
                        false);
        }
        if (!checked->sans.empty() && checked->sans != next->sans) {
          return finish(absl::InvalidArgumentError(
                            "the CSR asks for other subjectAltNames than the certificate's: a re-key keeps them "
                            "(leave them out of the CSR, or use SignCsr for others)"),
                        false);
        }
        if (Hex(Sha256(checked->spki_der)) == old.spki_sha256) {
          return finish(absl::InvalidArgumentError(absl::StrCat(
                            "the CSR carries certificate ", serial,
                            "'s current key: a re-key needs a new key (RenewCertificate keeps the key)")),
                        false);
        }
        next->spki_der = checked->spki_der;
        next->csr_sha256 = csr_sha256;
        next->requester = {admin ? issuance::IssuanceRequest::Requester::Kind::kAdministrator
                                 : issuance::IssuanceRequest::Requester::Kind::kStation,
                           identity, request_id};
        next->events.push_back(
            store::Event{.type = store::kEventRekeyed, .data = lifecycle::SuccessorEventData(serial, identity)});
        auto shared = std::make_shared<Finish>(std::move(finish));
        issuance::SignJob job{*std::move(next), [shared](absl::StatusOr<store::CertificateRecord> r, bool replayed) {
                                (*shared)(std::move(r), replayed);
                              }};
        if (auto st = p_.signer->Submit(std::move(job)); !st.ok()) (*shared)(st, false);
      });
  return reactor;
}

grpc::ServerWriteReactor<v1::WatchEventsResponse>* AdminService::WatchEvents(grpc::CallbackServerContext* context,
                                                                            const v1::WatchEventsRequest* request) {
  CallInfo call{"", context->peer(), "", ""};
  auto identity = Admit(context, Rpc::kWatchEvents);
  if (!identity.ok()) return new Refusal(p_.counters->Refused(Rpc::kWatchEvents, call, identity.status()));
  call.identity = *identity;
  // A stream ends when its watcher goes away or the server stops: either way it was served.
  auto reactor = p_.watchers->Open(request->after_cursor(), request->stop_at_end(),
                                   [this](const grpc::Status&) { p_.counters->Answered(Rpc::kWatchEvents); });
  if (!reactor.ok()) return new Refusal(p_.counters->Refused(Rpc::kWatchEvents, call, reactor.status()));
  return *reactor;
}

}  // namespace linesign::service
