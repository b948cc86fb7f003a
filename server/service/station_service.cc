#include "server/service/station_service.h"

#include "server/service/grpc_status.h"
#include "server/service/peer.h"
#include "server/service/sign_response.h"

namespace linesign::service {

StationService::StationService(Parts parts)
    : p_(parts),
      stream_{.authenticator = parts.authenticator,
              .checker = parts.checker,
              .submit =
                  [signer = parts.signer](issuance::SignJob job) {
                    return signer->Submit(std::move(job), issuance::BatchSigner::Admission::kAlways);
                  },
              .counters = parts.counters,
              .drain = parts.drain,
              .clock = parts.clock,
              .chain_pem = &parts.ca->chain_pem,
              .window = parts.config->limits().stream_window(),
              .window_bytes = parts.config->limits().stream_window_bytes()} {}

grpc::ServerUnaryReactor* StationService::SignCsr(grpc::CallbackServerContext* context,
                                                  const v1::SignCsrRequest* request, v1::SignCsrResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  CallInfo call{"", context->peer(), "", request->request_id()};
  auto identity = Authenticate(*p_.authenticator, context, p_.clock->Now());
  if (!identity.ok()) {
    reactor->Finish(p_.counters->Refused(Rpc::kSignCsr, call, identity.status()));
    return reactor;
  }
  call.identity = *identity;
  auto job = p_.checker->Check(*request, *identity, &call.profile);
  if (!job.ok()) {
    reactor->Finish(p_.counters->Refused(Rpc::kSignCsr, call, job.status()));
    return reactor;
  }
  if (!p_.drain->Enter(/*even_when_draining=*/false)) {
    reactor->Finish(p_.counters->Refused(Rpc::kSignCsr, call, DrainTracker::Draining()));
    return reactor;
  }
  job->done = [this, reactor, response, call](absl::StatusOr<store::CertificateRecord> record, bool replayed) {
    p_.counters->Completed(Rpc::kSignCsr, call, record, replayed);
    if (record.ok()) FillResponse(*record, p_.ca->chain_pem, replayed, response);
    reactor->Finish(record.ok() ? grpc::Status::OK : ToGrpcStatus(record.status()));
    p_.drain->Leave();
  };
  if (absl::Status st = p_.signer->Submit(*std::move(job)); !st.ok()) {
    reactor->Finish(p_.counters->Refused(Rpc::kSignCsr, call, st));
    p_.drain->Leave();
  }
  return reactor;
}

grpc::ServerBidiReactor<v1::SignCsrRequest, v1::SignCsrStreamResponse>* StationService::SignCsrStream(
    grpc::CallbackServerContext* context) {
  return new SignStreamReactor(&stream_, context);
}

grpc::ServerUnaryReactor* StationService::GetCaChain(grpc::CallbackServerContext* context,
                                                     const v1::GetCaChainRequest* request,
                                                     v1::GetCaChainResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto identity = Authenticate(*p_.authenticator, context, p_.clock->Now());
  absl::Status allowed = identity.ok() ? p_.access->AllowRead(*identity, "GetCaChain") : identity.status();
  if (!allowed.ok()) {
    reactor->Finish(p_.counters->Refused(Rpc::kGetCaChain, CallInfo{identity.value_or(""), context->peer(), "", ""},
                                         allowed));
    return reactor;
  }
  response->set_chain_pem(p_.ca->chain_pem);
  response->set_issuer_certificate_der(p_.ca->certificate_der);
  p_.counters->Answered(Rpc::kGetCaChain);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* StationService::GetCrl(grpc::CallbackServerContext* context,
                                                 const v1::GetCrlRequest* request, v1::GetCrlResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto identity = Authenticate(*p_.authenticator, context, p_.clock->Now());
  absl::Status allowed = identity.ok() ? p_.access->AllowRead(*identity, "GetCrl") : identity.status();
  absl::StatusOr<revocation::PublishedCrl> crl =
      p_.crl == nullptr ? absl::UnavailableError("this server publishes no CRL") : p_.crl->Current();
  if (allowed.ok() && !crl.ok()) allowed = crl.status();
  if (!allowed.ok()) {
    reactor->Finish(
        p_.counters->Refused(Rpc::kGetCrl, CallInfo{identity.value_or(""), context->peer(), "", ""}, allowed));
    return reactor;
  }
  response->set_crl_der(std::move(crl->der));
  response->set_crl_number(static_cast<uint64_t>(crl->number));
  response->mutable_this_update()->set_seconds(absl::ToUnixSeconds(crl->this_update));
  response->mutable_next_update()->set_seconds(absl::ToUnixSeconds(crl->next_update));
  p_.counters->Answered(Rpc::kGetCrl);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace linesign::service
