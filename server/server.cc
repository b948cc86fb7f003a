#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "hsm/open_signer.h"

namespace linesign {

namespace {

// kSettle is how long a drained server keeps its connections open for the stations to read their last answers.
constexpr absl::Duration kSettle = absl::Milliseconds(250);

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

}  // namespace

absl::StatusOr<std::unique_ptr<LinesignServer>> LinesignServer::Start(v1::ServerConfig config) {
  std::unique_ptr<LinesignServer> s(new LinesignServer());
  s->config_ = std::move(config);
  const v1::ServerConfig& c = s->config_;
  LINESIGN_ASSIGN_OR_RETURN(s->ca_, issuance::LoadIssuingCa(c.ca().chain_file(), absl::Now()));
  LINESIGN_ASSIGN_OR_RETURN(s->signer_,
                            hsm::OpenSigner(c.hsm(), X509_get0_pubkey(s->ca_.certificate.get()),
                                            static_cast<int>(c.signer().workers())));
  LogInfo("CA key: ", s->signer_->description(), " (", hsm::AlgorithmName(s->signer_->algorithm()), ")");
  auto store = store::SqliteStore::Open(c.store().sqlite().path());
  if (!store.ok()) return store.status();
  s->store_ = *std::move(store);
  LINESIGN_ASSIGN_OR_RETURN(s->builder_, issuance::CertificateBuilder::Create(&s->ca_, s->signer_.get(), c));

  issuance::BatchSigner::Options opts;
  opts.workers = static_cast<int>(c.signer().workers());
  opts.max_batch = static_cast<int>(c.signer().max_batch());
  opts.max_linger = absl::Microseconds(c.signer().max_linger_us());
  opts.queue_size = c.signer().queue_size();
  s->batch_signer_ = issuance::BatchSigner::Create(s->builder_.get(), s->store_.get(), opts);
  LINESIGN_ASSIGN_OR_RETURN(s->authenticator_, auth::Authenticator::Create(c.tls()));
  LINESIGN_ASSIGN_OR_RETURN(s->access_, auth::AccessPolicy::Create(c.access()));
  LINESIGN_ASSIGN_OR_RETURN(s->audit_, audit::AuditLog::Open(c.audit().file()));
  LINESIGN_ASSIGN_OR_RETURN(s->policies_, policy::ProfilePolicies::Create(c));
  LINESIGN_ASSIGN_OR_RETURN(auto credentials, ServerCredentials(c.tls(), c.listen()));
  s->service_ = std::make_unique<service::CaService>(service::CaService::Parts{
      &s->config_, &s->ca_, s->batch_signer_.get(), s->store_.get(), s->authenticator_.get(), s->access_.get(),
      s->audit_.get(), &s->policies_});

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(c.listen(), credentials, &port);
  builder.RegisterService(s->service_.get());
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
    return absl::UnavailableError(absl::StrCat("listen: cannot listen on ", c.listen(),
                                               " (address in use or not local?)"));
  }
  s->address_ = absl::StrCat(c.listen().substr(0, c.listen().rfind(':')), ":", port);
  s->grpc_server_->GetHealthCheckService()->SetServingStatus(true);
  return s;
}

LinesignServer::~LinesignServer() { Shutdown(absl::Seconds(5)); }

void LinesignServer::Shutdown(absl::Duration grace) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  if (grpc_server_ != nullptr) {
    grpc_server_->GetHealthCheckService()->SetServingStatus(false);
    // First our own drain, while every connection stays up: new signing calls are refused, open streams stop
    // reading and finish once each request they read is answered. Only then gRPC's shutdown, which closes a
    // connection as soon as its last call is done: closing it while the station's last answers are still on
    // their way can reset the connection and lose them (the station would have to retry), so a short settle
    // lets them arrive first. Whatever is still running at the deadline is cancelled by gRPC.
    absl::Time deadline = absl::Now() + grace;
    service_->BeginDrain();
    if (service_->WaitUntilIdle(deadline)) {
      absl::SleepFor(std::min(kSettle, std::max(absl::ZeroDuration(), deadline - absl::Now())));
    } else {
      LogWarning("shutdown: calls still in progress after ", absl::FormatDuration(grace), "; cancelling them");
    }
    grpc_server_->Shutdown(absl::ToChronoTime(std::max(absl::Now(), deadline)));
  }
  if (batch_signer_ != nullptr) batch_signer_->Shutdown();
  if (grpc_server_ != nullptr) grpc_server_->Wait();
}

absl::Status LinesignServer::ReloadTrust() { return authenticator_->Reload(config_.tls()); }

absl::Status LinesignServer::ReopenAudit() { return audit_->Reopen(); }

void LinesignServer::Wait() {
  if (grpc_server_ != nullptr) grpc_server_->Wait();
}

}  // namespace linesign
