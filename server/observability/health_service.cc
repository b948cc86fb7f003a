#include "server/observability/health_service.h"


#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/openssl_util.h"
#include "common/utf8.h"
#include "server/service/grpc_status.h"
#include "server/service/peer.h"

namespace linesign::observability {
namespace {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

constexpr size_t kMaxServiceNameInMessage = 64;

// FinishedWriter is a Watch stream that ends at once with `status`.
class FinishedWriter final : public grpc::ServerWriteReactor<HealthCheckResponse> {
 public:
  explicit FinishedWriter(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

absl::StatusOr<std::string> HealthService::Authenticate(grpc::CallbackServerContext* context,
                                                        const char* rpc) const {
  const absl::Time now = clock_->Now();
  auto identity = service::Authenticate(*authenticator_, context, now);
  if (!identity.ok()) {
    audit::Entry e;
    e.time = now;
    e.rpc = rpc;
    e.peer = context->peer();
    e.outcome = "refused";
    e.code = StatusCodeName(static_cast<int>(identity.status().code()));
    e.reason = std::string(identity.status().message());
    audit_->Record(e);
  }
  return identity;
}

grpc::ServerUnaryReactor* HealthService::Check(grpc::CallbackServerContext* context,
                                               const HealthCheckRequest* request, HealthCheckResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto identity = Authenticate(context, "Health.Check");
  if (!identity.ok()) {
    reactor->Finish(service::ToGrpcStatus(identity.status()));
    return reactor;
  }
  const std::string& service = request->service();
  if (!service.empty() && service != "linesign.v1.CertificateAuthority") {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                 absl::StrCat("unknown service ", QuoteForDisplay(service.substr(0, kMaxServiceNameInMessage)),
                                              " (known: \"\" and linesign.v1.CertificateAuthority)")));
    return reactor;
  }
  response->set_status(serving_.load(std::memory_order_acquire) ? HealthCheckResponse::SERVING
                                                                 : HealthCheckResponse::NOT_SERVING);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<HealthCheckResponse>* HealthService::Watch(grpc::CallbackServerContext* context,
                                                                    const HealthCheckRequest* request) {
  auto identity = Authenticate(context, "Health.Watch");
  if (!identity.ok()) return new FinishedWriter(service::ToGrpcStatus(identity.status()));
  return new FinishedWriter(grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                                         "Health.Watch is not offered by linesign; poll Health.Check"));
}

}  // namespace linesign::observability
