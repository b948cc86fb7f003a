#include "server/policy/profile_policy.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/der.h"
#include "common/openssl_util.h"
#include "common/status_macros.h"
#include "server/csr/strict_rules.h"

namespace linesign::policy {
namespace {

absl::Status Refuse(absl::string_view msg) { return absl::InvalidArgumentError(msg); }

// SanType maps a recorded SAN ("DNS:x", "IP Address:1.2.3.4", "URI:x", "email:x") to its profile type and value.
bool SplitSan(absl::string_view san, std::string* type, absl::string_view* value) {
  for (const auto& [prefix, t] : {std::pair<absl::string_view, absl::string_view>{"DNS:", "dns"},
                                  {"IP Address:", "ip"}, {"IP:", "ip"}, {"URI:", "uri"}, {"email:", "email"}}) {
    if (absl::StartsWith(san, prefix)) {
      *type = std::string(t);
      *value = san.substr(prefix.size());
      return true;
    }
  }
  return false;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ProfilePolicy>> ProfilePolicy::Create(const std::string& name,
                                                                      const v1::Profile& profile) {
  std::unique_ptr<ProfilePolicy> p(new ProfilePolicy());
  p->name_ = name;
  p->profile_ = profile;
  for (const auto& [attr, pattern] : profile.subject_patterns()) {
    auto re = std::make_unique<RE2>(pattern, RE2::Quiet);
    if (!re->ok()) return Refuse(absl::StrCat("profiles.", name, ".subject_patterns.", attr, ": ", re->error()));
    p->subject_patterns_[attr] = std::move(re);
  }
  for (const auto& [type, pattern] : profile.san_patterns()) {
    auto re = std::make_unique<RE2>(pattern, RE2::Quiet);
    if (!re->ok()) return Refuse(absl::StrCat("profiles.", name, ".san_patterns.", type, ": ", re->error()));
    p->san_patterns_[type] = std::move(re);
  }
  return p;
}

absl::Status ProfilePolicy::Apply(csr::CheckedCsr* csr) const {
  std::string cn;
  for (const csr::SubjectAttribute& a : csr->subject_attributes) {
    const std::string& attr = a.name;
    const std::string& value = a.value;
    if (value.find('\0') != std::string::npos) return Refuse(absl::StrCat("subject ", attr, " contains a NUL byte"));
    if (value.size() > profile_.max_subject_value_bytes()) {
      return Refuse(absl::StrCat("subject ", attr, " of ", value.size(), " bytes exceeds the limit of ",
                                 profile_.max_subject_value_bytes(), " bytes of profile '", name_, "'"));
    }
    if (auto it = subject_patterns_.find(attr); it != subject_patterns_.end() && !RE2::FullMatch(value, *it->second)) {
      return Refuse(absl::StrCat("subject ", attr, " '", value, "' does not match the pattern '",
                                 it->second->pattern(), "' of profile '", name_, "'"));
    }
    if (attr == "CN") cn = value;
  }
  for (const std::string& san : csr->sans) {
    std::string type;
    absl::string_view value;
    if (!SplitSan(san, &type, &value)) return Refuse(absl::StrCat("subjectAltName '", san, "' is not supported"));
    if (value.size() > profile_.max_san_value_bytes()) {
      return Refuse(absl::StrCat("subjectAltName ", type, " of ", value.size(), " bytes exceeds the limit of ",
                                 profile_.max_san_value_bytes(), " bytes of profile '", name_, "'"));
    }
    if (auto it = san_patterns_.find(type);
        it != san_patterns_.end() && !RE2::FullMatch(re2::StringPiece(value.data(), value.size()), *it->second)) {
      return Refuse(absl::StrCat("subjectAltName ", type, " '", value, "' does not match the pattern '",
                                 it->second->pattern(), "' of profile '", name_, "'"));
    }
  }
  if (profile_.san_from_subject() == "dns") {
    if (!csr->san_der.empty()) {
      return Refuse(absl::StrCat("CSR carries subjectAltNames, but profile '", name_,
                                 "' makes the SAN from the subject CN"));
    }
    if (auto st = csr::CheckDnsName(cn, profile_.allow_wildcard_dns()); !st.ok()) {
      return Refuse(absl::StrCat("subject CN ", st.message(), ", which profile '", name_,
                                 "' needs to make the DNS SAN from it"));
    }
    csr->san_der = der::Tlv(der::kSequence, der::Tlv(0x82, cn));  // GeneralNames { dNSName [2] IA5String }
    csr->sans = {absl::StrCat("DNS:", cn)};
  }
  return absl::OkStatus();
}

absl::StatusOr<ProfilePolicies> ProfilePolicies::Create(const v1::ServerConfig& config) {
  ProfilePolicies out;
  for (const auto& [name, profile] : config.profiles()) {
    LINESIGN_ASSIGN_OR_RETURN(std::unique_ptr<ProfilePolicy> p, ProfilePolicy::Create(name, profile));
    out.by_name_[name] = std::move(p);
  }
  return out;
}

const ProfilePolicy* ProfilePolicies::Find(const std::string& profile) const {
  auto it = by_name_.find(profile);
  return it == by_name_.end() ? nullptr : it->second.get();
}

}  // namespace linesign::policy
