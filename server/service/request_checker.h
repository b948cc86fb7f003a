// RequestChecker turns a SignCsrRequest from an authenticated identity into a SignJob: authorise the identity at
// all, check the text fields, authorise the profile (and the rate limit), resolve the compiled profile, then
// decode and check the CSR against it. CPU only, no I/O: it runs on the gRPC callback thread.
#ifndef LINESIGN_SERVER_SERVICE_REQUEST_CHECKER_H_
#define LINESIGN_SERVER_SERVICE_REQUEST_CHECKER_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "linesign/v1/ca.pb.h"
#include "server/auth/access_policy.h"
#include "server/issuance/batch_signer.h"
#include "server/profile/profile.h"

namespace linesign::service {

// The longest request id a station may send (and that an answer echoes).
inline constexpr size_t kMaxRequestIdBytes = 128;

class RequestChecker {
 public:
  // Everything is borrowed and must outlive the checker.
  RequestChecker(auth::AccessPolicy* access, const profile::Profiles* profiles, const Clock* clock)
      : access_(access), profiles_(profiles), clock_(clock) {}

  // Check validates `request` from `identity` into a job (its `done` is left for the caller). PermissionDenied
  // when no rule matches the identity (before anything of the request is looked at) or its rule does not list
  // the profile; InvalidArgument naming the field for text that is not UTF-8, a bad request id or profile name,
  // or a CSR the profile refuses; ResourceExhausted from the identity's rate limit. `profile` receives the
  // profile name (for the audit) once known.
  absl::StatusOr<issuance::SignJob> Check(const v1::SignCsrRequest& request, const std::string& identity,
                                          std::string* profile) const;

 private:
  auth::AccessPolicy* const access_;           // borrowed
  const profile::Profiles* const profiles_;    // borrowed
  const Clock* const clock_;                   // borrowed
};

}  // namespace linesign::service

#endif  // LINESIGN_SERVER_SERVICE_REQUEST_CHECKER_H_
