#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/impl/server_builder_option.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>
#include <grpcpp/resource_quota.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/openssl_util.h"
#include "common/status_macros.h"
#include "hsm/open_signer.h"
#include "server/config/config.h"
#include "server/observability/status_page.h"
#include "server/iot/iot_config.h"
#include "server/iot/operation_stats.h"
#include "server/iot/registrar.h"

namespace linesign {

namespace {

// kCheckpointEvery is how often the store-checkpoint task looks at the WAL's size: a WAL grows by at most this
// long's commits past SqliteStore::kCheckpointPages before it is copied.
constexpr absl::Duration kCheckpointEvery = absl::Milliseconds(250);
// kHealthProbe is what the health monitor has the CA key sign (hashed first, like any message).
constexpr absl::string_view kHealthProbe = "linesign health probe";

// kSettle is how long a drained server keeps its connections open for the stations to read their last answers.
constexpr absl::Duration kSettle = absl::Milliseconds(250);

// kStoreStatsEvery is how often the outbox backlog and the expiry distribution are read from the store for the
// metrics (a few indexed counts on the administrative read connection).
constexpr absl::Duration kStoreStatsEvery = absl::Seconds(15);

// ServerCredentials: TLS that asks every client for a certificate. The handshake proves the client holds the
// certificate's key; the chain, validity and revocation are checked per call by auth::Authenticator, so that a
// refused station gets an UNAUTHENTICATED status with the reason instead of a bare handshake failure.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(const v1::TlsConfig& tls,
                                                                          const std::string& listen) {
  if (tls.insecure()) {
    LogWarning("tls.insecure: PLAINTEXT on ", listen, "; every caller is the unauthenticated identity '",
               auth::kInsecureIdentity, "'. For development and tests only.");
    return grpc::InsecureServerCredentials();
  }
  grpc::SslServerCredentialsOptions options(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_BUT_DONT_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  auto cert = ReadFile(tls.certificate_file());
  if (!cert.ok()) return absl::InvalidArgumentError(absl::StrCat("tls.certificate_file: ", cert.status().message()));
  auto key = ReadFile(tls.key_file());
  if (!key.ok()) return absl::InvalidArgumentError(absl::StrCat("tls.key_file: ", key.status().message()));
  auto cas = ReadFile(tls.client_ca_file());
  if (!cas.ok()) return absl::InvalidArgumentError(absl::StrCat("tls.client_ca_file: ", cas.status().message()));
  pair.cert_chain = *std::move(cert);
  pair.private_key = *std::move(key);
  options.pem_key_cert_pairs.push_back(std::move(pair));
  options.pem_root_certs = *std::move(cas);  // named to clients in the CertificateRequest
  return grpc::SslServerCredentials(options);
}

// ReflectionOption keeps gRPC's reflection plugin only when `enabled`: merely linking grpc++_reflection registers
// it for every server (a static initializer), so without this option reflection would always be on.
class ReflectionOption final : public grpc::ServerBuilderOption {
 public:
  explicit ReflectionOption(bool enabled) : enabled_(enabled) {}
  void UpdateArguments(grpc::ChannelArguments* /*args*/) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    if (enabled_) return;
    plugins->erase(std::remove_if(plugins->begin(), plugins->end(),
                                  [](const auto& p) { return p->name() == "proto_server_reflection"; }),
                   plugins->end());
  }

 private:
  const bool enabled_;
};

// ListenFailure says why `listen` (host:port) cannot be bound, by trying a plain bind of its own: gRPC only logs
// the reason. The usual one is another process (another linesign-server) listening there already.
std::string ListenFailure(const std::string& listen) {
  const auto colon = listen.rfind(':');
  std::string host = listen.substr(0, colon);
  const std::string port = listen.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints = {};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* addresses = nullptr;
  if (int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &addresses); rc != 0) {
    return absl::StrCat("cannot resolve '", host, "': ", gai_strerror(rc));
  }
  std::string why = "gRPC could not bind it (see the log above)";
  for (addrinfo* a = addresses; a != nullptr; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));  // as gRPC does: TIME_WAIT is no conflict
    const int rc = bind(fd, a->ai_addr, a->ai_addrlen);
    const int err = errno;
    close(fd);
    if (rc == 0) continue;
    if (err == EADDRINUSE) {
      why = "the address is in use (is another linesign-server running?)";
      break;
    }
    why = err == EADDRNOTAVAIL ? "the address is not one of this machine's" : std::strerror(err);
  }
  freeaddrinfo(addresses);
  return why;
}

// StartHttp starts the HTTP listener `c.http` names with /metrics, /healthz and /readyz.
absl::StatusOr<std::unique_ptr<observability::HttpServer>> StartHttp(const v1::ServerConfig& c,
                                                                     const auth::Authenticator* authenticator,
                                                                     const Clock* clock,
                                                                     observability::ServerMetrics* metrics,
                                                                     const observability::HealthMonitor* health) {
  const v1::HttpConfig& h = c.http();
  observability::HttpServer::Options o;
  o.listen = h.listen();
  o.threads = static_cast<int>(h.threads());
  o.tls = h.tls() == "same-as-grpc";
  o.certificate_file = c.tls().certificate_file();
  o.key_file = c.tls().key_file();
  o.client_ca_file = c.tls().client_ca_file();
  o.authenticator = h.require_client_certificate() ? authenticator : nullptr;
  o.clock = clock;
  if (!config::IsLoopback(h.listen()) && o.authenticator == nullptr) {
    LogWarning("http.listen ", h.listen(), " is not loopback and http.require_client_certificate is off: the "
               "metrics are shown to anyone who can connect");
  }
  LINESIGN_ASSIGN_OR_RETURN(auto http, observability::HttpServer::Start(std::move(o)));
  http->Handle("/metrics", [metrics](const observability::HttpRequest&) {
    return observability::HttpResponse{.content_type = "text/plain; version=0.0.4; charset=utf-8",
                                       .body = metrics->registry()->Render()};
  });
  http->Handle("/healthz", [](const observability::HttpRequest&) {
    return observability::HttpResponse{.body = "ok\n"};
  });
  // The line's status page (status_page.h): "/", "/status", "/status.json".
  observability::MountStatusPage(http.get(), metrics, health);
  http->Handle("/readyz", [health](const observability::HttpRequest&) {
    if (health->serving()) return observability::HttpResponse{.body = "ready\n"};
    std::string reason = health->reason();
    return observability::HttpResponse{.status = 503,
                                       .body = absl::StrCat("not ready: ", reason.empty() ? "starting" : reason, "\n")};
  });
  return http;
}

// IotCeilings: the configured AWS IoT targets' requests/s per operation, for `linesign iot status`.
std::map<std::string, std::map<std::string, double>> IotCeilings(const v1::IotConfig& iot) {
  std::map<std::string, std::map<std::string, double>> out;
  for (const auto& t : iot.targets()) out[t.name()] = iot::EffectiveRates(t);
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<LinesignServer>> LinesignServer::Start(v1::ServerConfig config,
                                                                     StartOptions options) {
  std::unique_ptr<LinesignServer> s(new LinesignServer());
  s->clock_ = options.clock;
  s->config_ = std::move(config);
  const v1::ServerConfig& c = s->config_;
  LINESIGN_ASSIGN_OR_RETURN(s->ca_, issuance::LoadIssuingCa(c.ca().chain_file(), s->clock_->Now()));
  // Before the key is opened: a client CA bundle that would let device certificates authenticate stops here.
  LINESIGN_ASSIGN_OR_RETURN(s->authenticator_, auth::Authenticator::Create(c.tls(), c.ca().chain_file()));
  LINESIGN_ASSIGN_OR_RETURN(s->signer_,
                            hsm::OpenSigner(c.hsm(), X509_get0_pubkey(s->ca_.certificate.get()),
                                            static_cast<int>(c.hsm().sessions() > 0 ? c.hsm().sessions()
                                                                                    : c.signer().workers())));
  LogInfo("CA key: ", s->signer_->description(), " (", hsm::AlgorithmName(s->signer_->algorithm()), ")");
  LINESIGN_ASSIGN_OR_RETURN(s->store_, store::Open(c.store(), s->clock_));
  // Metrics (server/observability/server_metrics.h): the key and the store, measured by decorators; the batch
  // signer and the counters report to it as their observer.
  s->metrics_ = std::make_unique<observability::ServerMetrics>();
  s->metered_signer_ = s->metrics_->MeterSigner(s->signer_.get());
  s->metered_store_ = s->metrics_->MeterStore(s->store_.get());
  // The tasks start once what they use is open, and stop (in reverse) before it is closed.
  s->tasks_ = std::make_unique<tasks::TaskRunner>(s->clock_);
  s->tasks_->Start(std::make_unique<tasks::FunctionTask>(
      "store-checkpoint", kCheckpointEvery, [store = s->store_.get()](absl::Time) { return store->Checkpoint(); }));
  LINESIGN_ASSIGN_OR_RETURN(s->builder_, issuance::CertificateBuilder::Create(&s->ca_, s->metered_signer_.get()));
  // The CRL: signed by the same key through the same signer; the latest one in the store is served at once, and
  // the task's first round (run here, before any call) makes one when there is none or it is due.
  LINESIGN_ASSIGN_OR_RETURN(s->crl_builder_, revocation::CrlBuilder::Create(&s->ca_, s->metered_signer_.get()));
  LINESIGN_ASSIGN_OR_RETURN(
      s->crl_publisher_,
      revocation::CrlPublisher::Create(
          s->crl_builder_.get(), s->store_.get(),
          revocation::CrlPublisher::Options{.validity = absl::Seconds(c.crl().validity_seconds()),
                                            .refresh_before = absl::Seconds(c.crl().refresh_before_seconds()),
                                            .min_interval = absl::Milliseconds(c.crl().min_interval_ms())}));
  s->tasks_->Start(s->crl_publisher_->MakeTask());
  {
    const revocation::CrlPublisher* crl = s->crl_publisher_.get();
    const Clock* clock = s->clock_;
    s->metrics_->registry()->AddCallback(
        "linesign_crl_age_seconds", "Seconds since the current CRL's thisUpdate; no sample before the first CRL.",
        metrics::Type::kGauge, {}, [crl, clock](const metrics::Emit& emit) {
          if (auto h = crl->CurrentHeader(); h.ok()) emit({}, absl::ToDoubleSeconds(clock->Now() - h->this_update));
        });
    s->metrics_->registry()->AddCallback(
        "linesign_crl_next_update_seconds",
        "Seconds until the current CRL's nextUpdate (negative: relying parties refuse it).",
        metrics::Type::kGauge, {}, [crl, clock](const metrics::Emit& emit) {
          if (auto h = crl->CurrentHeader(); h.ok()) emit({}, absl::ToDoubleSeconds(h->next_update - clock->Now()));
        });
    s->metrics_->AddStatusValue("crl_age_seconds", [crl, clock]() -> std::optional<double> {
      auto h = crl->CurrentHeader();
      if (!h.ok()) return std::nullopt;
      return absl::ToDoubleSeconds(clock->Now() - h->this_update);
    });
    s->metrics_->AddStatusValue("crl_next_update_seconds", [crl, clock]() -> std::optional<double> {
      auto h = crl->CurrentHeader();
      if (!h.ok()) return std::nullopt;
      return absl::ToDoubleSeconds(h->next_update - clock->Now());
    });
    s->metrics_->registry()->AddCallback(
        "linesign_crl_number", "The current CRL's number.", metrics::Type::kGauge, {},
        [crl](const metrics::Emit& emit) {
          if (auto h = crl->CurrentHeader(); h.ok()) emit({}, static_cast<double>(h->number));
        });
  }

  issuance::BatchSigner::Options opts;
  opts.workers = static_cast<int>(c.signer().workers());
  opts.sign_threads = static_cast<int>(c.hsm().sessions());
  opts.max_batch = static_cast<int>(c.signer().max_batch());
  opts.max_linger = absl::Microseconds(c.signer().max_linger_us());
  opts.queue_size = c.signer().queue_size();
  opts.clock = s->clock_;
  opts.observer = s->metrics_.get();
  s->batch_signer_ = issuance::BatchSigner::Create(s->builder_.get(), s->metered_store_.get(), opts);
  LINESIGN_ASSIGN_OR_RETURN(s->access_, auth::AccessPolicy::Create(c.access()));
  LINESIGN_ASSIGN_OR_RETURN(s->audit_, audit::AuditLog::Open(c.audit().file()));
  LINESIGN_ASSIGN_OR_RETURN(s->profiles_, profile::Profiles::Compile(c));
  LINESIGN_ASSIGN_OR_RETURN(auto credentials, ServerCredentials(c.tls(), c.listen()));
  const Clock* clock = s->clock_;
  s->counters_ = std::make_unique<service::RpcCounters>(s->audit_.get(), clock, s->metrics_.get());
  s->drain_ = std::make_unique<service::DrainTracker>(service::DrainTracker::Limits{
      .max_streams_per_identity = c.signer().max_streams_per_station(), .max_streams = c.limits().max_streams()});
  s->checker_ = std::make_unique<service::RequestChecker>(s->access_.get(), &s->profiles_, clock);
  s->service_ = std::make_unique<service::StationService>(service::StationService::Parts{
      .config = &s->config_, .ca = &s->ca_, .signer = s->batch_signer_.get(),
      .authenticator = s->authenticator_.get(), .access = s->access_.get(), .checker = s->checker_.get(),
      .counters = s->counters_.get(), .drain = s->drain_.get(), .clock = clock,
      .crl = s->crl_publisher_.get()});
  // Administrative reads are rare: two threads, and a few more waiting, are plenty; beyond that a call is refused.
  s->admin_executor_ = std::make_unique<service::BoundedExecutor>(/*threads=*/2, /*max_pending=*/16);
  // Lifecycle (issue 11): renewal and the event streams.
  s->renewer_ = std::make_unique<lifecycle::Renewer>(lifecycle::Renewer::Parts{
      .issuer_id = s->ca_.issuer_id, .reader = s->store_.get(), .signer = s->batch_signer_.get(),
      .profiles = &s->profiles_});
  s->watchers_ = std::make_unique<service::EventWatchers>(
      s->store_.get(), service::EventWatchers::Options{
                           .max_watchers = c.events().max_watchers(),
                           .poll_interval = absl::Milliseconds(c.events().poll_interval_ms())});
  s->admin_ = std::make_unique<service::AdminService>(service::AdminService::Parts{
      .issuer_id = s->ca_.issuer_id, .authenticator = s->authenticator_.get(), .access = s->access_.get(),
      .reader = s->store_.get(), .queued = [signer = s->batch_signer_.get()] { return signer->queued(); },
      .counters = s->counters_.get(), .drain = s->drain_.get(), .executor = s->admin_executor_.get(),
      .clock = clock, .revocations = s->store_.get(), .chain_pem = s->ca_.chain_pem, .profiles = &s->profiles_,
      .renewer = s->renewer_.get(), .signer = s->batch_signer_.get(), .watchers = s->watchers_.get(),
      .station_access = s->access_.get()});
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  s->tasks_->Start(std::make_unique<lifecycle::RenewalScanner>(
      s->ca_.issuer_id, s->renewer_.get(), s->store_.get(), s->store_.get(), &s->profiles_,
      lifecycle::RenewalScanner::Options{.interval = absl::Milliseconds(c.renewal().scan_interval_ms()),
                                         .batch = static_cast<int>(c.renewal().batch()),
                                         .owner = absl::StrCat(host, ":", getpid(), ":renewal")}));
  LINESIGN_ASSIGN_OR_RETURN(s->iot_targets_, iot::IotTargets::Create(c.iot(), iot::ProcessEnvironment(), clock));
  s->iot_watch_ = std::make_unique<iot::RegistrationWatch>(s->store_.get(), iot::RegistrationWatch::Options{});
  std::vector<std::string> iot_target_names;
  for (const v1::IotTarget& t : c.iot().targets()) iot_target_names.push_back(t.name());
  s->iot_admin_ = std::make_unique<service::IotAdminService>(service::IotAdminService::Parts{
      .ca_der = CertificateDer(s->ca_.certificate.get()), .targets = s->iot_targets_.get(),
      .signer = s->batch_signer_.get(), .authenticator = s->authenticator_.get(), .access = s->access_.get(),
      .counters = s->counters_.get(), .drain = s->drain_.get(), .executor = s->admin_executor_.get(),
      .clock = clock, .issuer_id = s->ca_.issuer_id, .watch = s->iot_watch_.get(), .reader = s->store_.get(),
      .target_names = iot_target_names, .registrations = s->store_.get(), .profiles = &s->profiles_,
      .ceilings = IotCeilings(c.iot()),
      // The registrar's live rates, calls and throttles, as its metrics show them.
      .operation_stats = [registry = s->metrics_->registry()](const std::string& target) {
        return iot::OperationStatsFromMetrics(registry->Render(), target);
      }});
  // The AWS IoT device registrar (issue 10): only where there is something to register (a target, or a profile
  // that registers, whose certificates then fail with the reason when its target is missing).
  bool registering = !c.iot().targets().empty();
  for (const auto& [name, p] : c.profiles()) {
    registering = registering || p.iot().register_() == "with_ca" || p.iot().register_() == "without_ca";
  }
  if (registering) {
    std::vector<iot::Registrar::Target> targets;
    for (const v1::IotTarget& t : c.iot().targets()) {
      targets.push_back({t.name(), s->iot_targets_->Find(t.name()), iot::EffectiveRates(t)});
    }
    const v1::IotConfig& iot = c.iot();
    LINESIGN_ASSIGN_OR_RETURN(
        auto registrar,
        iot::Registrar::Create(
            iot::Registrar::Parts{.issuer_id = s->ca_.issuer_id,
                                  .ca_certificate_pem = PemEncode("CERTIFICATE", CertificateDer(s->ca_.certificate.get())),
                                  .store = s->store_.get(), .outbox = s->store_.get(), .reader = s->store_.get(),
                                  .profiles = &s->profiles_, .targets = std::move(targets), .clock = clock,
                                  .metrics = s->metrics_->registry(), .watch = s->iot_watch_.get()},
            iot::Registrar::Options{
                .owner = absl::StrCat(host, ":", getpid(), ":", reinterpret_cast<uintptr_t>(s.get()), ":iot"),
                // Zero (a configuration that did not pass config::ApplyDefaults): the defaults.
                .max_in_flight = static_cast<int>(iot.max_in_flight() ? iot.max_in_flight() : 32),
                .lease = absl::Seconds(iot.lease_seconds() ? iot.lease_seconds() : 120),
                .interval = absl::Milliseconds(iot.poll_interval_ms() ? iot.poll_interval_ms() : 200),
                .retry_base = absl::Milliseconds(iot.retry_base_ms() ? iot.retry_base_ms() : 1000),
                .retry_max = absl::Milliseconds(std::max(iot.retry_max_ms(), iot.retry_base_ms() ? iot.retry_base_ms() : 1000u))}));
    s->tasks_->Start(std::move(registrar));
  }
  // The event webhook (events.webhook): follows the log by a cursor kept in the store; real time for its pauses
  // and lease (see webhook.h).
  if (c.events().has_webhook()) {
    const v1::WebhookConfig& w = c.events().webhook();
    auto sender = lifecycle::WebhookSender::Create(
        s->store_.get(), s->store_.get(),
        lifecycle::WebhookSender::Options{
            .url = w.url(), .timeout = absl::Milliseconds(w.timeout_ms()),
            .max_backoff = absl::Milliseconds(w.max_backoff_ms()), .secret_file = w.secret_file(),
            .owner = absl::StrCat(host, ":", getpid(), ":", reinterpret_cast<uintptr_t>(s.get()), ":webhook"),
            .interval = absl::Milliseconds(c.events().poll_interval_ms())});
    if (!sender.ok()) return sender.status();
    const lifecycle::WebhookSender* hook = sender->get();
    s->metrics_->registry()->AddCallback(
        "linesign_webhook_cursor_lag_events",
        "Events after the webhook's stored cursor not yet acknowledged, as this server last read them (at most "
        "100).",
        metrics::Type::kGauge, {}, [hook](const metrics::Emit& emit) { emit({}, static_cast<double>(hook->lag())); });
    s->metrics_->registry()->AddCallback(
        "linesign_webhook_delivered_total", "Events this server POSTed and saw acknowledged (2xx).",
        metrics::Type::kCounter, {},
        [hook](const metrics::Emit& emit) { emit({}, static_cast<double>(hook->delivered())); });
    s->metrics_->registry()->AddCallback(
        "linesign_webhook_failures_total", "Webhook POSTs that failed (no connection, timeout, non-2xx) and are retried.",
        metrics::Type::kCounter, {},
        [hook](const metrics::Emit& emit) { emit({}, static_cast<double>(hook->failed())); });
    s->tasks_->Start(*std::move(sender));
  }

  s->health_ =
      std::make_unique<observability::HealthService>(s->authenticator_.get(), s->audit_.get(), s->clock_);
  // Health follows the HSM and the store from here on; the first round runs now, so the server starts serving
  // gRPC already knowing whether it is healthy.
  std::vector<observability::HealthMonitor::HealthProbe> probes;
  probes.push_back({"hsm", [signer = s->signer_.get()] { return signer->Sign(kHealthProbe).status(); }});
  probes.push_back({"store", [store = s->store_.get()] { return store->Ping(); }});
  auto monitor = std::make_unique<observability::HealthMonitor>(
      std::move(probes), [health = s->health_.get()](bool serving) { health->SetServing(serving); },
      absl::Milliseconds(c.health_check_interval_ms()));
  s->health_monitor_ = monitor.get();
  s->tasks_->Start(std::move(monitor));
  // Metrics read at scrape time, and the store's figures read every kStoreStatsEvery by a task.
  s->metrics_->WatchQueue([signer = s->batch_signer_.get()] { return signer->queued(); });
  s->metrics_->WatchRpcCounters(s->counters_.get());
  s->metrics_->WatchHealth(s->health_monitor_);
  s->tasks_->Start(s->metrics_->StoreStatsTask(s->store_.get(), kStoreStatsEvery));

  for (const std::string& warning : iot::IotConfigWarnings(c)) LogWarning(warning);

  // gRPC's own health service would answer without a client certificate: ours (registered below) requires one.
  grpc::EnableDefaultHealthCheckService(false);
  // Reflection cannot be put behind the client-certificate check: it is off unless the configuration asks.
  if (c.reflection()) {
    LogWarning("reflection: true: the API schema is served to anyone who can connect to ", c.listen());
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  }
  grpc::ServerBuilder builder;
  builder.SetOption(std::make_unique<ReflectionOption>(c.reflection()));
  int port = 0;
  builder.AddListeningPort(c.listen(), credentials, &port);
  // gRPC sets SO_REUSEPORT by default: a second server on the same address would then "listen" too and the
  // kernel would split the stations between the two. Without it the second one cannot bind and says so.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(s->service_.get());
  builder.RegisterService(s->admin_.get());
  builder.RegisterService(s->iot_admin_.get());
  builder.RegisterService(s->health_.get());
  builder.SetMaxReceiveMessageSize(1 << 20);
  // What gRPC 1.51 offers to bound connections (it has no cap on their number): calls per connection, a
  // timeout for connections without calls and for unfinished handshakes, and a memory quota under which gRPC
  // shrinks its buffers and drops new connections. Streams are bounded by the service (limits.max_streams).
  const v1::LimitsConfig& limits = c.limits();
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             static_cast<int>(limits.max_concurrent_streams_per_connection()));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                             static_cast<int>(limits.max_connection_idle_seconds()) * 1000);
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                             static_cast<int>(limits.handshake_timeout_seconds()) * 1000);
  grpc::ResourceQuota quota("linesign-server");
  quota.Resize(static_cast<size_t>(limits.grpc_memory_bytes()));
  builder.SetResourceQuota(quota);
  s->grpc_server_ = builder.BuildAndStart();
  if (s->grpc_server_ == nullptr || port == 0) {
    s->batch_signer_->Shutdown();
    s->tasks_->Stop();
    return absl::UnavailableError(absl::StrCat("cannot listen on ", c.listen(), ": ", ListenFailure(c.listen())));
  }
  s->address_ = absl::StrCat(c.listen().substr(0, c.listen().rfind(':')), ":", port);

  // The operator's HTTP listener (config `http`): metrics, liveness, readiness; other parts mount more pages.
  if (!c.http().listen().empty()) {
    auto http = StartHttp(c, s->authenticator_.get(), s->clock_, s->metrics_.get(), s->health_monitor_);
    if (!http.ok()) {
      s->Shutdown(absl::ZeroDuration());
      return http.status();
    }
    s->http_ = *std::move(http);
    // The CRL at the path profiles name in their CRL distribution point: the publisher's current DER from memory.
    if (c.crl().http_path() != "off") {
      const revocation::CrlPublisher* crl = s->crl_publisher_.get();
      s->http_->Handle(c.crl().http_path(), [crl](const observability::HttpRequest&) {
        auto der = crl->CurrentDer();
        if (!der.ok()) {
          return observability::HttpResponse{.status = 503,
                                             .body = absl::StrCat("no CRL: ", der.status().message(), "\n")};
        }
        return observability::HttpResponse{.content_type = "application/pkix-crl", .body = *std::move(der)};
      });
    }
  }
  return s;
}

LinesignServer::~LinesignServer() { Shutdown(absl::Seconds(5)); }

void LinesignServer::Shutdown(absl::Duration grace) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  // The order (README, "Stopping"): NOT_SERVING, drain the service, stop gRPC, stop the batch signer, stop the
  // background tasks in reverse start order, close the store.
  if (health_monitor_ != nullptr) health_monitor_->SetDraining();
  if (grpc_server_ != nullptr) {
    // First our own drain, while every connection stays up: new signing calls are refused, open streams stop
    // reading and finish once each request they read is answered. Only then gRPC's shutdown, which closes a
    // connection as soon as its last call is done: closing it while the station's last answers are still on
    // their way can reset the connection and lose them (the station would have to retry), so a short settle
    // lets them arrive first. Whatever is still running at the deadline is cancelled by gRPC.
    absl::Time deadline = absl::Now() + grace;
    drain_->BeginDrain();
    watchers_->Stop();  // event streams end at once, each naming the cursor to resume from
    if (iot_watch_ != nullptr) iot_watch_->Stop();  // AwaitIotRegistration calls end UNAVAILABLE
    if (drain_->WaitUntilIdle(deadline)) {
      absl::SleepFor(std::min(kSettle, std::max(absl::ZeroDuration(), deadline - absl::Now())));
    } else {
      LogWarning("shutdown: calls still in progress after ", absl::FormatDuration(grace), "; cancelling them");
    }
    grpc_server_->Shutdown(absl::ToChronoTime(std::max(absl::Now(), deadline)));
  }
  if (batch_signer_ != nullptr) batch_signer_->Shutdown();
  if (grpc_server_ != nullptr) grpc_server_->Wait();
  // Readiness says "draining" until here; then the pages stop before what they read goes.
  if (http_ != nullptr) http_->Stop();
  admin_executor_.reset();  // runs any administrative read it accepted: they use the store
  if (tasks_ != nullptr) tasks_->Stop();
  if (iot_watch_ != nullptr) iot_watch_->Stop();  // its thread reads the store
  store_.reset();
}

absl::Status LinesignServer::ReloadTrust() { return authenticator_->Reload(config_.tls()); }

absl::Status LinesignServer::ReopenAudit() { return audit_->Reopen(); }

void LinesignServer::Wait() {
  if (grpc_server_ != nullptr) grpc_server_->Wait();
}

}  // namespace linesign
