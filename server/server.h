// LinesignServer: wires the parts of one server process together (key, CA, store, batch signer, gRPC).
#ifndef LINESIGN_SERVER_SERVER_H_
#define LINESIGN_SERVER_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "hsm/signer.h"
#include "linesign/v1/config.pb.h"
#include "server/iot/iot_targets.h"
#include "server/iot/registrar_watch.h"
#include "server/issuance/batch_signer.h"
#include "server/lifecycle/renewal.h"
#include "server/lifecycle/webhook.h"
#include "server/service/event_watch.h"
#include "server/observability/health_monitor.h"
#include "server/observability/health_service.h"
#include "server/revocation/crl_builder.h"
#include "server/revocation/crl_publisher.h"
#include "server/observability/http_server.h"
#include "server/observability/server_metrics.h"
#include "server/service/admin_service.h"
#include "server/service/bounded_executor.h"
#include "server/service/drain_tracker.h"
#include "server/service/iot_admin_service.h"
#include "server/service/request_checker.h"
#include "server/service/rpc_counters.h"
#include "server/service/station_service.h"
#include "server/store/store.h"
#include "server/tasks/task_runner.h"

namespace linesign {

class LinesignServer {
 public:
  struct StartOptions {
    // The one clock of the process (borrowed; must outlive the server): the store, the batch signer, the
    // service, health and the background tasks all take "now" from it, so in-process tests can pass a FakeClock.
    const Clock* clock = RealClock::Get();
  };

  // Start opens the CA key, the chain and the store, checks they fit together, starts the background tasks (the
  // store's checkpoint, then the health monitor) and starts serving `config` (already validated).
  // FailedPrecondition / Unavailable with the cause when anything is missing or wrong.
  static absl::StatusOr<std::unique_ptr<LinesignServer>> Start(v1::ServerConfig config, StartOptions options);
  static absl::StatusOr<std::unique_ptr<LinesignServer>> Start(v1::ServerConfig config) {
    return Start(std::move(config), StartOptions());
  }
  ~LinesignServer();

  // crl returns the CRL publisher, for the HTTP listener to serve CurrentDer(). Never null after Start.
  const revocation::CrlPublisher* crl() const { return crl_publisher_.get(); }

  // address is the bound host:port (with the real port when the configuration asked for port 0).
  const std::string& address() const { return address_; }
  // http_address is the HTTP listener's bound host:port ("" when http.listen is "").
  std::string http_address() const { return http_ != nullptr ? http_->address() : ""; }
  // http returns the HTTP listener (null when off), where other parts mount GET pages (HttpServer::Handle).
  observability::HttpServer* http() { return http_.get(); }

  // Shutdown reports NOT_SERVING, refuses new signing calls, lets in-flight ones and open streams finish (up to
  // `grace`; see DrainTracker::BeginDrain), then stops gRPC, the batch signer, the background tasks (in reverse
  // start order, each finishing its running round) and closes the store. Idempotent.
  void Shutdown(absl::Duration grace = absl::Seconds(30));
  // ReloadTrust re-reads the station CA bundle and CRL files the configuration names (tls.client_ca_file,
  // tls.crl_files): SIGHUP. On an error the trust in force is kept and the error, naming the field, returned.
  absl::Status ReloadTrust();
  // ReopenAudit opens audit.file again at its path (after log rotation): SIGHUP.
  absl::Status ReopenAudit();
  // Wait blocks until Shutdown has completed.
  void Wait();

 private:
  LinesignServer() = default;

  const Clock* clock_ = nullptr;  // borrowed
  v1::ServerConfig config_;
  // The metrics outlive everything they watch (declared first, destroyed last).
  std::unique_ptr<observability::ServerMetrics> metrics_;
  issuance::IssuingCa ca_;
  std::unique_ptr<hsm::Signer> signer_;
  std::unique_ptr<hsm::Signer> metered_signer_;  // signer_, measured: what the certificate builder signs with
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<store::IssuanceStore> metered_store_;  // store_, measured: what the batch signer records in
  std::unique_ptr<issuance::CertificateBuilder> builder_;
  // Revocation (issue 11): the CRL builder and publisher (its task runs on tasks_).
  std::unique_ptr<revocation::CrlBuilder> crl_builder_;
  std::unique_ptr<revocation::CrlPublisher> crl_publisher_;
  std::unique_ptr<issuance::BatchSigner> batch_signer_;
  std::unique_ptr<auth::Authenticator> authenticator_;
  std::unique_ptr<auth::AccessPolicy> access_;
  std::unique_ptr<audit::AuditLog> audit_;
  profile::Profiles profiles_;
  // The services and what they share: counters and audit, the drain tracker, the request checker, the executor
  // of administrative reads. Declared after what they borrow, so they go first.
  std::unique_ptr<service::RpcCounters> counters_;
  std::unique_ptr<service::DrainTracker> drain_;
  std::unique_ptr<service::RequestChecker> checker_;
  std::unique_ptr<service::BoundedExecutor> admin_executor_;
  // Lifecycle (issue 11): the renewer (used by the scanner task and RenewCertificate) and the WatchEvents hub.
  std::unique_ptr<lifecycle::Renewer> renewer_;
  std::unique_ptr<service::EventWatchers> watchers_;
  std::unique_ptr<service::StationService> service_;
  std::unique_ptr<service::AdminService> admin_;
  std::unique_ptr<iot::IotTargets> iot_targets_;
  // AwaitIotRegistration's waiters; the registrar (a task) tells it of every registration that ends.
  std::unique_ptr<iot::RegistrationWatch> iot_watch_;
  std::unique_ptr<service::IotAdminService> iot_admin_;
  std::unique_ptr<observability::HealthService> health_;
  observability::HealthMonitor* health_monitor_ = nullptr;  // owned by tasks_
  // After everything the tasks use: destroyed (stopped) first.
  std::unique_ptr<tasks::TaskRunner> tasks_;
  std::unique_ptr<grpc::Server> grpc_server_;
  std::string address_;
  // Last: stopped (destroyed) before anything its pages read.
  std::unique_ptr<observability::HttpServer> http_;
  std::mutex mu_;
  bool shut_down_ = false;  // guarded by mu_
};

}  // namespace linesign

#endif  // LINESIGN_SERVER_SERVER_H_
