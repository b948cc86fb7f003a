// IotAdminService: the IotAdministration gRPC service (proto/linesign/v1/iot.proto) — registering the issuing CA
// with AWS IoT, its status, activating and deactivating it. Admission as AdminService's (authenticated administrator); the work (AWS calls, the verification
// certificate through the batch signer) runs on the administrators' BoundedExecutor, never on a callback thread.
#ifndef LINESIGN_SERVER_SERVICE_IOT_ADMIN_SERVICE_H_
#define LINESIGN_SERVER_SERVICE_IOT_ADMIN_SERVICE_H_

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"

#include "common/clock.h"
#include "linesign/v1/iot.grpc.pb.h"
#include "server/auth/access_policy.h"
#include "server/auth/authenticator.h"
#include "server/issuance/batch_signer.h"
#include "server/iot/iot_targets.h"
#include "server/iot/operation_stats.h"
#include "server/iot/registrar_watch.h"
#include "server/profile/profile.h"
#include "server/store/certificate_store.h"
#include "server/service/bounded_executor.h"
#include "server/service/drain_tracker.h"
#include "server/service/rpc_counters.h"
#include "server/store/certificate_store.h"
#include "server/store/iot_registration_store.h"

namespace linesign::service {

class IotAdminService final : public v1::IotAdministration::CallbackService {
 public:
  // Everything is borrowed and must outlive the service.
  struct Parts {
    std::string ca_der;  // the issuing CA certificate, the one registered
    const iot::IotTargets* targets;
    issuance::BatchSigner* signer;  // issues the verification certificate
    const auth::Authenticator* authenticator;
    const auth::AccessPolicy* access;
    RpcCounters* counters;
    DrainTracker* drain;
    BoundedExecutor* executor;
    const Clock* clock;
    // AwaitIotRegistration: the issuing CA's id, the watch on the registrar's state, the certificates (for the
    // reason a registration does not exist) and the configured target names.
    std::string issuer_id;
    iot::RegistrationWatch* watch = nullptr;
    store::CertificateReader* reader = nullptr;
    std::vector<std::string> target_names;
    // Bulk registration jobs and status (iot_jobs.cc; also issuer_id, reader and target_names above).
    store::IotRegistrationStore* registrations = nullptr;
    const profile::Profiles* profiles = nullptr;
    // Per target, the configured requests/s per operation (iot::EffectiveRates).
    std::map<std::string, std::map<std::string, double>> ceilings;
    // The live rate, calls and throttles per operation of a target (the registrar's limiters); unset: none.
    std::function<std::vector<iot::OperationStats>(const std::string& target)> operation_stats;
  };
  explicit IotAdminService(Parts parts) : p_(std::move(parts)) {}

  grpc::ServerUnaryReactor* RegisterCaCertificate(grpc::CallbackServerContext* context,
                                                  const v1::RegisterCaCertificateRequest* request,
                                                  v1::RegisterCaCertificateResponse* response) override;
  grpc::ServerUnaryReactor* GetCaStatus(grpc::CallbackServerContext* context, const v1::CaStatusRequest* request,
                                        v1::CaStatus* response) override;
  grpc::ServerUnaryReactor* SetCaStatus(grpc::CallbackServerContext* context, const v1::CaStatusRequest* request,
                                        v1::CaStatus* response) override;
  // AwaitIotRegistration holds no thread while it waits: the watch answers it (iot/registrar_watch.h).
  grpc::ServerUnaryReactor* AwaitIotRegistration(grpc::CallbackServerContext* context,
                                                 const v1::AwaitIotRegistrationRequest* request,
                                                 v1::IotRegistrationStatus* response) override;

  // kMaxAwait caps AwaitIotRegistration's timeout; kDefaultAwait is used for none.
  static constexpr absl::Duration kMaxAwait = absl::Minutes(10);
  static constexpr absl::Duration kDefaultAwait = absl::Seconds(30);

  // Bulk registration jobs and status (iot_jobs.cc).
  grpc::ServerUnaryReactor* EnqueueIotRegistrations(grpc::CallbackServerContext* context,
                                                    const v1::EnqueueIotRegistrationsRequest* request,
                                                    v1::EnqueueIotRegistrationsResponse* response) override;
  grpc::ServerUnaryReactor* GetIotRegistrations(grpc::CallbackServerContext* context,
                                                const v1::GetIotRegistrationsRequest* request,
                                                v1::IotRegistrationsSummary* response) override;
  grpc::ServerUnaryReactor* GetIotStatus(grpc::CallbackServerContext* context, const v1::IotStatusRequest* request,
                                         v1::IotStatusResponse* response) override;

 private:
  // Run admits the caller (administrator) for `rpc`, refuses with `precheck` when it is not OK, then runs `work`
  // (given the caller's identity) on the executor, bracketed by the drain tracker, and finishes `reactor` with
  // its status, counted and audited.
  void Run(grpc::CallbackServerContext* context, grpc::ServerUnaryReactor* reactor, Rpc rpc, absl::Status precheck,
           absl::AnyInvocable<absl::Status(const std::string&) &&> work);

  const Parts p_;
};

}  // namespace linesign::service

#endif  // LINESIGN_SERVER_SERVICE_IOT_ADMIN_SERVICE_H_
