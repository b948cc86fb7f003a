// Profile: one profile of the configuration, compiled once at start-up into everything issuance needs from it:
// the key and type rules the CSR front applies (csr::CheckCsr), the value rules (lengths, RE2 patterns, SANs
// made from the subject CN), the certificate template (validity, backdate, fixed extensions in DER) and the
// renewal settings. An IssuanceRequest carries a shared_ptr to it, so no layer below the front reads
// ServerConfig or resolves a profile name again.
#ifndef LINESIGN_SERVER_PROFILE_PROFILE_H_
#define LINESIGN_SERVER_PROFILE_PROFILE_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "linesign/v1/config.pb.h"
#include "re2/re2.h"
#include "server/csr/strict_rules.h"

namespace linesign::profile {

// RenewalMode says what the server does when a certificate of the profile nears its end (issue 11 makes it
// configurable): renew it itself, only tell the station, or nothing.
enum class RenewalMode { kManaged, kNotify, kOff };

class Profile {
 public:
  // Compile builds the profile `name` from `config` (validated by config::Validate). InvalidArgument naming the
  // field when a pattern does not compile.
  static absl::StatusOr<std::shared_ptr<const Profile>> Compile(const std::string& name, const v1::Profile& config);

  const std::string& name() const { return name_; }
  // config is the profile as configured: the key rules (key_types, rsa_min_bits/rsa_max_bits) and type rules
  // (subject_attributes, required_subject_attributes, san_types) csr::CheckCsr applies.
  const v1::Profile& config() const { return config_; }

  // CheckValues checks subject values (NUL, length, pattern) and SAN values (length, pattern) against the value
  // rules. It changes nothing. InvalidArgument naming the attribute or SAN, the value and the rule.
  absl::Status CheckValues(const std::vector<csr::SubjectAttribute>& subject, const std::vector<csr::San>& sans) const;

  // MakeSans is the derivation step after CheckValues: with san_from_subject "dns" it replaces `sans` (which must
  // be empty: the CSR may not ask for SANs too) by the DNS name in the subject CN; otherwise it leaves `sans` as
  // it is. InvalidArgument when the CSR carries SANs or the CN is not a DNS name.
  absl::Status MakeSans(const std::vector<csr::SubjectAttribute>& subject, std::vector<csr::San>* sans) const;

  // The certificate template.
  absl::Duration validity() const { return validity_; }
  absl::Duration backdate() const { return backdate_; }
  bool allow_wildcard_dns() const { return config_.allow_wildcard_dns(); }
  // fixed_extensions is basicConstraints, keyUsage, extendedKeyUsage, CRL distribution point and certificate
  // policies as configured: Extension DERs, concatenated, the same for every certificate of the profile.
  const std::string& fixed_extensions() const { return fixed_extensions_; }

  // Renewal: how long before not_after a certificate is due, and what then happens (renew_before_days and
  // renewal; renew_before defaults to 60 days, at most a third of the validity).
  absl::Duration renew_before() const { return renew_before_; }
  RenewalMode renewal_mode() const { return renewal_mode_; }

 private:
  Profile() = default;

  std::string name_;
  v1::Profile config_;
  std::map<std::string, std::unique_ptr<RE2>> subject_patterns_;  // by attribute short name
  std::map<std::string, std::unique_ptr<RE2>> san_patterns_;      // by SAN type name
  absl::Duration validity_;
  absl::Duration backdate_;
  std::string fixed_extensions_;
  absl::Duration renew_before_ = absl::Hours(24 * 60);
  RenewalMode renewal_mode_ = RenewalMode::kManaged;
};

// Profiles holds the compiled profiles of one configuration.
class Profiles {
 public:
  static absl::StatusOr<Profiles> Compile(const v1::ServerConfig& config);

  // Find returns the profile `name`, or NotFound naming it.
  absl::StatusOr<std::shared_ptr<const Profile>> Find(const std::string& name) const;
  // All returns every profile, by name.
  std::vector<std::shared_ptr<const Profile>> All() const;
  // default_profile is the name used when a request names none.
  const std::string& default_profile() const { return default_profile_; }

 private:
  std::map<std::string, std::shared_ptr<const Profile>> by_name_;
  std::string default_profile_;
};

}  // namespace linesign::profile

#endif  // LINESIGN_SERVER_PROFILE_PROFILE_H_
