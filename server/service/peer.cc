#include "server/service/peer.h"

#include <grpc/grpc_security_constants.h>

namespace linesign::service {

std::pair<std::string, std::string> PeerCertificates(const grpc::CallbackServerContext* context) {
  std::string leaf, chain;
  if (auto auth = context->auth_context(); auth != nullptr) {
    if (auto v = auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME); !v.empty()) {
      leaf.assign(v.front().data(), v.front().size());
    }
    if (auto v = auth->FindPropertyValues(GRPC_X509_PEM_CERT_CHAIN_PROPERTY_NAME); !v.empty()) {
      chain.assign(v.front().data(), v.front().size());
    }
  }
  return {std::move(leaf), std::move(chain)};
}

absl::StatusOr<std::string> Authenticate(const auth::Authenticator& authenticator,
                                         const grpc::CallbackServerContext* context, absl::Time now) {
  auto [leaf, chain] = PeerCertificates(context);
  return authenticator.Authenticate(leaf, chain, now);
}

}  // namespace linesign::service
