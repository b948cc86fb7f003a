// CaService: the CertificateAuthority gRPC service, on gRPC's callback API. A handler checks the request on the
// callback thread (decode, verify, profile: CPU only, no I/O), hands it to the batch signer and returns; the
// signer's worker finishes the reactor once the certificate is durable. No thread waits per RPC.
#ifndef LINESIGN_SERVER_SERVICE_CA_SERVICE_H_
#define LINESIGN_SERVER_SERVICE_CA_SERVICE_H_

#include <array>
#include <atomic>

#include "linesign/v1/ca.grpc.pb.h"
#include "linesign/v1/config.pb.h"
#include "server/issuance/batch_signer.h"

namespace linesign::service {

class CaService final : public v1::CertificateAuthority::CallbackService {
 public:
  // `config`, `ca` and `signer` are borrowed and must outlive the service.
  CaService(const v1::ServerConfig* config, const issuance::IssuingCa* ca, issuance::BatchSigner* signer)
      : config_(config), ca_(ca), signer_(signer) {}

  grpc::ServerUnaryReactor* SignCsr(grpc::CallbackServerContext* context, const v1::SignCsrRequest* request,
                                    v1::SignCsrResponse* response) override;
  grpc::ServerBidiReactor<v1::SignCsrRequest, v1::SignCsrStreamResponse>* SignCsrStream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* GetCaChain(grpc::CallbackServerContext* context, const v1::GetCaChainRequest* request,
                                       v1::GetCaChainResponse* response) override;

  // answered returns how many SignCsr calls ended with `code` (a grpc::StatusCode).
  uint64_t answered(int code) const { return answered_[code & 15].load(std::memory_order_relaxed); }

 private:
  friend class SignStreamReactor;
  // Check validates `request` into a job; the error says what is wrong.
  absl::StatusOr<issuance::SignJob> Check(const v1::SignCsrRequest& request, const std::string& station) const;
  void Count(const grpc::Status& status) {
    answered_[static_cast<int>(status.error_code()) & 15].fetch_add(1, std::memory_order_relaxed);
  }

  const v1::ServerConfig* config_;    // borrowed
  const issuance::IssuingCa* ca_;     // borrowed
  issuance::BatchSigner* signer_;     // borrowed
  std::array<std::atomic<uint64_t>, 16> answered_{};
};

// FillResponse copies a certificate record into a SignCsrResponse.
void FillResponse(const store::CertificateRecord& record, const std::string& chain_pem, bool replayed,
                  v1::SignCsrResponse* response);

}  // namespace linesign::service

#endif  // LINESIGN_SERVER_SERVICE_CA_SERVICE_H_
