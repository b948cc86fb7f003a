// ProfilePolicy: the value rules of a profile, applied after a CSR has been decoded, verified and checked for
// its key, attribute and SAN types (csr::CheckCsr): subject values (length, NUL, RE2 patterns), SAN values
// (length, RE2 patterns) and SANs made from the subject CN. Patterns are compiled once per profile.
#ifndef LINESIGN_SERVER_POLICY_PROFILE_POLICY_H_
#define LINESIGN_SERVER_POLICY_PROFILE_POLICY_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "linesign/v1/config.pb.h"
#include "re2/re2.h"
#include "server/csr/csr.h"

namespace linesign::policy {

class ProfilePolicy {
 public:
  // Create compiles the patterns of `profile` (validated by config::Validate; a bad one is InvalidArgument).
  static absl::StatusOr<std::unique_ptr<ProfilePolicy>> Create(const std::string& name, const v1::Profile& profile);

  // Apply checks `csr` against the value rules and, with san_from_subject, sets its SANs from the subject CN.
  // InvalidArgument naming the offending attribute or SAN and the rule.
  absl::Status Apply(csr::CheckedCsr* csr) const;

 private:
  ProfilePolicy() = default;
  std::string name_;
  v1::Profile profile_;
  std::map<std::string, std::unique_ptr<RE2>> subject_patterns_;  // by attribute short name
  std::map<std::string, std::unique_ptr<RE2>> san_patterns_;      // by SAN type
};

// ProfilePolicies holds one ProfilePolicy per profile of a configuration.
class ProfilePolicies {
 public:
  static absl::StatusOr<ProfilePolicies> Create(const v1::ServerConfig& config);
  // Find returns the policy of `profile`, or null.
  const ProfilePolicy* Find(const std::string& profile) const;

 private:
  std::map<std::string, std::shared_ptr<const ProfilePolicy>> by_name_;
};

}  // namespace linesign::policy

#endif  // LINESIGN_SERVER_POLICY_PROFILE_POLICY_H_
