#include "server/profile/profile.h"

#include <openssl/objects.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/der.h"
#include "common/status_macros.h"

namespace linesign::profile {
namespace {

absl::Status Refuse(absl::string_view msg) { return absl::InvalidArgumentError(msg); }

std::string Extension(absl::string_view oid, bool critical, absl::string_view value_der) {
  if (critical) return der::Sequence({der::Oid(oid), der::Boolean(true), der::OctetString(value_der)});
  return der::Sequence({der::Oid(oid), der::OctetString(value_der)});
}

std::string EkuOid(const std::string& name) {
  int nid = OBJ_sn2nid(name.c_str());
  if (nid == NID_undef) return name;  // validated as a dotted OID
  char buf[80];
  OBJ_obj2txt(buf, sizeof(buf), OBJ_nid2obj(nid), 1);
  return buf;
}

// KeyUsageDer encodes the named bits of `usages` (RFC 5280 §4.2.1.3) as a DER BIT STRING: trailing zero bits
// dropped, the unused-bit count in the first octet. Empty means digitalSignature.
std::string KeyUsageDer(const google::protobuf::RepeatedPtrField<std::string>& usages) {
  static const std::map<std::string, int> kBits = {{"digitalSignature", 0}, {"nonRepudiation", 1},
                                                   {"keyEncipherment", 2}, {"dataEncipherment", 3},
                                                   {"keyAgreement", 4}};
  uint8_t value = 0;
  int highest = 0;
  for (const auto& u : usages) {
    auto it = kBits.find(u);
    if (it == kBits.end()) continue;  // refused by config::Validate
    value |= static_cast<uint8_t>(0x80 >> it->second);
    highest = std::max(highest, it->second);
  }
  if (value == 0) value = 0x80;  // digitalSignature
  return der::Tlv(der::kBitString, std::string{static_cast<char>(7 - highest), static_cast<char>(value)});
}

// CrlDistributionPointsDer: one DistributionPoint whose fullName is the URI `url`.
std::string CrlDistributionPointsDer(const std::string& url) {
  std::string uri = der::Tlv(0x86, url);                 // GeneralName uniformResourceIdentifier [6]
  std::string full_name = der::Tlv(0xa0, uri);           // DistributionPointName fullName [0] IMPLICIT GeneralNames
  std::string point_name = der::Tlv(0xa0, full_name);    // distributionPoint [0] (a CHOICE: explicit)
  return der::Sequence({der::Sequence({point_name})});
}

// CertificatePoliciesDer: one PolicyInformation (no qualifiers) per OID.
std::string CertificatePoliciesDer(const google::protobuf::RepeatedPtrField<std::string>& oids) {
  std::string infos;
  for (const auto& oid : oids) infos += der::Sequence({der::Oid(oid)});
  return der::Tlv(der::kSequence, infos);
}

std::string FixedExtensions(const v1::Profile& p) {
  // basicConstraints CA:FALSE (an empty SEQUENCE), critical.
  std::string out = Extension("2.5.29.19", true, der::Sequence({}));
  // keyUsage, critical.
  out += Extension("2.5.29.15", true, KeyUsageDer(p.key_usages()));
  if (!(p.extended_key_usages_size() == 1 && p.extended_key_usages(0) == "none")) {
    std::string oids;
    for (const auto& e : p.extended_key_usages()) oids += der::Oid(EkuOid(e));
    out += Extension("2.5.29.37", false, der::Tlv(der::kSequence, oids));
  }
  if (!p.crl_distribution_point().empty()) {
    out += Extension("2.5.29.31", false, CrlDistributionPointsDer(p.crl_distribution_point()));
  }
  if (!p.policy_oids().empty()) out += Extension("2.5.29.32", false, CertificatePoliciesDer(p.policy_oids()));
  return out;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Profile>> Profile::Compile(const std::string& name, const v1::Profile& config) {
  std::shared_ptr<Profile> p(new Profile());
  p->name_ = name;
  p->config_ = config;
  for (const auto& [attr, pattern] : config.subject_patterns()) {
    auto re = std::make_unique<RE2>(pattern, RE2::Quiet);
    if (!re->ok()) return Refuse(absl::StrCat("profiles.", name, ".subject_patterns.", attr, ": ", re->error()));
    p->subject_patterns_[attr] = std::move(re);
  }
  for (const auto& [type, pattern] : config.san_patterns()) {
    auto re = std::make_unique<RE2>(pattern, RE2::Quiet);
    if (!re->ok()) return Refuse(absl::StrCat("profiles.", name, ".san_patterns.", type, ": ", re->error()));
    p->san_patterns_[type] = std::move(re);
  }
  p->validity_ = absl::Hours(24) * config.validity_days();
  p->backdate_ = absl::Seconds(config.backdate_seconds());
  p->fixed_extensions_ = FixedExtensions(config);
  // Never due from the moment of issue: the default is 60 days, or a third of the validity when that is shorter.
  // (A profile compiled without its defaults, validity 0, keeps the 60 days.)
  p->renew_before_ = config.renew_before_days() != 0 ? absl::Hours(24) * config.renew_before_days()
                     : p->validity_ <= absl::ZeroDuration()
                         ? absl::Hours(24 * 60)
                         : std::min(absl::Hours(24 * 60), std::max(absl::Hours(1), p->validity_ / 3));
  p->renewal_mode_ = config.renewal() == "notify" ? RenewalMode::kNotify
                     : config.renewal() == "off"  ? RenewalMode::kOff
                                                  : RenewalMode::kManaged;
  return std::shared_ptr<const Profile>(std::move(p));
}

absl::Status Profile::CheckValues(const std::vector<csr::SubjectAttribute>& subject,
                                  const std::vector<csr::San>& sans) const {
  for (const csr::SubjectAttribute& a : subject) {
    const std::string& attr = a.name;
    const std::string& value = a.value;
    if (value.find('\0') != std::string::npos) return Refuse(absl::StrCat("subject ", attr, " contains a NUL byte"));
    if (value.size() > config_.max_subject_value_bytes()) {
      return Refuse(absl::StrCat("subject ", attr, " of ", value.size(), " bytes exceeds the limit of ",
                                 config_.max_subject_value_bytes(), " bytes of profile '", name_, "'"));
    }
    if (auto it = subject_patterns_.find(attr); it != subject_patterns_.end() && !RE2::FullMatch(value, *it->second)) {
      return Refuse(absl::StrCat("subject ", attr, " '", value, "' does not match the pattern '",
                                 it->second->pattern(), "' of profile '", name_, "'"));
    }
  }
  for (const csr::San& san : sans) {
    // The rules see a SAN as its text (an IP address as "192.0.2.1"), as configured patterns are written.
    absl::string_view type = csr::SanTypeName(san.type);
    const std::string value = csr::SanValueText(san);
    if (value.size() > config_.max_san_value_bytes()) {
      return Refuse(absl::StrCat("subjectAltName ", type, " of ", value.size(), " bytes exceeds the limit of ",
                                 config_.max_san_value_bytes(), " bytes of profile '", name_, "'"));
    }
    if (auto it = san_patterns_.find(std::string(type));
        it != san_patterns_.end() && !RE2::FullMatch(value, *it->second)) {
      return Refuse(absl::StrCat("subjectAltName ", type, " '", value, "' does not match the pattern '",
                                 it->second->pattern(), "' of profile '", name_, "'"));
    }
  }
  return absl::OkStatus();
}

absl::Status Profile::MakeSans(const std::vector<csr::SubjectAttribute>& subject, std::vector<csr::San>* sans) const {
  if (config_.san_from_subject() != "dns") return absl::OkStatus();
  if (!sans->empty()) {
    return Refuse(absl::StrCat("CSR carries subjectAltNames, but profile '", name_,
                               "' makes the SAN from the subject CN"));
  }
  std::string cn;
  for (const csr::SubjectAttribute& a : subject) {
    if (a.name == "CN") cn = a.value;  // the last CN, as before
  }
  if (auto st = csr::CheckDnsName(cn, config_.allow_wildcard_dns()); !st.ok()) {
    return Refuse(absl::StrCat("subject CN ", st.message(), ", which profile '", name_,
                               "' needs to make the DNS SAN from it"));
  }
  sans->push_back({csr::SanType::kDns, std::move(cn)});
  return absl::OkStatus();
}

absl::StatusOr<Profiles> Profiles::Compile(const v1::ServerConfig& config) {
  Profiles out;
  for (const auto& [name, profile] : config.profiles()) {
    LINESIGN_ASSIGN_OR_RETURN(out.by_name_[name], Profile::Compile(name, profile));
  }
  out.default_profile_ = config.default_profile();
  return out;
}

std::vector<std::shared_ptr<const Profile>> Profiles::All() const {
  std::vector<std::shared_ptr<const Profile>> out;
  for (const auto& [name, p] : by_name_) out.push_back(p);
  return out;
}

absl::StatusOr<std::shared_ptr<const Profile>> Profiles::Find(const std::string& name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return absl::NotFoundError(absl::StrCat("unknown profile '", name, "'"));
  return it->second;
}

}  // namespace linesign::profile
