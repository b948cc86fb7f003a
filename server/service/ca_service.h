// CaService: the CertificateAuthority gRPC service, on gRPC's callback API. Every RPC first learns who is
// calling (the verified client certificate, auth::Authenticator) and whether that identity may do this
// (auth::AccessPolicy); a signing request is then checked on the callback thread (decode, verify, profile: CPU
// only, no I/O) and handed to the batch signer, whose worker finishes the reactor once the certificate is
// durable. No thread waits per RPC. Every decision is counted and written to the audit log.
#ifndef LINESIGN_SERVER_SERVICE_CA_SERVICE_H_
#define LINESIGN_SERVER_SERVICE_CA_SERVICE_H_

#include <array>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <set>

#include "absl/container/flat_hash_map.h"
#include "common/clock.h"
#include "linesign/v1/ca.grpc.pb.h"
#include "linesign/v1/config.pb.h"
#include "server/audit/audit_log.h"
#include "server/auth/access_policy.h"
#include "server/auth/authenticator.h"
#include "server/issuance/batch_signer.h"
#include "server/profile/profile.h"

namespace linesign::service {

class SignStreamReactor;

// The RPCs, for counting.
enum class Rpc { kSignCsr, kSignCsrStream, kGetCaChain, kGetCertificate, kGetStats, kCount };
const char* RpcName(Rpc rpc);

class CaService final : public v1::CertificateAuthority::CallbackService {
 public:
  // Everything is borrowed and must outlive the service.
  struct Parts {
    const v1::ServerConfig* config;
    const issuance::IssuingCa* ca;
    issuance::BatchSigner* signer;
    store::CertificateReader* reader;
    const auth::Authenticator* authenticator;
    auth::AccessPolicy* access;
    audit::AuditLog* audit;
    const profile::Profiles* profiles;
    const Clock* clock = RealClock::Get();  // borrowed; "now" for authentication, access and audit
  };
  explicit CaService(Parts parts) : p_(parts) {}

  grpc::ServerUnaryReactor* SignCsr(grpc::CallbackServerContext* context, const v1::SignCsrRequest* request,
                                    v1::SignCsrResponse* response) override;
  grpc::ServerBidiReactor<v1::SignCsrRequest, v1::SignCsrStreamResponse>* SignCsrStream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* GetCaChain(grpc::CallbackServerContext* context, const v1::GetCaChainRequest* request,
                                       v1::GetCaChainResponse* response) override;
  grpc::ServerUnaryReactor* GetCertificate(grpc::CallbackServerContext* context,
                                           const v1::GetCertificateRequest* request,
                                           v1::GetCertificateResponse* response) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* context, const v1::GetStatsRequest* request,
                                     v1::GetStatsResponse* response) override;

  // BeginDrain starts a graceful stop: new signing calls and streams are refused with UNAVAILABLE, and every open
  // stream stops reading, answers each request it has read, and finishes (OK when the station had already closed
  // its side, else UNAVAILABLE naming what to do with the requests it sent after that).
  void BeginDrain();
  // WaitUntilIdle waits until no signing call or stream is in progress, or until `deadline`; true when idle.
  bool WaitUntilIdle(absl::Time deadline);

  // answered returns how many answers `rpc` gave with `code` (a grpc::StatusCode); a stream counts each request.
  uint64_t answered(Rpc rpc, int code) const {
    return answered_[static_cast<int>(rpc)][code & 31].load(std::memory_order_relaxed);
  }

 private:
  friend class SignStreamReactor;
  // PeerCertificates returns the caller's client certificate and chain as PEM ("" when none).
  static std::pair<std::string, std::string> PeerCertificates(const grpc::CallbackServerContext* context);
  // Authenticate returns the caller's identity from its verified client certificate.
  absl::StatusOr<std::string> Authenticate(const grpc::CallbackServerContext* context) const;
  // Check validates `request` from `identity` into a job: request id, profile, authorisation and rate limit,
  // then the CSR against the profile. `profile` receives the profile name (for the audit) once known.
  absl::StatusOr<issuance::SignJob> Check(const v1::SignCsrRequest& request, const std::string& identity,
                                          std::string* profile);
  // Refused counts and audits a refusal and returns its gRPC status.
  grpc::Status Refused(Rpc rpc, const std::string& identity, const std::string& peer, const std::string& profile,
                       const std::string& request_id, const absl::Status& why);
  // Issued counts and audits a certificate handed out (or a failure after acceptance).
  void Completed(Rpc rpc, const std::string& identity, const std::string& peer,
                 const absl::StatusOr<store::CertificateRecord>& record, bool replayed, const std::string& profile,
                 const std::string& request_id);
  // GetCertificateOffThread looks the certificate up and finishes `reactor` (on a thread of its own).
  void GetCertificateOffThread(grpc::ServerUnaryReactor* reactor, v1::GetCertificateResponse* response,
                               const std::string& serial, const std::string& peer, const std::string& id);
  // Draining is the refusal for a call that arrives after BeginDrain.
  static absl::Status Draining();
  // Enter and Leave bracket work in progress (a unary signing call handed to the signer, an admin read). Enter
  // returns false, and enters nothing, once draining has begun unless `even_when_draining`.
  bool Enter(bool even_when_draining);
  void Leave();
  // AddStream registers an open stream of `identity`: Unavailable once draining has begun, ResourceExhausted when
  // the identity has signer.max_streams_per_station open already (the stream must then refuse). RemoveStream
  // forgets it.
  absl::Status AddStream(SignStreamReactor* stream, const std::string& identity);
  void RemoveStream(SignStreamReactor* stream, const std::string& identity);

  void Count(Rpc rpc, grpc::StatusCode code) {
    answered_[static_cast<int>(rpc)][static_cast<int>(code) & 31].fetch_add(1, std::memory_order_relaxed);
  }

  const Parts p_;
  bool draining_ = false;                 // guarded by mu_
  std::mutex mu_;
  std::condition_variable idle_;
  int active_ = 0;                       // guarded by mu_
  std::set<SignStreamReactor*> streams_;  // guarded by mu_
  absl::flat_hash_map<std::string, uint32_t> streams_by_identity_;  // guarded by mu_
  std::array<std::array<std::atomic<uint64_t>, 32>, static_cast<int>(Rpc::kCount)> answered_{};
};

// FillResponse copies a certificate record into a SignCsrResponse.
void FillResponse(const store::CertificateRecord& record, const std::string& chain_pem, bool replayed,
                  v1::SignCsrResponse* response);

}  // namespace linesign::service

#endif  // LINESIGN_SERVER_SERVICE_CA_SERVICE_H_
