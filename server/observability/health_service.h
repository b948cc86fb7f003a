// HealthService: grpc.health.v1.Health (proto/grpc/health/v1/health.proto) behind the same mTLS as every other
// RPC. gRPC's built-in health service answers anyone who opens a connection; this one first authenticates the
// caller's client certificate with the auth::Authenticator (any identity it accepts; no access rule is needed)
// and answers UNAUTHENTICATED with the reason otherwise, audited like any other refusal.
//
// Check knows the server as a whole ("") and "linesign.v1.CertificateAuthority"; both report SetServing's state.
// Another name is NOT_FOUND. Watch is UNIMPLEMENTED (poll Check). Never blocks a callback thread.
#ifndef LINESIGN_SERVER_OBSERVABILITY_HEALTH_SERVICE_H_
#define LINESIGN_SERVER_OBSERVABILITY_HEALTH_SERVICE_H_

#include <atomic>

#include "common/clock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/observability/audit_log.h"
#include "server/auth/authenticator.h"

namespace linesign::observability {

class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  // `authenticator`, `audit` and `clock` are borrowed and must outlive the service. Starts NOT_SERVING.
  HealthService(const auth::Authenticator* authenticator, audit::AuditLog* audit,
                const Clock* clock = RealClock::Get())
      : authenticator_(authenticator), audit_(audit), clock_(clock) {}

  // SetServing sets what Check reports: SERVING or NOT_SERVING. The server's HealthMonitor calls it
  // (health_monitor.h): NOT_SERVING while starting, draining, or while the HSM or the store is unusable.
  void SetServing(bool serving) { serving_.store(serving, std::memory_order_release); }

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const grpc::health::v1::HealthCheckRequest* request,
                                  grpc::health::v1::HealthCheckResponse* response) override;
  grpc::ServerWriteReactor<grpc::health::v1::HealthCheckResponse>* Watch(
      grpc::CallbackServerContext* context, const grpc::health::v1::HealthCheckRequest* request) override;

 private:
  // Authenticate returns the caller's identity, or the refusal (audited) as a gRPC status.
  absl::StatusOr<std::string> Authenticate(grpc::CallbackServerContext* context, const char* rpc) const;

  const auth::Authenticator* const authenticator_;
  audit::AuditLog* const audit_;
  const Clock* const clock_;
  std::atomic<bool> serving_{false};
};

}  // namespace linesign::observability

#endif  // LINESIGN_SERVER_OBSERVABILITY_HEALTH_SERVICE_H_
