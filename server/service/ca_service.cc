#include "server/service/ca_service.h"

#include <algorithm>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include <grpc/grpc_security_constants.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/openssl_util.h"
#include "common/utf8.h"
#include "server/csr/csr.h"
#include "server/service/grpc_status.h"

namespace linesign::service {
namespace {

constexpr size_t kMaxRequestIdBytes = 128;
// The longest error message a stream answer carries (a refusal is never much larger than this).
constexpr size_t kMaxErrorBytes = 512;

absl::Status CheckRequestId(const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError("request_id is required (1 to 128 printable ASCII characters)");
  if (id.size() > kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat("request_id of ", id.size(), " bytes exceeds 128"));
  }
  for (char c : id) {
    if (!absl::ascii_isprint(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError("request_id must be printable ASCII");
    }
  }
  return absl::OkStatus();
}

// RequestIdForLog is the request id as the audit log carries it: at most 128 bytes, and
// valid UTF-8 (each other byte \xHH).
std::string RequestIdForLog(const std::string& id) { return ToValidUtf8(id.substr(0, kMaxRequestIdBytes)); }

// CheckText refuses a request field that is not UTF-8, naming the field and the first offending byte.
absl::Status CheckText(absl::string_view field, const std::string& value) {
  size_t at = FirstInvalidUtf8(value);
  if (at == value.size()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat("%s is not valid UTF-8 (byte 0x%02X at offset %d)", field,
                                                    static_cast<unsigned char>(value[at]), at));
}

// CheckProfileName: empty (the default profile) or a name as configuration allows them. The check is on the
// form only, the same for every caller, so it tells nothing about which profiles exist.
absl::Status CheckProfileName(const std::string& name) {
  if (name.empty()) return absl::OkStatus();
  bool ok = name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
              return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
            });
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("profile ", QuoteForDisplay(name.substr(0, 64)),
                                                 name.size() > 64 ? "..." : "",
                                                 " is not a profile name (1 to 64 of [A-Za-z0-9_-])"));
}

// TruncateUtf8 returns at most `max` bytes of `s`, cut before a UTF-8 continuation byte so that a valid UTF-8
// string stays valid (proto3 strings must be), with "…" appended when anything was cut.
std::string TruncateUtf8(const std::string& s, size_t max) {
  if (s.size() <= max) return s;
  size_t end = max - 3;  // room for the ellipsis (3 bytes)
  while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;
  return absl::StrCat(s.substr(0, end), "\u2026");
}

}  // namespace

const char* RpcName(Rpc rpc) {
  switch (rpc) {
    case Rpc::kSignCsr:
      return "SignCsr";
    case Rpc::kSignCsrStream:
      return "SignCsrStream";
    case Rpc::kGetCaChain:
      return "GetCaChain";
    case Rpc::kGetCertificate:
      return "GetCertificate";
    case Rpc::kGetStats:
      return "GetStats";
    case Rpc::kCount:
      break;
  }
  return "?";
}

void FillResponse(const store::CertificateRecord& record, const std::string& chain_pem, bool replayed,
                  v1::SignCsrResponse* response) {
  response->set_certificate_der(record.der);
  response->set_certificate_pem(PemEncode("CERTIFICATE", record.der));
  response->set_chain_pem(chain_pem);
  response->set_serial_hex(record.serial_hex);
  response->mutable_not_before()->set_seconds(record.not_before);
  response->mutable_not_after()->set_seconds(record.not_after);
  response->set_request_id(record.request_id);
  response->set_replayed(replayed);
}

std::pair<std::string, std::string> CaService::PeerCertificates(const grpc::CallbackServerContext* context) {
  std::string leaf, chain;
  if (auto auth = context->auth_context(); auth != nullptr) {
    if (auto v = auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME); !v.empty()) {
      leaf.assign(v.front().data(), v.front().size());
    }
    if (auto v = auth->FindPropertyValues(GRPC_X509_PEM_CERT_CHAIN_PROPERTY_NAME); !v.empty()) {
      chain.assign(v.front().data(), v.front().size());
    }
  }
  return {std::move(leaf), std::move(chain)};
}

absl::StatusOr<std::string> CaService::Authenticate(const grpc::CallbackServerContext* context) const {
  auto [leaf, chain] = PeerCertificates(context);
  return p_.authenticator->Authenticate(leaf, chain, p_.clock->Now());
}

absl::StatusOr<issuance::SignJob> CaService::Check(const v1::SignCsrRequest& request, const std::string& identity,
                                                   std::string* profile_name) {
  // An identity no rule matches learns nothing, not even which profile names exist: it is refused before the
  // request is looked at.
  if (auto st = p_.access->AllowRead(identity, "SignCsr"); !st.ok()) return st;
  // The text fields are `bytes` in the proto so that bytes which are not UTF-8 reach this check (and the audit)
  // instead of failing inside gRPC's parser.
  if (auto st = CheckText("request_id", request.request_id()); !st.ok()) return st;
  if (auto st = CheckText("profile", request.profile()); !st.ok()) return st;
  if (request.csr_case() == v1::SignCsrRequest::kCsrPem) {
    if (auto st = CheckText("csr_pem", request.csr_pem()); !st.ok()) return st;
  }
  if (auto st = CheckRequestId(request.request_id()); !st.ok()) return st;
  if (auto st = CheckProfileName(request.profile()); !st.ok()) return st;
  *profile_name = request.profile().empty() ? p_.profiles->default_profile() : request.profile();
  // Authorisation comes before the profile is resolved and the CSR is looked at: a station learns nothing about
  // profiles it may not use, not even whether they exist (an unknown name is refused like a forbidden one).
  if (auto st = p_.access->AllowSign(identity, *profile_name, p_.clock->Now()); !st.ok()) return st;
  // The one place a profile name is resolved: the request carries the compiled profile from here on.
  auto profile = p_.profiles->Find(*profile_name);
  if (!profile.ok()) {
    // Validate refuses access rules that name unknown profiles: this is a configuration the server never runs.
    return absl::FailedPreconditionError(
        absl::StrCat("profile '", *profile_name, "' is allowed for '", identity, "' but not configured"));
  }
  absl::string_view input = request.csr_case() == v1::SignCsrRequest::kCsrDer ? request.csr_der()
                                                                              : request.csr_pem();
  auto der = csr::DecodeCsr(input);
  if (!der.ok()) return der.status();
  auto checked = csr::CheckCsr(*der, **profile);
  if (!checked.ok()) return checked.status();
  issuance::SignJob job;
  job.request = csr::MakeIssuanceRequest(*std::move(checked), *std::move(profile), identity, request.request_id());
  return job;
}

namespace {
audit::Entry AuditEntry(Rpc rpc, const std::string& identity, const std::string& peer, const std::string& profile,
                        const std::string& request_id, grpc::StatusCode code) {
  audit::Entry e;
  e.time = absl::Now();
  e.rpc = RpcName(rpc);
  e.identity = identity;
  e.peer = peer;
  e.profile = ToValidUtf8(profile);
  e.request_id = RequestIdForLog(request_id);
  e.code = StatusCodeName(code);
  return e;
}
}  // namespace

grpc::Status CaService::Refused(Rpc rpc, const std::string& identity, const std::string& peer,
                                const std::string& profile, const std::string& request_id, const absl::Status& why) {
  grpc::Status st = ToGrpcStatus(why);
  Count(rpc, st.error_code());
  audit::Entry e = AuditEntry(rpc, identity, peer, profile, request_id, st.error_code());
  e.outcome = "refused";
  e.reason = std::string(why.message());
  p_.audit->Record(e);
  return st;
}

void CaService::Completed(Rpc rpc, const std::string& identity, const std::string& peer,
                          const absl::StatusOr<store::CertificateRecord>& record, bool replayed,
                          const std::string& profile, const std::string& request_id) {
  grpc::StatusCode code = record.ok() ? grpc::StatusCode::OK : ToGrpcStatus(record.status()).error_code();
  Count(rpc, code);
  audit::Entry e = AuditEntry(rpc, identity, peer, profile, request_id, code);
  if (record.ok()) {
    e.outcome = replayed ? "replayed" : "issued";
    e.serial_hex = record->serial_hex;
    e.subject = record->subject;
  } else {
    e.outcome = code == grpc::StatusCode::ALREADY_EXISTS ? "refused" : "failed";
    e.reason = std::string(record.status().message());
  }
  p_.audit->Record(e);
}

grpc::ServerUnaryReactor* CaService::SignCsr(grpc::CallbackServerContext* context, const v1::SignCsrRequest* request,
                                             v1::SignCsrResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::string peer = context->peer();
  auto identity = Authenticate(context);
  if (!identity.ok()) {
    reactor->Finish(Refused(Rpc::kSignCsr, "", peer, "", request->request_id(), identity.status()));
    return reactor;
  }
  std::string profile;
  auto job = Check(*request, *identity, &profile);
  if (!job.ok()) {
    reactor->Finish(Refused(Rpc::kSignCsr, *identity, peer, profile, request->request_id(), job.status()));
    return reactor;
  }
  if (!Enter(/*even_when_draining=*/false)) {
    reactor->Finish(Refused(Rpc::kSignCsr, *identity, peer, profile, request->request_id(), Draining()));
    return reactor;
  }
  job->done = [this, reactor, response, peer, id = *identity, profile, request_id = request->request_id()](
                  absl::StatusOr<store::CertificateRecord> record, bool replayed) {
    Completed(Rpc::kSignCsr, id, peer, record, replayed, profile, request_id);
    if (record.ok()) FillResponse(*record, p_.ca->chain_pem, replayed, response);
    reactor->Finish(record.ok() ? grpc::Status::OK : ToGrpcStatus(record.status()));
    Leave();
  };
  if (absl::Status st = p_.signer->Submit(*std::move(job)); !st.ok()) {
    reactor->Finish(Refused(Rpc::kSignCsr, *identity, peer, profile, request->request_id(), st));
    Leave();
  }
  return reactor;
}

grpc::ServerUnaryReactor* CaService::GetCaChain(grpc::CallbackServerContext* context,
                                                const v1::GetCaChainRequest* request,
                                                v1::GetCaChainResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto identity = Authenticate(context);
  absl::Status allowed = identity.ok() ? p_.access->AllowRead(*identity, "GetCaChain") : identity.status();
  if (!allowed.ok()) {
    reactor->Finish(Refused(Rpc::kGetCaChain, identity.value_or(""), context->peer(), "", "", allowed));
    return reactor;
  }
  response->set_chain_pem(p_.ca->chain_pem);
  response->set_issuer_certificate_der(p_.ca->certificate_der);
  Count(Rpc::kGetCaChain, grpc::StatusCode::OK);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* CaService::GetCertificate(grpc::CallbackServerContext* context,
                                                    const v1::GetCertificateRequest* request,
                                                    v1::GetCertificateResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::string peer = context->peer();
  auto identity = Authenticate(context);
  absl::Status allowed = identity.ok() ? p_.access->AllowAdmin(*identity, "GetCertificate") : identity.status();
  std::string serial = absl::AsciiStrToUpper(request->serial_hex());
  if (allowed.ok() && (serial.empty() || serial.size() > 42 ||
                       !std::all_of(serial.begin(), serial.end(), [](char c) { return absl::ascii_isxdigit(c); }))) {
    allowed = absl::InvalidArgumentError("serial_hex must be 1 to 42 hexadecimal digits");
  }
  if (!allowed.ok()) {
    reactor->Finish(Refused(Rpc::kGetCertificate, identity.value_or(""), peer, "", "", allowed));
    return reactor;
  }
  while (serial.size() > 1 && serial[0] == '0' && serial[1] == '0') serial.erase(0, 2);
  // The store read is I/O: done off the callback thread. Administrative calls are rare.
  Enter(/*even_when_draining=*/true);
  std::thread([this, reactor, response, serial, peer, id = *identity] {
    GetCertificateOffThread(reactor, response, serial, peer, id);
    Leave();
  }).detach();
  return reactor;
}

void CaService::GetCertificateOffThread(grpc::ServerUnaryReactor* reactor, v1::GetCertificateResponse* response,
                                        const std::string& serial, const std::string& peer, const std::string& id) {
  auto record = p_.reader->FindBySerial(p_.ca->issuer_id, serial);
  absl::Status st = record.ok() ? absl::OkStatus() : record.status();
  if (st.ok() && !record->has_value()) {
    st = absl::NotFoundError(absl::StrCat("no certificate with serial ", serial, " from this CA"));
  }
  if (!st.ok()) {
    reactor->Finish(Refused(Rpc::kGetCertificate, id, peer, "", "", st));
    return;
  }
  const store::CertificateRecord& r = **record;
  // Station-supplied text: a protobuf string must be valid UTF-8, or the response cannot be serialised.
  response->set_certificate_der(r.der);
  response->set_serial_hex(ToValidUtf8(r.serial_hex));
  response->set_subject(ToValidUtf8(r.subject));
  std::vector<std::string> display;
  for (const store::San& san : r.sans) {
    v1::SubjectAltName* out = response->add_san();
    out->set_type(ToValidUtf8(san.type));
    out->set_value(ToValidUtf8(san.value));
    if (!IsValidUtf8(san.value)) out->set_raw_value(san.value);
    display.push_back(absl::StrCat(QuoteForDisplayUnlessPlain(san.type), ":", QuoteForDisplay(san.value)));
  }
  response->set_sans(absl::StrJoin(display, ", "));
  response->set_profile(ToValidUtf8(r.profile));
  response->set_station(ToValidUtf8(r.station));
  response->set_request_id(ToValidUtf8(r.request_id));
  response->mutable_not_before()->set_seconds(r.not_before);
  response->mutable_not_after()->set_seconds(r.not_after);
  response->mutable_issued_at()->set_seconds(r.issued_at);
  Count(Rpc::kGetCertificate, grpc::StatusCode::OK);
  reactor->Finish(grpc::Status::OK);
}

grpc::ServerUnaryReactor* CaService::GetStats(grpc::CallbackServerContext* context, const v1::GetStatsRequest* request,
                                              v1::GetStatsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto identity = Authenticate(context);
  absl::Status allowed = identity.ok() ? p_.access->AllowAdmin(*identity, "GetStats") : identity.status();
  if (!allowed.ok()) {
    reactor->Finish(Refused(Rpc::kGetStats, identity.value_or(""), context->peer(), "", "", allowed));
    return reactor;
  }
  Count(Rpc::kGetStats, grpc::StatusCode::OK);
  for (int r = 0; r < static_cast<int>(Rpc::kCount); ++r) {
    for (int c = 0; c < 32; ++c) {
      uint64_t n = answered_[r][c].load(std::memory_order_relaxed);
      if (n > 0) (*response->mutable_answers())[absl::StrCat(RpcName(static_cast<Rpc>(r)), " ", StatusCodeName(c))] = n;
    }
  }
  response->set_queued(p_.signer->queued());
  // A COUNT on the store's read connection, which does not wait for the writer (WAL): cheap enough to answer here.
  auto count = p_.reader->Count();
  if (count.ok()) response->set_certificates_recorded(*count);
  reactor->Finish(count.ok() ? grpc::Status::OK : ToGrpcStatus(count.status()));
  return reactor;
}

}  // namespace linesign::service

namespace linesign::service {

// SignStreamReactor serves one SignCsrStream. Reads one request at a time; each checked request goes to the batch
// signer, whose worker queues the answer here. Answers are written one at a time in completion order. The stream
// holds at most limits.stream_window items — requests in flight plus answers (refusals included) not yet written
// — and stops reading while it holds limits.stream_window_bytes (serialized sizes): no further read is started,
// which is HTTP/2 flow control for the station. So a station that stops reading its answers stops being read,
// and the server never queues more for it. Reading resumes when a write completes (or an answer smaller than its
// request replaces it) and the stream is below both limits again. gRPC operations are started outside mu_,
// because gRPC may run a reaction inline.
//
// Draining (SIGTERM): no further read is started; a request that was being read when the drain began is answered
// UNAVAILABLE; once every request read is answered and written, the stream finishes, even with a read still
// outstanding (gRPC then fails that read). The reactor deletes itself when gRPC is done with it and nobody holds a
// reference (CaService::BeginDrain holds one while it tells the stream to drain).
class SignStreamReactor final : public grpc::ServerBidiReactor<v1::SignCsrRequest, v1::SignCsrStreamResponse> {
 public:
  // The stream's identity comes from its connection's client certificate: authenticated here, and again for a
  // request when the station trust was reloaded (SIGHUP) or the last check is older than the authenticator's
  // cache time, so a station revoked while its stream is open gets no further certificate on it.
  SignStreamReactor(CaService* service, grpc::CallbackServerContext* context)
      : service_(service),
        peer_(context->peer()),
        window_(service->p_.config->limits().stream_window()),
        window_bytes_(service->p_.config->limits().stream_window_bytes()) {
    std::tie(leaf_pem_, chain_pem_) = CaService::PeerCertificates(context);
    auto identity = Reauthenticate();
    if (!identity.ok()) {
      Finish(service_->Refused(Rpc::kSignCsrStream, "", peer_, "", "", identity.status()));
      return;
    }
    identity_ = *std::move(identity);
    issuing_read_ = true;  // before the service can see this stream: no drain may finish it before the read starts
    if (absl::Status st = service_->AddStream(this, identity_); !st.ok()) {
      Finish(service_->Refused(Rpc::kSignCsrStream, identity_, peer_, "", "", st));
      return;
    }
    registered_ = true;
    IssueRead();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        reads_done_ = true;
      }
      Drive();
      return;
    }
    v1::SignCsrRequest request = std::move(request_);
    request_.Clear();
    // What a request in flight holds, at most: its checked job is smaller than the message it came in.
    const size_t request_bytes = request.ByteSizeLong();
    bool draining;
    {
      std::lock_guard<std::mutex> lock(mu_);
      draining = draining_;
    }
    absl::Status trusted = StillTrusted();
    if (!trusted.ok()) {
      // Revoked (or no longer trusted) while the stream was open: this request is refused, no further one is
      // read, and the stream ends with the same status once the requests in flight are answered.
      std::lock_guard<std::mutex> lock(mu_);
      if (!draining_) final_status_ = ToGrpcStatus(trusted);
      draining_ = true;
    }
    std::string profile;
    auto job = !trusted.ok() ? absl::StatusOr<issuance::SignJob>(trusted)
               : draining    ? absl::StatusOr<issuance::SignJob>(CaService::Draining())
                             : service_->Check(request, identity_, &profile);
    if (!job.ok()) {
      service_->Refused(Rpc::kSignCsrStream, identity_, peer_, profile, request.request_id(), job.status());
      Answer(request.request_id(), job.status(), nullptr, false, /*in_flight_bytes=*/std::nullopt);
    } else {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++in_flight_;
        in_flight_bytes_ += request_bytes;
      }
      std::string id = request.request_id();
      job->done = [this, id, profile, request_bytes](absl::StatusOr<store::CertificateRecord> record,
                                                     bool replayed) {
        service_->Completed(Rpc::kSignCsrStream, identity_, peer_, record, replayed, profile, id);
        Answer(id, record.ok() ? absl::OkStatus() : record.status(), record.ok() ? &*record : nullptr, replayed,
               request_bytes);
      };
      // A stream bounds itself (its window), so it is never refused for a full queue: it slows down.
      if (absl::Status st = service_->p_.signer->Submit(*std::move(job), issuance::BatchSigner::Admission::kAlways);
          !st.ok()) {
        service_->Refused(Rpc::kSignCsrStream, identity_, peer_, profile, id, st);
        Answer(id, st, nullptr, false, request_bytes);
      }
    }
    bool read_next;
    {
      std::lock_guard<std::mutex> lock(mu_);
      read_next = BelowWindowLocked() && !draining_ && !finished_;
      read_paused_ = !read_next;
      issuing_read_ = read_next;
    }
    if (read_next) {
      IssueRead();
    } else {
      Drive();
    }
  }

  void OnWriteDone(bool ok) override {
    bool resume_read;
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      if (!ok) {
        broken_ = true;  // the station went away: drop what is left to write
        writes_.clear();
        unwritten_bytes_ = 0;
      } else {
        unwritten_bytes_ -= writes_.front().ByteSizeLong();
        writes_.pop_front();
      }
      resume_read = ResumeReadLocked();
    }
    if (resume_read) {
      IssueRead();
    } else {
      Drive();
    }
  }

  void OnDone() override {
    if (registered_) service_->RemoveStream(this, identity_);
    Unref();
  }

  // Drain: see the class comment.
  void Drain() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!draining_) final_status_ = kShuttingDown;
      draining_ = true;
    }
    Drive();
  }
  void Ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

 private:
  // Reauthenticate verifies the stream's client certificate now and notes when to do it again.
  absl::StatusOr<std::string> Reauthenticate() {
    trust_generation_ = service_->p_.authenticator->generation();
    checked_until_ = service_->p_.clock->Now() + auth::Authenticator::kSuccessCacheTime;
    return service_->p_.authenticator->Authenticate(leaf_pem_, chain_pem_, service_->p_.clock->Now());
  }
  // StillTrusted re-verifies the certificate when the trust was reloaded or the last check has aged out; cheap
  // otherwise (one atomic load and a clock read). Runs on the one read callback at a time.
  absl::Status StillTrusted() {
    if (service_->p_.authenticator->generation() == trust_generation_ && service_->p_.clock->Now() < checked_until_) {
      return absl::OkStatus();
    }
    auto identity = Reauthenticate();
    if (!identity.ok()) return identity.status();
    if (*identity != identity_) {
      return absl::UnauthenticatedError(absl::StrCat("the stream's identity changed from '", identity_, "' to '",
                                                     *identity, "' after the station trust was reloaded"));
    }
    return absl::OkStatus();
  }

  // IssueRead starts the read that the caller decided on (issuing_read_ set under mu_).
  void IssueRead() {
    StartRead(&request_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      issuing_read_ = false;
    }
    Drive();
  }

  // Answer queues the response for `id`. A request that was in flight passes its place in the window (and its
  // `in_flight_bytes`) to its answer; a refused one never was in flight, and its answer takes a new place. Either
  // way the place is held until the answer is written. A request id over its limit is not echoed (the answer's
  // request_id is empty) and an error message is cut to kMaxErrorBytes, so a refusal stays small whatever the
  // station sent.
  void Answer(const std::string& id, const absl::Status& status, const store::CertificateRecord* record,
              bool replayed, std::optional<size_t> in_flight_bytes) {
    v1::SignCsrStreamResponse response;
    if (id.size() <= kMaxRequestIdBytes) response.set_request_id(ToValidUtf8(id));  // never echo an over-long id; a refused id may not be UTF-8
    grpc::Status g = status.ok() ? grpc::Status::OK : ToGrpcStatus(status);
    if (record != nullptr) {
      FillResponse(*record, service_->p_.ca->chain_pem, replayed, response.mutable_certificate());
    } else {
      response.mutable_error()->set_code(static_cast<int>(g.error_code()));
      response.mutable_error()->set_message(TruncateUtf8(ToValidUtf8(g.error_message()), kMaxErrorBytes));
    }
    const size_t answer_bytes = response.ByteSizeLong();
    bool resume_read;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (in_flight_bytes.has_value()) {
        --in_flight_;
        in_flight_bytes_ -= *in_flight_bytes;
      }
      if (!broken_ && !finished_) {
        writes_.push_back(std::move(response));
        unwritten_bytes_ += answer_bytes;
      }
      resume_read = ResumeReadLocked();
    }
    if (resume_read) {
      IssueRead();
    } else {
      Drive();
    }
  }

  // BelowWindowLocked says whether the stream may read one more request: it holds fewer than window_ items
  // (requests in flight plus answers not yet written) and fewer than window_bytes_ bytes.
  bool BelowWindowLocked() const {
    return in_flight_ + writes_.size() < window_ && in_flight_bytes_ + unwritten_bytes_ < window_bytes_;
  }
  // ResumeReadLocked decides to restart a paused read (and marks it as being issued) once the stream is below
  // its window again; the caller then calls IssueRead.
  bool ResumeReadLocked() {
    if (!read_paused_ || !BelowWindowLocked() || reads_done_ || draining_ || finished_) return false;
    read_paused_ = false;
    issuing_read_ = true;
    return true;
  }

  // Drive starts the next write, or finishes the stream once everything read is signed and written and either
  // the station has closed its side or the server is draining.
  void Drive() {
    const v1::SignCsrStreamResponse* next = nullptr;
    bool finish = false;
    grpc::Status status;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (finished_) return;
      if (!writing_ && !writes_.empty()) {
        writing_ = true;
        next = &writes_.front();  // stays put until OnWriteDone pops it
      } else if (!writing_ && writes_.empty() && in_flight_ == 0 && !issuing_read_ && (reads_done_ || draining_)) {
        finished_ = true;
        finish = true;
        // A station that had closed its side got every answer: OK, unless it was refused meanwhile.
        if (!reads_done_ || final_status_.error_code() == grpc::StatusCode::UNAUTHENTICATED) status = final_status_;
      }
    }
    if (next != nullptr) StartWrite(next);
    if (finish) Finish(status);
  }

  static inline const grpc::Status kShuttingDown = ToGrpcStatus(absl::UnavailableError(
      "server is shutting down: every request it read on this stream has been answered; send the requests that "
      "got no answer again, with the same request_id, after reconnecting"));

  CaService* service_;  // borrowed
  const std::string peer_;
  std::string identity_;
  std::string leaf_pem_, chain_pem_;  // the connection's client certificate and chain
  uint64_t trust_generation_ = 0;     // the authenticator's generation at the last check (read callback only)
  absl::Time checked_until_;          // when the last check ages out (read callback only)
  bool registered_ = false;       // with the service (set once, in the constructor)
  std::atomic<int> refs_{1};      // gRPC's, until OnDone; plus BeginDrain's while it drains this stream
  v1::SignCsrRequest request_;  // the one outstanding read's buffer

  const size_t window_;        // limits.stream_window: items held (requests in flight + answers unwritten)
  const size_t window_bytes_;  // limits.stream_window_bytes: their serialized bytes

  std::mutex mu_;
  std::deque<v1::SignCsrStreamResponse> writes_;  // guarded by mu_; front is being written when writing_
  size_t in_flight_ = 0;                          // guarded by mu_; requests handed to the signer
  size_t in_flight_bytes_ = 0;                    // guarded by mu_; their serialized size
  size_t unwritten_bytes_ = 0;                    // guarded by mu_; serialized size of writes_
  bool writing_ = false;                          // guarded by mu_
  bool issuing_read_ = false;                     // guarded by mu_; a StartRead is about to be issued
  bool reads_done_ = false;                       // guarded by mu_
  bool read_paused_ = false;                      // guarded by mu_
  bool draining_ = false;                         // guarded by mu_; no further read (shutdown or refused)
  grpc::Status final_status_;                     // guarded by mu_; the stream's status once draining_
  bool broken_ = false;                           // guarded by mu_
  bool finished_ = false;                         // guarded by mu_
};

grpc::ServerBidiReactor<v1::SignCsrRequest, v1::SignCsrStreamResponse>* CaService::SignCsrStream(
    grpc::CallbackServerContext* context) {
  return new SignStreamReactor(this, context);
}

}  // namespace linesign::service

namespace linesign::service {

absl::Status CaService::Draining() {
  return absl::UnavailableError(
      "server is shutting down: no new signing requests are taken; retry with the same request_id on another "
      "replica or after the restart");
}

bool CaService::Enter(bool even_when_draining) {
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_ && !even_when_draining) return false;
  ++active_;
  return true;
}

void CaService::Leave() {
  std::lock_guard<std::mutex> lock(mu_);
  if (--active_ == 0) idle_.notify_all();
}

absl::Status CaService::AddStream(SignStreamReactor* stream, const std::string& identity) {
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_) return Draining();
  auto known = streams_by_identity_.find(identity);
  const uint32_t open = known == streams_by_identity_.end() ? 0 : known->second;
  const uint32_t limit = p_.config->signer().max_streams_per_station();
  if (open >= limit) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "station '", identity, "' already has ", open, " SignCsrStream streams open (signer.max_streams_per_station ",
        limit, "); send more requests on an open stream, or close one first"));
  }
  const uint32_t max_streams = p_.config->limits().max_streams();
  if (streams_.size() >= max_streams) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the server already has ", streams_.size(), " SignCsrStream streams open (limits.max_streams ", max_streams,
        "); retry with backoff, or send more requests on a stream already open"));
  }
  ++streams_by_identity_[identity];
  streams_.insert(stream);
  ++active_;
  return absl::OkStatus();
}

void CaService::RemoveStream(SignStreamReactor* stream, const std::string& identity) {
  std::lock_guard<std::mutex> lock(mu_);
  streams_.erase(stream);
  if (auto it = streams_by_identity_.find(identity); it != streams_by_identity_.end() && --it->second == 0) {
    streams_by_identity_.erase(it);
  }
  if (--active_ == 0) idle_.notify_all();
}

void CaService::BeginDrain() {
  std::vector<SignStreamReactor*> streams;
  {
    std::lock_guard<std::mutex> lock(mu_);
    draining_ = true;
    for (SignStreamReactor* s : streams_) {
      s->Ref();  // keeps it alive until Drain below has returned, even if gRPC is done with it meanwhile
      streams.push_back(s);
    }
  }
  for (SignStreamReactor* s : streams) {
    s->Drain();
    s->Unref();
  }
}

bool CaService::WaitUntilIdle(absl::Time deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  return idle_.wait_until(lock, absl::ToChronoTime(deadline), [this] { return active_ == 0; });
}

}  // namespace linesign::service
