#include "server/service/peer.h"

#include <grpc/grpc_security_constants.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

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

absl::StatusOr<auth::CallerCertificate> CallerCertificates(const auth::Authenticator& authenticator,
                                                           const grpc::CallbackServerContext* context,
                                                           absl::Time now) {
  auto [leaf, chain] = PeerCertificates(context);
  std::optional<absl::string_view> forwarded;
  const auto& metadata = context->client_metadata();
  auto [begin, end] = metadata.equal_range(grpc::string_ref(auth::kForwardedCertificateHeader.data(),
                                                            auth::kForwardedCertificateHeader.size()));
  for (auto it = begin; it != end; ++it) {
    if (forwarded.has_value()) {
      return absl::UnauthenticatedError(
          absl::StrCat("more than one ", auth::kForwardedCertificateHeader, " header in the request"));
    }
    forwarded.emplace(it->second.data(), it->second.size());
  }
  return authenticator.Resolve(leaf, chain, forwarded, now);
}

absl::StatusOr<std::string> AuthenticateCaller(const auth::Authenticator& authenticator,
                                               const auth::CallerCertificate& caller, absl::Time now) {
  LINESIGN_ASSIGN_OR_RETURN(std::string identity, authenticator.Authenticate(caller.leaf_pem, caller.chain_pem, now));
  if (!caller.proxy.empty() && authenticator.IsTrustedProxy(identity)) {
    return absl::UnauthenticatedError(absl::StrCat("proxy '", caller.proxy, "' forwarded the certificate of proxy '",
                                                   identity, "': proxies are not stations"));
  }
  return identity;
}

absl::StatusOr<std::string> Authenticate(const auth::Authenticator& authenticator,
                                         const grpc::CallbackServerContext* context, absl::Time now) {
  LINESIGN_ASSIGN_OR_RETURN(auth::CallerCertificate caller, CallerCertificates(authenticator, context, now));
  return AuthenticateCaller(authenticator, caller, now);
}

}  // namespace linesign::service
