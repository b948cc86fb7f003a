// StationService: the CertificateAuthority gRPC service, what stations call (SignCsr, SignCsrStream, GetCaChain),
// on gRPC's callback API. Every RPC first learns who is calling (the verified client certificate,
// auth::Authenticator) and whether that identity may do this (auth::AccessPolicy); a signing request is then
// checked on the callback thread (RequestChecker: CPU only, no I/O) and handed to the batch signer, whose worker
// finishes the call once the certificate is durable. No thread waits per RPC. Every decision is counted and
// audited by RpcCounters; work in progress is tracked by DrainTracker for a graceful stop.
#ifndef LINESIGN_SERVER_SERVICE_STATION_SERVICE_H_
#define LINESIGN_SERVER_SERVICE_STATION_SERVICE_H_

#include "common/clock.h"
#include "linesign/v1/ca.grpc.pb.h"
#include "linesign/v1/config.pb.h"
#include "server/auth/access_policy.h"
#include "server/auth/authenticator.h"
#include "server/issuance/batch_signer.h"
#include "server/revocation/crl_publisher.h"
#include "server/service/drain_tracker.h"
#include "server/service/request_checker.h"
#include "server/service/rpc_counters.h"
#include "server/service/sign_stream_reactor.h"

namespace linesign::service {

class StationService final : public v1::CertificateAuthority::CallbackService {
 public:
  // Everything is borrowed and must outlive the service.
  struct Parts {
    const v1::ServerConfig* config;
    const issuance::IssuingCa* ca;
    issuance::BatchSigner* signer;
    const auth::Authenticator* authenticator;
    auth::AccessPolicy* access;
    const RequestChecker* checker;
    RpcCounters* counters;
    DrainTracker* drain;
    const Clock* clock;
    // The CRL (issue 11); GetCrl is UNAVAILABLE without it.
    const revocation::CrlPublisher* crl = nullptr;
  };
  explicit StationService(Parts parts);

  grpc::ServerUnaryReactor* SignCsr(grpc::CallbackServerContext* context, const v1::SignCsrRequest* request,
                                    v1::SignCsrResponse* response) override;
  grpc::ServerBidiReactor<v1::SignCsrRequest, v1::SignCsrStreamResponse>* SignCsrStream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* GetCaChain(grpc::CallbackServerContext* context, const v1::GetCaChainRequest* request,
                                       v1::GetCaChainResponse* response) override;
  // GetCrl returns the current CRL from memory (no store read): any identity an access rule names, like GetCaChain.
  grpc::ServerUnaryReactor* GetCrl(grpc::CallbackServerContext* context, const v1::GetCrlRequest* request,
                                   v1::GetCrlResponse* response) override;

 private:
  const Parts p_;
  const StreamCollaborators stream_;  // what each SignStreamReactor borrows
};

}  // namespace linesign::service

#endif  // LINESIGN_SERVER_SERVICE_STATION_SERVICE_H_
