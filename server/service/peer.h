// PeerCertificates and Authenticate: who is calling, from the verified client certificate of the connection.
// Shared by every service (stations and administrators) so they all learn the caller the same way.
#ifndef LINESIGN_SERVER_SERVICE_PEER_H_
#define LINESIGN_SERVER_SERVICE_PEER_H_

#include <grpcpp/grpcpp.h>

#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/auth/authenticator.h"

namespace linesign::service {

// PeerCertificates returns the caller's client certificate and chain as PEM ("" when none).
std::pair<std::string, std::string> PeerCertificates(const grpc::CallbackServerContext* context);

// CallerCertificates returns the certificate that stands for the caller: the connection's own, or the station
// certificate a trusted proxy forwarded (auth::Authenticator::Resolve says when); Unauthenticated otherwise.
absl::StatusOr<auth::CallerCertificate> CallerCertificates(const auth::Authenticator& authenticator,
                                                           const grpc::CallbackServerContext* context,
                                                           absl::Time now);

// AuthenticateCaller verifies `caller` (from CallerCertificates) at `now` and returns its identity; a forwarded
// certificate may not itself be a trusted proxy's.
absl::StatusOr<std::string> AuthenticateCaller(const auth::Authenticator& authenticator,
                                               const auth::CallerCertificate& caller, absl::Time now);

// Authenticate returns the caller's identity from its verified client certificate (or the one a trusted proxy
// forwarded) at `now`; the authenticator's refusal (Unauthenticated) otherwise.
absl::StatusOr<std::string> Authenticate(const auth::Authenticator& authenticator,
                                         const grpc::CallbackServerContext* context, absl::Time now);

}  // namespace linesign::service

#endif  // LINESIGN_SERVER_SERVICE_PEER_H_
