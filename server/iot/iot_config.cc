#include "server/iot/iot_config.h"

#include <algorithm>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "server/iot/endpoint.h"

namespace linesign::iot {
namespace {

absl::Status FieldError(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

bool IsName(absl::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    if (!(absl::ascii_isalnum(c) || c == '_' || c == '-')) return false;
  }
  return true;
}

bool IsThingChar(char c) { return absl::ascii_isalnum(c) || c == ':' || c == '_' || c == '-'; }

constexpr absl::string_view kPlaceholders[] = {"{subject.CN}", "{serial}", "{station}"};

// ForEachPart walks a template: literal runs and placeholders. Returns an error for '{' not starting a known
// placeholder.
absl::Status CheckTemplate(absl::string_view field, absl::string_view t) {
  for (size_t i = 0; i < t.size();) {
    if (t[i] == '{') {
      bool known = false;
      for (absl::string_view p : kPlaceholders) {
        if (t.substr(i, p.size()) == p) {
          i += p.size();
          known = true;
          break;
        }
      }
      if (!known) {
        size_t close = t.find('}', i);
        return FieldError(field, absl::StrCat("unknown placeholder ",
                                              absl::CHexEscape(t.substr(i, close == absl::string_view::npos
                                                                               ? absl::string_view::npos
                                                                               : close - i + 1)),
                                              " (known: {subject.CN}, {serial}, {station})"));
      }
      continue;
    }
    if (!IsThingChar(t[i])) {
      return FieldError(field, absl::StrCat("character '", absl::CHexEscape(t.substr(i, 1)),
                                            "' cannot be in a thing name ([a-zA-Z0-9:_-] and placeholders)"));
    }
    ++i;
  }
  return absl::OkStatus();
}

}  // namespace

const std::map<std::string, double>& DefaultRates() {
  static const auto* rates = new std::map<std::string, double>{
      {"GetRegistrationCode", 9},  {"RegisterCACertificate", 9},        {"UpdateCACertificate", 9},
      {"DescribeCACertificate", 9}, {"RegisterCertificate", 9},         {"RegisterCertificateWithoutCA", 9},
      {"UpdateCertificate", 9},    {"DescribeCertificate", 9},          {"ListCertificates", 9},
      {"AttachPolicy", 13},        {"CreateThing", 90},                 {"AttachThingPrincipal", 90},
  };
  return *rates;
}

std::map<std::string, double> EffectiveRates(const v1::IotTarget& target) {
  std::map<std::string, double> rates = DefaultRates();
  for (const auto& [op, rate] : target.rates()) rates[op] = rate;
  return rates;
}

absl::Status ValidateIotConfig(const v1::ServerConfig& c) {
  std::set<std::string> names;
  for (int i = 0; i < c.iot().targets_size(); ++i) {
    const v1::IotTarget& t = c.iot().targets(i);
    const std::string f = absl::StrCat("iot.targets[", i, "]");
    if (!IsName(t.name())) {
      return FieldError(f + ".name", absl::StrCat("'", absl::CHexEscape(t.name()), "' is not 1-64 of [A-Za-z0-9_-]"));
    }
    if (!names.insert(t.name()).second) return FieldError(f + ".name", absl::StrCat("'", t.name(), "' is given twice"));
    for (char ch : t.region()) {
      if (!(absl::ascii_islower(ch) || absl::ascii_isdigit(ch) || ch == '-')) {
        return FieldError(f + ".region", absl::StrCat("'", absl::CHexEscape(t.region()),
                                                      "' is not a region name ([a-z0-9-]+, e.g. us-east-1)"));
      }
    }
    if (!t.endpoint().empty()) {
      absl::StatusOr<Endpoint> e = ParseEndpoint(t.endpoint(), "iot.targets[].endpoint");
      if (!e.ok()) return FieldError(f + ".endpoint", e.status().message());
    }
    if (t.profile().size() > 64 || t.profile().find_first_of("[]\n\r") != std::string::npos) {
      return FieldError(f + ".profile", "must be at most 64 characters with no brackets or line breaks");
    }
    for (const auto& [op, rate] : t.rates()) {
      if (DefaultRates().count(op) == 0) {
        std::vector<std::string> known;
        for (const auto& [name, _] : DefaultRates()) known.push_back(name);
        return FieldError(f + ".rates", absl::StrCat("'", absl::CHexEscape(op), "' is not an AWS IoT operation linesign calls (",
                                                     absl::StrJoin(known, ", "), ")"));
      }
      if (!(rate > 0 && rate <= 10000)) {
        return FieldError(absl::StrCat(f, ".rates.", op), absl::StrCat(rate, " is outside (0, 10000] requests/s"));
      }
    }
  }
  const v1::IotConfig& iot = c.iot();
  // Zero: not set (ApplyDefaults fills it in).
  auto in_range = [](uint32_t v, uint32_t lo, uint32_t hi) { return v == 0 || (v >= lo && v <= hi); };
  if (!in_range(iot.max_in_flight(), 1, 1024)) {
    return FieldError("iot.max_in_flight", absl::StrCat(iot.max_in_flight(), " is outside 1 to 1024"));
  }
  if (!in_range(iot.retry_base_ms(), 10, 600000)) {
    return FieldError("iot.retry_base_ms", absl::StrCat(iot.retry_base_ms(), " is outside 10 to 600000"));
  }
  if (!in_range(iot.retry_max_ms(), std::max<uint32_t>(10, iot.retry_base_ms()), 3600000)) {
    return FieldError("iot.retry_max_ms", absl::StrCat(iot.retry_max_ms(), " is outside retry_base_ms (",
                                                       iot.retry_base_ms(), ") to 3600000"));
  }
  if (!in_range(iot.lease_seconds(), 10, 3600)) {
    return FieldError("iot.lease_seconds", absl::StrCat(iot.lease_seconds(), " is outside 10 to 3600"));
  }
  if (!in_range(iot.poll_interval_ms(), 10, 60000)) {
    return FieldError("iot.poll_interval_ms", absl::StrCat(iot.poll_interval_ms(), " is outside 10 to 60000"));
  }
  for (const auto& [name, p] : c.profiles()) {
    if (!p.has_iot()) continue;
    const std::string f = absl::StrCat("profiles.", name, ".iot");
    const std::string& mode = p.iot().register_();
    if (!mode.empty() && mode != "with_ca" && mode != "without_ca" && mode != "off") {
      return FieldError(f + ".register", absl::StrCat("'", absl::CHexEscape(mode), "' is not with_ca, without_ca or off"));
    }
    const bool registering = mode == "with_ca" || mode == "without_ca";
    if (registering && p.iot().targets().empty()) {
      return FieldError(f + ".targets", absl::StrCat("required when register is ", mode));
    }
    std::set<std::string> seen;
    for (const std::string& target : p.iot().targets()) {
      if (!seen.insert(target).second) return FieldError(f + ".targets", absl::StrCat("'", target, "' is listed twice"));
    }
    LINESIGN_RETURN_IF_ERROR(CheckTemplate(f + ".thing_name", p.iot().thing_name()));
    const std::string& policy = p.iot().policy();
    bool policy_ok = policy.size() <= 128;
    for (char ch : policy) policy_ok = policy_ok && (absl::ascii_isalnum(ch) || absl::string_view("_+=,.@-").find(ch) != absl::string_view::npos);
    if (!policy_ok) {
      return FieldError(f + ".policy", absl::StrCat("'", absl::CHexEscape(policy), "' is not an AWS IoT policy name ([A-Za-z0-9_+=,.@-]{1,128})"));
    }
    if (!registering && (!p.iot().thing_name().empty() || !p.iot().policy().empty())) {
      return FieldError(f + ".register", "thing_name and policy need register: with_ca or without_ca");
    }
  }
  return absl::OkStatus();
}

std::vector<std::string> IotConfigWarnings(const v1::ServerConfig& c) {
  std::set<std::string> names;
  for (const auto& t : c.iot().targets()) names.insert(t.name());
  std::vector<std::string> warnings;
  for (const auto& [name, p] : c.profiles()) {
    for (const std::string& target : p.iot().targets()) {
      if (names.count(target) == 0) {
        warnings.push_back(absl::StrCat("profiles.", name, ".iot.targets: '", target,
                                        "' is not a target in iot.targets; certificates of profile '", name,
                                        "' will fail to register there with that reason"));
      }
    }
  }
  return warnings;
}

absl::StatusOr<std::string> ExpandThingName(absl::string_view t, const ThingNameFields& fields) {
  std::string out;
  for (size_t i = 0; i < t.size();) {
    if (t.substr(i, 12) == "{subject.CN}") {
      out += fields.subject_cn;
      i += 12;
    } else if (t.substr(i, 8) == "{serial}") {
      out += fields.serial;
      i += 8;
    } else if (t.substr(i, 9) == "{station}") {
      out += fields.station;
      i += 9;
    } else {
      out.push_back(t[i++]);
    }
  }
  if (out.empty() || out.size() > 128) {
    return absl::InvalidArgumentError(absl::StrCat("thing name from template '", t, "' has ", out.size(),
                                                   " characters; AWS IoT allows 1 to 128"));
  }
  for (char ch : out) {
    if (!IsThingChar(ch)) {
      return absl::InvalidArgumentError(absl::StrCat("thing name '", absl::CHexEscape(out), "' from template '", t,
                                                     "' holds '", absl::CHexEscape(std::string(1, ch)),
                                                     "', which AWS IoT does not allow ([a-zA-Z0-9:_-])"));
    }
  }
  return out;
}

}  // namespace linesign::iot
