#include "server/service/admin_service.h"

#include <algorithm>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "common/utf8.h"
#include "server/service/grpc_status.h"
#include "server/service/off_thread.h"
#include "server/service/peer.h"
#include "nlohmann/json.hpp"
#include "server/revocation/crl_builder.h"

namespace linesign::service {
namespace {

// The largest time a google.protobuf.Timestamp may hold: 9999-12-31T23:59:59Z.
constexpr int64_t kMaxTimestampSeconds = 253402300799;
// A page token as this server writes them is short and plain; anything else never came from it.
constexpr size_t kMaxPageTokenBytes = 64;

void FillSans(const store::CertificateRecord& r, google::protobuf::RepeatedPtrField<v1::SubjectAltName>* out,
              std::vector<std::string>* display) {
  for (const store::San& san : r.sans) {
    v1::SubjectAltName* s = out->Add();
    s->set_type(ToValidUtf8(san.type));
    s->set_value(ToValidUtf8(san.value));
    if (!IsValidUtf8(san.value)) s->set_raw_value(san.value);
    if (display != nullptr) {
      display->push_back(absl::StrCat(QuoteForDisplayUnlessPlain(san.type), ":", QuoteForDisplay(san.value)));
    }
  }
}

// FilterText checks a text filter: valid UTF-8 and at most kMaxListFilterBytes.
absl::Status FilterText(absl::string_view field, const std::string& value) {
  if (value.size() > kMaxListFilterBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " of ", value.size(), " bytes exceeds ", kMaxListFilterBytes));
  }
  size_t at = FirstInvalidUtf8(value);
  if (at == value.size()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat("%s is not valid UTF-8 (byte 0x%02X at offset %d)", field,
                                                    static_cast<unsigned char>(value[at]), at));
}

// Seconds converts a timestamp to the whole second a comparison with stored (whole) seconds needs: the ceiling,
// since "stored >= t" and "stored < t" hold for an integer exactly when they hold for ceil(t).
absl::StatusOr<int64_t> Seconds(absl::string_view field, const google::protobuf::Timestamp& t) {
  if (t.seconds() < 0 || t.seconds() > kMaxTimestampSeconds || t.nanos() < 0 || t.nanos() > 999999999) {
    return absl::InvalidArgumentError(absl::StrCat(field, " (", t.seconds(), "s ", t.nanos(),
                                                   "ns) is outside 1970-01-01 to 9999-12-31"));
  }
  return t.seconds() + (t.nanos() > 0 ? 1 : 0);
}

}  // namespace

absl::StatusOr<store::CertificateQuery> AdminService::ToQuery(const v1::ListCertificatesRequest& request) {
  store::CertificateQuery q;
  if (request.page_size() > static_cast<uint32_t>(store::kMaxPageSize)) {
    return absl::InvalidArgumentError(absl::StrCat("page_size ", request.page_size(), " is outside 1..",
                                                   store::kMaxPageSize, " (0 means 100)"));
  }
  q.page_size = request.page_size() == 0 ? 100 : static_cast<int>(request.page_size());
  const std::string& token = request.page_token();
  if (token.size() > kMaxPageTokenBytes || !std::all_of(token.begin(), token.end(), [](char c) {
        return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
      })) {
    return absl::InvalidArgumentError(
        "page_token is not one this server returned: pass next_page_token back unchanged, or leave it empty for "
        "the first page");
  }
  q.page_token = token;
  if (auto st = FilterText("profile", request.profile()); !st.ok()) return st;
  if (auto st = FilterText("station", request.station()); !st.ok()) return st;
  q.profile = request.profile();
  q.station = request.station();
  if (request.has_issued_after()) {
    LINESIGN_ASSIGN_OR_RETURN(int64_t s, Seconds("issued_after", request.issued_after()));
    q.issued_from = s;
  }
  if (request.has_issued_before()) {
    LINESIGN_ASSIGN_OR_RETURN(int64_t s, Seconds("issued_before", request.issued_before()));
    q.issued_before = s;
  }
  if (request.has_expiring_before()) {
    LINESIGN_ASSIGN_OR_RETURN(int64_t s, Seconds("expiring_before", request.expiring_before()));
    q.expiring_before = s;
  }
  // Lifecycle (issue 11).
  if (!request.status().empty()) {
    std::optional<store::ListStatus> status = store::ParseListStatus(request.status());
    if (!status.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat("status ", QuoteForDisplay(request.status().substr(0, 32)),
                                                     " is not one of valid, renewal_due, expired, superseded, "
                                                     "revoked"));
    }
    q.status = status;
  }
  if (auto st = FilterText("subject", request.subject()); !st.ok()) return st;
  q.subject_contains = request.subject();
  if (request.has_issued_after() && request.has_issued_before() &&
      !(absl::FromUnixSeconds(request.issued_after().seconds()) + absl::Nanoseconds(request.issued_after().nanos()) <
        absl::FromUnixSeconds(request.issued_before().seconds()) +
            absl::Nanoseconds(request.issued_before().nanos()))) {
    return absl::InvalidArgumentError("issued_after must be before issued_before (the range would be empty)");
  }
  return q;
}

absl::StatusOr<std::string> AdminService::Admit(grpc::CallbackServerContext* context, Rpc rpc) const {
  LINESIGN_ASSIGN_OR_RETURN(std::string identity, Authenticate(*p_.authenticator, context, p_.clock->Now()));
  LINESIGN_RETURN_IF_ERROR(p_.access->AllowAdmin(identity, RpcName(rpc)));
  return identity;
}

void AdminService::OffThread(grpc::ServerUnaryReactor* reactor, Rpc rpc, CallInfo call,
                             absl::AnyInvocable<absl::Status() &&> read) {
  // A read in progress holds up a graceful stop, as before; it is not refused while draining (reads change
  // nothing).
  p_.drain->Enter(/*even_when_draining=*/true);
  RunOffThread(p_.executor, p_.counters, p_.drain, reactor, rpc, std::move(call), std::move(read),
               absl::StrCat("too many administrative reads in progress (at most ", p_.executor->max_pending(),
                            "); retry in a moment"));
}

grpc::ServerUnaryReactor* AdminService::GetCertificate(grpc::CallbackServerContext* context,
                                                       const v1::GetCertificateRequest* request,
                                                       v1::GetCertificateResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  CallInfo call{"", context->peer(), "", ""};
  auto identity = Admit(context, Rpc::kGetCertificate);
  if (identity.ok()) call.identity = *identity;
  absl::Status allowed = identity.status();
  std::string serial = absl::AsciiStrToUpper(request->serial_hex());
  if (allowed.ok() && (serial.empty() || serial.size() > 42 ||
                       !std::all_of(serial.begin(), serial.end(), [](char c) { return absl::ascii_isxdigit(c); }))) {
    allowed = absl::InvalidArgumentError("serial_hex must be 1 to 42 hexadecimal digits");
  }
  if (!allowed.ok()) {
    reactor->Finish(p_.counters->Refused(Rpc::kGetCertificate, call, allowed));
    return reactor;
  }
  while (serial.size() > 1 && serial[0] == '0' && serial[1] == '0') serial.erase(0, 2);
  OffThread(reactor, Rpc::kGetCertificate, call, [this, response, serial]() -> absl::Status {
    LINESIGN_ASSIGN_OR_RETURN(auto record, p_.reader->FindBySerial(p_.issuer_id, serial));
    if (!record.has_value()) {
      return absl::NotFoundError(absl::StrCat("no certificate with serial ", serial, " from this CA"));
    }
    const store::CertificateRecord& r = *record;
    // Station-supplied text: a protobuf string must be valid UTF-8, or the response cannot be serialised.
    response->set_certificate_der(r.der);
    response->set_serial_hex(ToValidUtf8(r.serial_hex));
    response->set_subject(ToValidUtf8(r.subject));
    std::vector<std::string> display;
    FillSans(r, response->mutable_san(), &display);
    response->set_sans(absl::StrJoin(display, ", "));
    response->set_profile(ToValidUtf8(r.profile));
    response->set_station(ToValidUtf8(r.station));
    response->set_request_id(ToValidUtf8(r.request_id));
    response->mutable_not_before()->set_seconds(r.not_before);
    response->mutable_not_after()->set_seconds(r.not_after);
    response->mutable_issued_at()->set_seconds(r.issued_at);
    // Lifecycle (issue 11).
    response->set_status(
        store::EffectiveStatus(r, absl::ToUnixSeconds(p_.clock->Now()), RenewBefore(r.profile)));
    response->set_chain_pem(p_.chain_pem);
    response->set_renews_serial(r.renews_serial);
    response->set_renewed_by_serial(r.renewed_by_serial);
    if (r.renewal_due_at != 0) response->mutable_renewal_due_at()->set_seconds(r.renewal_due_at);
    return absl::OkStatus();
  });
  return reactor;
}

grpc::ServerUnaryReactor* AdminService::GetStats(grpc::CallbackServerContext* context,
                                                 const v1::GetStatsRequest* request,
                                                 v1::GetStatsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  CallInfo call{"", context->peer(), "", ""};
  auto identity = Admit(context, Rpc::kGetStats);
  if (!identity.ok()) {
    reactor->Finish(p_.counters->Refused(Rpc::kGetStats, call, identity.status()));
    return reactor;
  }
  call.identity = *identity;
  OffThread(reactor, Rpc::kGetStats, call, [this, response]() -> absl::Status {
    // This answer counts itself, as it always has: GetStats OK is in the map it returns.
    std::map<std::string, uint64_t> answers = p_.counters->Snapshot();
    ++answers[absl::StrCat(RpcName(Rpc::kGetStats), " OK")];
    response->mutable_answers()->insert(answers.begin(), answers.end());
    response->set_queued(p_.queued());
    // A COUNT on the store's read connection (it does not wait for the writer), here off the callback thread.
    LINESIGN_ASSIGN_OR_RETURN(int64_t count, p_.reader->Count());
    response->set_certificates_recorded(count);
    return absl::OkStatus();
  });
  return reactor;
}

grpc::ServerUnaryReactor* AdminService::ListCertificates(grpc::CallbackServerContext* context,
                                                         const v1::ListCertificatesRequest* request,
                                                         v1::ListCertificatesResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  CallInfo call{"", context->peer(), "", ""};
  auto identity = Admit(context, Rpc::kListCertificates);
  if (identity.ok()) call.identity = *identity;
  absl::StatusOr<store::CertificateQuery> query = identity.ok() ? ToQuery(*request) : identity.status();
  if (!query.ok()) {
    reactor->Finish(p_.counters->Refused(Rpc::kListCertificates, call, query.status()));
    return reactor;
  }
  // Status is judged at the server's time with each profile's renew_before.
  query->now = absl::ToUnixSeconds(p_.clock->Now());
  if (p_.profiles != nullptr) {
    for (const auto& profile : p_.profiles->All()) {
      query->renew_before_seconds[profile->name()] = absl::ToInt64Seconds(profile->renew_before());
    }
  }
  OffThread(reactor, Rpc::kListCertificates, call, [this, response, q = *std::move(query)]() -> absl::Status {
    LINESIGN_ASSIGN_OR_RETURN(store::CertificatePage page, p_.reader->List(q));
    for (const store::CertificateRecord& r : page.records) {
      v1::CertificateSummary* s = response->add_certificates();
      s->set_serial_hex(ToValidUtf8(r.serial_hex));
      s->set_subject(ToValidUtf8(r.subject));
      FillSans(r, s->mutable_san(), nullptr);
      s->set_profile(ToValidUtf8(r.profile));
      s->set_station(ToValidUtf8(r.station));
      s->set_request_id(ToValidUtf8(r.request_id));
      s->mutable_not_before()->set_seconds(r.not_before);
      s->mutable_not_after()->set_seconds(r.not_after);
      s->mutable_issued_at()->set_seconds(r.issued_at);
      s->set_status(store::EffectiveStatus(r, q.now, RenewBefore(r.profile)));
      s->set_renews_serial(r.renews_serial);
      s->set_renewed_by_serial(r.renewed_by_serial);
    }
    response->set_next_page_token(page.next_page_token);
    return absl::OkStatus();
  });
  return reactor;
}

// ---- Revocation (issue 11) ----

absl::Status AdminService::CheckRevocationReason(int reason) {
  switch (reason) {
    case 0: case 1: case 2: case 3: case 4: case 5: case 9:
      return absl::OkStatus();
    case 6:
      return absl::InvalidArgumentError(
          "reason certificateHold (6) is not supported: linesign revocations are final; revoke with another "
          "reason, or leave the certificate valid");
    case 8:
      return absl::InvalidArgumentError(
          "reason removeFromCRL (8) is refused: it only undoes a certificateHold, and linesign puts no certificate "
          "on hold (revocations are final)");
    case 10:
      return absl::InvalidArgumentError(
          "reason aACompromise (10) is refused: it concerns attribute authorities, and linesign issues no attribute "
          "certificates");
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "reason ", reason, " is not an RFC 5280 CRLReason (0 to 10; 7 is unused; linesign accepts 0-5 and 9)"));
  }
}

grpc::ServerUnaryReactor* AdminService::RevokeCertificate(grpc::CallbackServerContext* context,
                                                          const v1::RevokeCertificateRequest* request,
                                                          v1::RevokeCertificateResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  constexpr Rpc kRpc = Rpc::kRevokeCertificate;
  CallInfo call{"", context->peer(), "", ""};
  auto identity = Admit(context, kRpc);
  if (identity.ok()) call.identity = *identity;
  absl::Status allowed = identity.status();
  std::string serial = absl::AsciiStrToUpper(request->serial_hex());
  if (allowed.ok() && (serial.empty() || serial.size() > 42 ||
                       !std::all_of(serial.begin(), serial.end(), [](char c) { return absl::ascii_isxdigit(c); }))) {
    allowed = absl::InvalidArgumentError(absl::StrCat(
        "serial_hex must be 1 to 42 hexadecimal digits (got ", request->serial_hex().size(), " bytes: ",
        QuoteForDisplay(request->serial_hex().substr(0, 64)), ")"));
  }
  const int reason = static_cast<int>(request->reason());
  if (allowed.ok()) allowed = CheckRevocationReason(reason);
  if (allowed.ok() && p_.revocations == nullptr) {
    allowed = absl::FailedPreconditionError("revocation is not available on this server");
  }
  if (!allowed.ok()) {
    reactor->Finish(p_.counters->Refused(kRpc, call, allowed));
    return reactor;
  }
  while (serial.size() > 1 && serial[0] == '0' && serial[1] == '0') serial.erase(0, 2);
  p_.drain->Enter(/*even_when_draining=*/true);
  auto task = [this, reactor, response, call, serial, reason]() {
    const std::string reason_name = revocation::ReasonName(reason);
    nlohmann::json data = {{"reason", reason_name}, {"reason_code", reason}, {"by", ToValidUtf8(call.identity)}};
    auto result = p_.revocations->Revoke(store::RevokeRequest{.issuer_id = p_.issuer_id,
                                                              .serial_hex = serial,
                                                              .reason = reason,
                                                              .at = p_.clock->Now(),
                                                              .data = data.dump()});
    if (!result.ok()) {
      absl::Status st = result.status();
      if (absl::IsNotFound(st)) {
        st = absl::NotFoundError(absl::StrCat("no certificate with serial ", serial, " from this CA"));
      }
      reactor->Finish(p_.counters->Refused(kRpc, call, st));
    } else {
      const store::CertificateRecord& r = result->record;
      response->set_serial_hex(ToValidUtf8(r.serial_hex));
      response->set_reason(static_cast<v1::RevocationReason>(r.revocation_reason));
      response->mutable_revoked_at()->set_seconds(r.revoked_at);
      response->set_already_revoked(result->already_revoked);
      p_.counters->Revoked(kRpc, call, r, result->already_revoked, revocation::ReasonName(r.revocation_reason));
      reactor->Finish(grpc::Status::OK);
    }
    p_.drain->Leave();
  };
  if (!p_.executor->TrySubmit(std::move(task))) {
    reactor->Finish(p_.counters->Refused(
        kRpc, call,
        absl::ResourceExhaustedError(absl::StrCat("too many administrative calls in progress (at most ",
                                                  p_.executor->max_pending(), "); retry in a moment"))));
    p_.drain->Leave();
  }
  return reactor;
}

}  // namespace linesign::service
