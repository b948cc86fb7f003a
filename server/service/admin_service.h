// AdminService: the Administration gRPC service (GetCertificate, GetStats, ListCertificates; the lifecycle RPCs
// RenewCertificate, RekeyCertificate, WatchEvents in admin_lifecycle.cc), for identities an access rule marks as
// administrators (RekeyCertificate: also the stations that may use the certificate's profile). The caller is authenticated and authorised, and the request validated, on
// the callback thread (CPU only); the store read then runs on a BoundedExecutor — never on a gRPC callback
// thread, never on a thread of its own — and a call that finds the executor full is refused RESOURCE_EXHAUSTED.
// Every refusal is counted and audited by RpcCounters; reads in progress are tracked by DrainTracker so a
// graceful stop waits for them.
#ifndef LINESIGN_SERVER_SERVICE_ADMIN_SERVICE_H_
#define LINESIGN_SERVER_SERVICE_ADMIN_SERVICE_H_

#include <functional>

#include "absl/functional/any_invocable.h"
#include "common/clock.h"
#include "linesign/v1/admin.grpc.pb.h"
#include "server/auth/access_policy.h"
#include "server/auth/authenticator.h"
#include "server/service/bounded_executor.h"
#include "server/service/drain_tracker.h"
#include "server/service/rpc_counters.h"
#include "server/store/certificate_store.h"
#include "server/store/revocation_store.h"
// Lifecycle (issue 11).
#include "server/issuance/batch_signer.h"
#include "server/lifecycle/renewal.h"
#include "server/profile/profile.h"
#include "server/service/event_watch.h"

namespace linesign::service {

// The longest profile or station filter ListCertificates accepts, in bytes.
inline constexpr size_t kMaxListFilterBytes = 128;

class AdminService final : public v1::Administration::CallbackService {
 public:
  // Everything is borrowed and must outlive the service.
  struct Parts {
    std::string issuer_id;  // the issuing CA's, for GetCertificate's look-up
    const auth::Authenticator* authenticator;
    const auth::AccessPolicy* access;
    store::CertificateReader* reader;
    std::function<size_t()> queued;  // requests waiting for a signing worker
    RpcCounters* counters;
    DrainTracker* drain;
    BoundedExecutor* executor;  // where the store reads run
    const Clock* clock;
    // Revocation (issue 11).
    store::RevocationStore* revocations = nullptr;
    // ---- Lifecycle (issue 11) ----
    std::string chain_pem;              // GetCertificate's and the successors' chain
    const profile::Profiles* profiles;  // renew_before (status), re-key CSR checks
    lifecycle::Renewer* renewer;        // RenewCertificate
    issuance::BatchSigner* signer;      // RekeyCertificate
    EventWatchers* watchers;            // WatchEvents
    auth::AccessPolicy* station_access;  // RekeyCertificate by a station: its profile and rate limit (AllowSign)
  };
  explicit AdminService(Parts parts) : p_(std::move(parts)) {}

  grpc::ServerUnaryReactor* GetCertificate(grpc::CallbackServerContext* context,
                                           const v1::GetCertificateRequest* request,
                                           v1::GetCertificateResponse* response) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* context, const v1::GetStatsRequest* request,
                                     v1::GetStatsResponse* response) override;
  grpc::ServerUnaryReactor* ListCertificates(grpc::CallbackServerContext* context,
                                             const v1::ListCertificatesRequest* request,
                                             v1::ListCertificatesResponse* response) override;

  // ---- Revocation (issue 11) ----
  grpc::ServerUnaryReactor* RevokeCertificate(grpc::CallbackServerContext* context,
                                              const v1::RevokeCertificateRequest* request,
                                              v1::RevokeCertificateResponse* response) override;
  // CheckRevocationReason accepts the RFC 5280 reasons linesign records (unspecified, keyCompromise,
  // cACompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn) and refuses the rest
  // with InvalidArgument naming the reason and why (certificateHold: revocations are final; removeFromCRL;
  // aACompromise; a number RFC 5280 does not define).
  static absl::Status CheckRevocationReason(int reason);
  // ---- Lifecycle (issue 11): admin_lifecycle.cc ----
  grpc::ServerUnaryReactor* RenewCertificate(grpc::CallbackServerContext* context,
                                             const v1::RenewCertificateRequest* request,
                                             v1::SuccessorResponse* response) override;
  grpc::ServerUnaryReactor* RekeyCertificate(grpc::CallbackServerContext* context,
                                             const v1::RekeyCertificateRequest* request,
                                             v1::SuccessorResponse* response) override;
  grpc::ServerWriteReactor<v1::WatchEventsResponse>* WatchEvents(grpc::CallbackServerContext* context,
                                                                 const v1::WatchEventsRequest* request) override;

  // ToQuery validates a ListCertificatesRequest into a store query: InvalidArgument naming the field for a
  // page_size over kMaxPageSize, a page_token this server cannot have returned, a filter that is not UTF-8 or
  // over kMaxListFilterBytes, a timestamp out of range, or issued_after not before issued_before.
  static absl::StatusOr<store::CertificateQuery> ToQuery(const v1::ListCertificatesRequest& request);

 private:
  // ---- Lifecycle (issue 11) ----
  // RenewBefore returns the renew_before of `profile` in seconds (the default for a profile no longer configured).
  int64_t RenewBefore(const std::string& profile) const;
  // OffThreadIssue runs `start` on the executor (bracketed by the drain tracker); `start` looks up what it needs and
  // hands a job to the signer, and `finish` (given to it, called exactly once, maybe on a signing worker) answers
  // with the successor, counted and audited. RESOURCE_EXHAUSTED when the executor is full.
  using Finish = absl::AnyInvocable<void(absl::StatusOr<store::CertificateRecord> record, bool replayed)>;
  void OffThreadIssue(grpc::ServerUnaryReactor* reactor, Rpc rpc, CallInfo call, v1::SuccessorResponse* response,
                      absl::AnyInvocable<void(Finish finish) &&> start);

  // Admit authenticates and authorises the caller for `rpc`; on success returns its identity.
  absl::StatusOr<std::string> Admit(grpc::CallbackServerContext* context, Rpc rpc) const;
  // OffThread runs `read` on the executor (bracketed by the drain tracker) and finishes `reactor` with its
  // status, counted and audited; RESOURCE_EXHAUSTED when the executor is full.
  void OffThread(grpc::ServerUnaryReactor* reactor, Rpc rpc, CallInfo call, absl::AnyInvocable<absl::Status() &&> read);

  const Parts p_;
};

}  // namespace linesign::service

#endif  // LINESIGN_SERVER_SERVICE_ADMIN_SERVICE_H_
