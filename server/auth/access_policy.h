// AccessPolicy: what an authenticated identity may do (config `access`). A station may sign only under the
// profiles its rule lists, at most at its rule's rate; an administrator may use the lifecycle RPCs; an identity
// no rule matches may do nothing at all. Every denial names the identity and what it asked for.
#ifndef LINESIGN_SERVER_AUTH_ACCESS_POLICY_H_
#define LINESIGN_SERVER_AUTH_ACCESS_POLICY_H_

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "linesign/v1/config.pb.h"
#include "re2/re2.h"

namespace linesign::auth {

class AccessPolicy {
 public:
  // Create compiles the rules. InvalidArgument naming access[i] for a bad pattern (Validate catches it first).
  static absl::StatusOr<std::unique_ptr<AccessPolicy>> Create(
      const google::protobuf::RepeatedPtrField<v1::AccessRule>& rules);

  // AllowSign: may `identity` request a certificate under `profile` now? PermissionDenied, or ResourceExhausted
  // when its rate limit is exceeded (the request then takes no token).
  absl::Status AllowSign(const std::string& identity, const std::string& profile, absl::Time now);
  // AllowAdmin: may `identity` call the administrator RPC `rpc`?
  absl::Status AllowAdmin(const std::string& identity, absl::string_view rpc) const;
  // AllowRead: may `identity` read public information (the CA chain)? Any identity some rule matches.
  absl::Status AllowRead(const std::string& identity, absl::string_view rpc) const;

 private:
  struct Rule {
    v1::AccessRule config;
    std::unique_ptr<RE2> pattern;  // null for an exact identity
  };
  struct Bucket {
    double tokens = 0;
    absl::Time last;
  };
  AccessPolicy() = default;
  // Find returns the rule for `identity`, or null.
  const Rule* Find(const std::string& identity) const;

  absl::flat_hash_map<std::string, size_t> exact_;  // identity -> index in rules_
  std::vector<Rule> rules_;

  std::mutex mu_;
  absl::flat_hash_map<std::string, Bucket> buckets_;  // by identity; guarded by mu_
};

}  // namespace linesign::auth

#endif  // LINESIGN_SERVER_AUTH_ACCESS_POLICY_H_
